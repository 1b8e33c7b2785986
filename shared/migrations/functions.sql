-- Pacekeeper's SQL functions: the CURRENT definition of each, in one place.
--
-- This is what `pacekeeper migrate` leaves in a schema at the head revision on TimescaleDB,
-- collected from the Alembic migrations under versions/ that created the functions and
-- later redefined some of them. Those migrations stay frozen history: never edit one to
-- change a function. To change a function, write a new migration that redefines it and
-- update its definition here in the same change.
--
-- tests/shared/test_sql_functions.py enforces that this file equals the migrated schema:
-- it runs this file into an empty scratch schema and compares every function and aggregate
-- with the one of the same name and argument types in a schema migrated to head (body,
-- arguments, result, language, volatility, parallel safety, SET options, comment), and
-- fails when a migration creates a function this file lacks, or the other way round.
--
-- Bodies are byte for byte what pg_proc.prosrc holds, so they keep the indentation of the
-- Python strings they came from, and expanded values where a migration substituted one
-- (the sketch gamma of 0004, the 8-day aggregate horizon of helpers.CAGG_HORIZON).
-- Statements come in dependency order: a `LANGUAGE sql` body is checked when it is
-- created, so what it calls must exist by then (PL/pgSQL bodies resolve names per call).
-- Grants are not repeated here: 0004 grants EXECUTE on kpi_value and kpi_series to the
-- read-only `grafana` role when that role exists.

-- notify_config_change: trigger on kpis, goals, rules, channels and app_settings that
-- NOTIFYs `pacekeeper_config` with {section, op, name}, so running services reload what
-- changed without a restart. Defined in 0003.
CREATE OR REPLACE FUNCTION notify_config_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(
                'pacekeeper_config',
                json_build_object(
                    'section', TG_TABLE_NAME,
                    'op', TG_OP,
                    'name', COALESCE(to_jsonb(NEW), to_jsonb(OLD))
                            ->> CASE WHEN TG_TABLE_NAME = 'app_settings' THEN 'key' ELSE 'name' END
                )::text
            );
            RETURN NULL;
        END $$;

-- pk_minute_ceil: the first minute boundary at or after ts (the minute rule for exact
-- event times). Defined in 0004.
CREATE OR REPLACE FUNCTION pk_minute_ceil(ts timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT to_timestamp(ceil(extract(epoch FROM ts) / 60) * 60)
        $$;

-- pk_timezone: the business time zone (app_settings.timezone, else UTC). Defined in 0004.
CREATE OR REPLACE FUNCTION pk_timezone() RETURNS text LANGUAGE sql STABLE AS $$
            SELECT coalesce((SELECT value FROM app_settings WHERE key = 'timezone'), 'UTC')
        $$;

-- pk_storage: the key a KPI's state is stored under, its active version's (the name for
-- version 1, `name@N` after a changed definition switched over). Defined in 0013.
CREATE OR REPLACE FUNCTION pk_storage(kpi_name text) RETURNS text LANGUAGE sql STABLE AS $$
            SELECT coalesce((SELECT v.storage FROM kpi_versions v
                             WHERE v.kpi = kpi_name AND v.state = 'active'), kpi_name)
        $$;

-- pk_spec: a KPI's definition: its active version's, with the version's storage key as
-- its name (the kpis row for a KPI without versions); unknown names raise
-- undefined_object. Defined in 0004, redefined in 0013 (KPI versions).
CREATE OR REPLACE FUNCTION pk_spec(kpi_name text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
        DECLARE
            found jsonb;
            active jsonb;
        BEGIN
            SELECT k.spec INTO found FROM kpis k WHERE k.name = kpi_name;
            IF found IS NULL THEN
                RAISE EXCEPTION 'unknown KPI %', kpi_name USING ERRCODE = 'undefined_object';
            END IF;
            SELECT v.spec || jsonb_build_object('name', v.storage) INTO active
            FROM kpi_versions v WHERE v.kpi = kpi_name AND v.state = 'active';
            RETURN coalesce(active, found);
        END $$;

-- pk_duration: durations as the config writes them (`7d`, `1h30m`, `1w`), else
-- PostgreSQL's interval syntax. Defined in 0004.
CREATE OR REPLACE FUNCTION pk_duration(spelled text) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN spelled ~ '^([0-9]+(ms|s|m|h|d|w))+$' THEN (
                    SELECT sum(m[1]::bigint * CASE m[2]
                        WHEN 'ms' THEN interval '1 millisecond' WHEN 's' THEN interval '1 second'
                        WHEN 'm' THEN interval '1 minute' WHEN 'h' THEN interval '1 hour'
                        WHEN 'd' THEN interval '1 day' ELSE interval '7 days' END)
                    FROM regexp_matches(spelled, '([0-9]+)(ms|s|m|h|d|w)', 'g') AS m)
                WHEN spelled IN ('0', '0s') THEN interval '0'
                ELSE spelled::interval
            END
        $$;

-- pk_dims_filter: a caller's dims filter checked against the KPI's declared dimensions,
-- values turned into the JSON text the aggregator stored (for `dims @>`). Defined in 0004.
CREATE OR REPLACE FUNCTION pk_dims_filter(spec jsonb, dims jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
        DECLARE
            declared jsonb := coalesce(spec->'dimensions', '[]'::jsonb);
            dim text;
            wanted jsonb;
            out jsonb := '{}'::jsonb;
        BEGIN
            IF dims IS NULL OR jsonb_typeof(dims) = 'null' THEN
                RETURN out;
            END IF;
            IF jsonb_typeof(dims) <> 'object' THEN
                RAISE EXCEPTION 'dims must be a JSON object, got %', dims
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            FOR dim, wanted IN SELECT * FROM jsonb_each(dims) LOOP
                IF NOT declared ? dim THEN
                    RAISE EXCEPTION 'KPI % has no dimension %; it declares %',
                        spec->>'name', dim, declared USING ERRCODE = 'invalid_parameter_value';
                END IF;
                out := out || jsonb_build_object(dim, CASE jsonb_typeof(wanted)
                    WHEN 'string' THEN wanted WHEN 'null' THEN wanted
                    ELSE to_jsonb(wanted #>> '{}') END);
            END LOOP;
            RETURN out;
        END $$;

-- pk_sketch_merge: two percentile sketches ({bin: count}) merged by adding counts per bin;
-- NULL is the empty sketch. Defined in 0004.
CREATE OR REPLACE FUNCTION pk_sketch_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE (
                SELECT coalesce(jsonb_object_agg(bin, n), '{}'::jsonb) FROM (
                    SELECT bin, sum(n::bigint) AS n FROM (
                        SELECT key, value FROM jsonb_each_text(a)
                        UNION ALL
                        SELECT key, value FROM jsonb_each_text(b)
                    ) AS bins(bin, n) GROUP BY bin
                ) AS merged) END
        $$;

-- pk_sketch_agg: the aggregate of pk_sketch_merge over rows (one sketch for a window).
-- Defined in 0004.
CREATE OR REPLACE AGGREGATE pk_sketch_agg(jsonb) (
    SFUNC = pk_sketch_merge, STYPE = jsonb,
    COMBINEFUNC = pk_sketch_merge, PARALLEL = SAFE
);

-- pk_sketch_value: the value a DDSketch bin key stands for, with gamma = 1.01 / 0.99
-- (relative accuracy 1 %; the same gamma as services/aggregator/sketch.py). Defined in 0004.
CREATE OR REPLACE FUNCTION pk_sketch_value(bin text) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN bin = 'z' THEN 0::float8
                WHEN left(bin, 1) = 'n'
                    THEN -2 * power(1.02020202020202::float8, substr(bin, 2)::int)
                         / (1.02020202020202::float8 + 1)
                ELSE 2 * power(1.02020202020202::float8, bin::int) / (1.02020202020202::float8 + 1)
            END
        $$;

-- pk_sketch_quantile: the value of rank floor(q*(n-1)) in a sketch, walking bins in value
-- order as sketch.quantile does in Python. Defined in 0004.
CREATE OR REPLACE FUNCTION pk_sketch_quantile(sketch jsonb, q double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT v FROM (
                SELECT v, sum(n) OVER (ORDER BY v) AS running, sum(n) OVER () AS total
                FROM (SELECT pk_sketch_value(key) AS v, value::bigint AS n
                      FROM jsonb_each_text(sketch)) AS bins
            ) AS ranked
            WHERE running::float8 > q * (total - 1)::float8
            ORDER BY v LIMIT 1
        $$;

-- pk_whole_from: the first boundary of a `width`-second bucket at or after lo.
-- Defined in 0010.
CREATE OR REPLACE FUNCTION pk_whole_from(lo timestamptz, width integer) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT to_timestamp(ceil(extract(epoch FROM lo) / width) * width)
        $$;

-- pk_whole_to: the last boundary of a `width`-second bucket at or before hi and before the
-- 8-day horizon: buckets before it are final, and answered by the continuous aggregates.
-- Defined in 0010.
CREATE OR REPLACE FUNCTION pk_whole_to(hi timestamptz, width integer) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT to_timestamp(floor(extract(epoch FROM least(
                hi, now() - interval '8 days')) / width) * width)
        $$;

-- pk_ranges: how pk_points splits [lo, hi): minutes at the edges, whole final hours around
-- the whole final days, the days; as columns of a function scan, so conditions on them
-- reach every chunk's index. Defined in 0010.
CREATE OR REPLACE FUNCTION pk_ranges(lo timestamptz, hi timestamptz)
RETURNS TABLE(minutes_to timestamptz, minutes_from timestamptz,
              hours_from timestamptz, hours_to timestamptz,
              late_hours_from timestamptz, late_hours_to timestamptz,
              days_from timestamptz, days_to timestamptz)
LANGUAGE plpgsql STABLE AS $$
        DECLARE
            h1 timestamptz := pk_whole_from(lo, 3600);
            h2 timestamptz := pk_whole_to(hi, 3600);
            d1 timestamptz := pk_whole_from(lo, 86400);
            d2 timestamptz := pk_whole_to(hi, 86400);
        BEGIN
            IF h1 >= h2 THEN  -- no whole final hour: every minute of the window
                RETURN QUERY SELECT hi, hi, h1, h1, h1, h1, d1, d1;
            ELSIF d1 >= d2 THEN  -- whole hours, no whole final day
                RETURN QUERY SELECT h1, h2, h1, h2, h2, h2, d1, d1;
            ELSE  -- minutes at the edges, hours around the days, the days
                RETURN QUERY SELECT h1, h2, h1, d1, d2, h2, d1, d2;
            END IF;
        END $$;

-- pk_points: the mergeable sums (count, sum, min, max) of one KPI and dims filter over
-- [lo, hi), from kpi_points, kpi_points_hourly and kpi_points_daily over pk_ranges.
-- Last defined in 0010 (created in 0004, which also has a plain-PostgreSQL variant reading
-- kpi_points only; redefined in 0007; 0009 recreates 0004's TimescaleDB one on a database
-- converted in place, before 0007 and 0010 redefine it).
CREATE OR REPLACE FUNCTION pk_points(kpi_name text, lo timestamptz, hi timestamptz, f jsonb)
RETURNS TABLE(c numeric, s double precision, mn double precision, mx double precision)
LANGUAGE sql STABLE AS $$
            SELECT sum(parts.c), sum(parts.s), min(parts.mn), max(parts.mx)
            FROM pk_ranges(lo, hi) r CROSS JOIN LATERAL (
                SELECT p.count AS c, p.sum AS s, p.min AS mn, p.max AS mx
                FROM kpi_points p
                WHERE p.kpi = kpi_name AND p.dims @> f
                  AND p.bucket >= lo AND p.bucket < r.minutes_to
                UNION ALL
                SELECT p.count, p.sum, p.min, p.max
                FROM kpi_points p
                WHERE p.kpi = kpi_name AND p.dims @> f
                  AND p.bucket >= r.minutes_from AND p.bucket < hi
                UNION ALL
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h
                WHERE h.kpi = kpi_name AND h.dims @> f
                  AND h.bucket >= r.hours_from AND h.bucket < r.hours_to
                UNION ALL
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h
                WHERE h.kpi = kpi_name AND h.dims @> f
                  AND h.bucket >= r.late_hours_from AND h.bucket < r.late_hours_to
                UNION ALL
                SELECT d.count, d.sum, d.min, d.max
                FROM kpi_points_daily d
                WHERE d.kpi = kpi_name AND d.dims @> f
                  AND d.bucket >= r.days_from AND d.bucket < r.days_to
            ) parts
        $$;

-- pk_grid: the steps of a series over [t_from, t_to): label (step start) and the clipped
-- [lo, hi) of each; calendar steps align in time zone tz. Defined in 0004.
CREATE OR REPLACE FUNCTION pk_grid(t_from timestamptz, t_to timestamptz, step interval, tz text)
RETURNS TABLE(label timestamptz, lo timestamptz, hi timestamptz)
LANGUAGE plpgsql STABLE AS $$
        DECLARE
            m integer := (extract(year FROM step) * 12 + extract(month FROM step))::integer;
            d integer := extract(day FROM step)::integer;
            us numeric := extract(epoch FROM step - make_interval(months => m, days => d));
            unit text;
            start_local timestamp;
            cur timestamptz;
            nxt timestamptz;
            k integer := 0;
        BEGIN
            IF step IS NULL OR m < 0 OR d < 0 OR us < 0 OR (m = 0 AND d = 0 AND us = 0) THEN
                RAISE EXCEPTION 'step must be a positive interval, got %', step
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            IF t_from IS NULL OR t_to IS NULL OR t_from >= t_to THEN
                RETURN;
            END IF;
            IF m > 0 OR d > 0 THEN
                -- Calendar steps: months/quarters/years, weeks (Mondays) or days, aligned in
                -- the business time zone; local arithmetic keeps DST days 23 or 25 hours.
                unit := CASE
                    WHEN m > 0 AND m % 12 = 0 THEN 'year'
                    WHEN m > 0 AND m % 3 = 0 THEN 'quarter'
                    WHEN m > 0 THEN 'month'
                    WHEN d % 7 = 0 AND us = 0 THEN 'week'
                    ELSE 'day' END;
                start_local := date_trunc(unit, t_from AT TIME ZONE tz);
                cur := start_local AT TIME ZONE tz;
                WHILE cur < t_to LOOP
                    k := k + 1;
                    nxt := (start_local + step * k) AT TIME ZONE tz;
                    label := cur; lo := greatest(cur, t_from); hi := least(nxt, t_to);
                    RETURN NEXT;
                    cur := nxt;
                    IF k > 100000 THEN
                        RAISE EXCEPTION 'more than 100000 points; use a longer step'
                            USING ERRCODE = 'program_limit_exceeded';
                    END IF;
                END LOOP;
            ELSE
                -- Shorter steps: bins counted from a local midnight, so 1 h means local hours.
                cur := date_bin(step, t_from, '2000-01-03 00:00'::timestamp AT TIME ZONE tz);
                WHILE cur < t_to LOOP
                    k := k + 1;
                    nxt := cur + step;
                    label := cur; lo := greatest(cur, t_from); hi := least(nxt, t_to);
                    RETURN NEXT;
                    cur := nxt;
                    IF k > 100000 THEN
                        RAISE EXCEPTION 'more than 100000 points; use a longer step'
                            USING ERRCODE = 'program_limit_exceeded';
                    END IF;
                END LOOP;
            END IF;
        END $$;

-- pk_value: a KPI's value over [t_from, t_to) for every kind (ratios and formulas
-- recursively, at most 16 deep). Defined in 0004.
CREATE OR REPLACE FUNCTION pk_value(spec jsonb, t_from timestamptz, t_to timestamptz,
                                    dims jsonb, depth integer)
RETURNS double precision LANGUAGE plpgsql STABLE AS $$
        DECLARE
            kpi_name text := spec->>'name';
            kind text := spec->>'kind';
            f jsonb;
            lo timestamptz := pk_minute_ceil(t_from);  -- exact event times: minute rule
            hi timestamptz := pk_minute_ceil(t_to);
            result double precision;
            num double precision;
            den double precision;
            nsteps integer;
            within_iv interval;
            tz text;
            nday integer;
        BEGIN
            IF depth > 16 THEN
                RAISE EXCEPTION 'KPI % nests more than 16 deep (a cycle?)', kpi_name
                    USING ERRCODE = 'program_limit_exceeded';
            END IF;
            IF kind = 'ratio' THEN
                -- A ratio of the two totals over the same window, never an average of ratios.
                num := pk_value(pk_spec(spec->>'numerator'), t_from, t_to, dims, depth + 1);
                den := pk_value(pk_spec(spec->>'denominator'), t_from, t_to, dims, depth + 1);
                RETURN num / NULLIF(den, 0);
            ELSIF kind = 'formula' THEN
                RETURN pk_formula(spec, t_from, t_to, dims, depth);
            END IF;
            f := pk_dims_filter(spec, dims);
            CASE kind
            WHEN 'count' THEN
                SELECT coalesce(p.c, 0)::float8 INTO result
                FROM pk_points(kpi_name, t_from, t_to, f) p;
            WHEN 'sum' THEN
                SELECT coalesce(p.s, 0) INTO result FROM pk_points(kpi_name, t_from, t_to, f) p;
            WHEN 'avg' THEN
                SELECT p.s / NULLIF(p.c, 0)::float8 INTO result
                FROM pk_points(kpi_name, t_from, t_to, f) p;
            WHEN 'min' THEN
                SELECT p.mn INTO result FROM pk_points(kpi_name, t_from, t_to, f) p;
            WHEN 'max' THEN
                SELECT p.mx INTO result FROM pk_points(kpi_name, t_from, t_to, f) p;
            WHEN 'last' THEN
                -- The latest last_time lies in the latest minute; ties go to the larger value.
                SELECT k.last_value INTO result FROM kpi_points k
                WHERE k.kpi = kpi_name AND k.bucket >= t_from AND k.bucket < t_to
                  AND k.dims @> f AND k.last_time IS NOT NULL
                ORDER BY k.bucket DESC, k.last_time DESC, k.last_value DESC LIMIT 1;
            WHEN 'percentile' THEN
                SELECT pk_sketch_quantile(pk_sketch_agg(k.sketch), (spec->>'q')::float8)
                INTO result FROM kpi_points k
                WHERE k.kpi = kpi_name AND k.bucket >= t_from AND k.bucket < t_to
                  AND k.dims @> f;
            WHEN 'count_distinct' THEN
                SELECT count(DISTINCT v.value)::float8 INTO result FROM kpi_distinct v
                WHERE v.kpi = kpi_name AND v.bucket >= t_from AND v.bucket < t_to
                  AND v.dims @> f;
            WHEN 'funnel' THEN
                -- Actors with a first-step event in the window; converted when every later
                -- step follows in order (strictly later) within `within` of that event.
                -- Taking the earliest next step at each stage is optimal, so one chain per
                -- start suffices.
                nsteps := jsonb_array_length(spec->'steps');
                within_iv := pk_duration(spec->>'within');
                WITH RECURSIVE chain(actor, t0, t, n) AS (
                    SELECT s.actor, s.time, s.time, 0 FROM kpi_funnel_steps s
                    WHERE s.kpi = kpi_name AND s.step = 0 AND s.time >= lo AND s.time < hi
                      AND s.dims @> f
                    UNION ALL
                    SELECT c.actor, c.t0, nxt.time, c.n + 1 FROM chain c
                    CROSS JOIN LATERAL (
                        SELECT s.time FROM kpi_funnel_steps s
                        WHERE s.kpi = kpi_name AND s.actor = c.actor AND s.step = c.n + 1
                          AND s.time > c.t AND s.time <= c.t0 + within_iv
                        ORDER BY s.time LIMIT 1) nxt
                    WHERE c.n + 1 < nsteps
                )
                SELECT (count(DISTINCT c.actor) FILTER (WHERE c.n = nsteps - 1))::float8
                       / NULLIF(count(DISTINCT c.actor) FILTER (WHERE c.n = 0), 0)
                INTO result FROM chain c;
            WHEN 'retention' THEN
                -- Of the actors whose first cohort event is in the window, the share with a
                -- return event on business day N after it.
                tz := pk_timezone();
                nday := (spec->>'day')::integer;
                SELECT (count(*) FILTER (WHERE EXISTS (
                            SELECT 1 FROM kpi_retention_returns r
                            WHERE r.kpi = kpi_name AND r.actor = c.actor
                              AND r.slot >= (((c.first_time AT TIME ZONE tz)::date + nday)
                                             ::timestamp AT TIME ZONE tz)
                              AND r.slot < (((c.first_time AT TIME ZONE tz)::date + nday + 1)
                                            ::timestamp AT TIME ZONE tz))))::float8
                       / NULLIF(count(*), 0)
                INTO result FROM kpi_retention_cohorts c
                WHERE c.kpi = kpi_name AND c.first_time >= lo AND c.first_time < hi
                  AND c.dims @> f;
            ELSE
                RAISE EXCEPTION 'KPI % has unknown kind %', kpi_name, kind;
            END CASE;
            RETURN result;
        END $$;

-- pk_formula: a formula KPI's value; every token is checked and KPI names become numeric
-- literals before the expression is evaluated, so it can only ever run arithmetic.
-- Defined in 0004.
CREATE OR REPLACE FUNCTION pk_formula(spec jsonb, t_from timestamptz, t_to timestamptz,
                                      dims jsonb, depth integer)
RETURNS double precision LANGUAGE plpgsql STABLE AS $$
        DECLARE
            tok text[];
            expr text := '';
            v double precision;
        BEGIN
            FOR tok IN SELECT regexp_matches(spec->>'expression',
                '([A-Za-z_][A-Za-z0-9_]*)|((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)|([-+*/()])|(\s+)|(.)',
                'g')
            LOOP
                IF tok[1] IS NOT NULL THEN
                    v := pk_value(pk_spec(tok[1]), t_from, t_to, dims, depth + 1);
                    expr := expr || CASE WHEN v IS NULL THEN ' (NULL::float8) '
                                    ELSE ' (' || quote_literal(v::text) || '::float8) ' END;
                ELSIF tok[2] IS NOT NULL THEN
                    expr := expr || ' (' || quote_literal(tok[2]) || '::float8) ';
                ELSIF tok[3] IS NOT NULL THEN
                    expr := expr || ' ' || tok[3] || ' ';  -- spaced: "--" is never a comment
                ELSIF tok[4] IS NULL THEN
                    RAISE EXCEPTION 'KPI %: unexpected % in formula', spec->>'name', tok[5];
                END IF;
            END LOOP;
            BEGIN
                EXECUTE 'SELECT (' || expr || ')::float8' INTO v;
            EXCEPTION WHEN division_by_zero OR numeric_value_out_of_range THEN
                v := NULL;
            END;
            RETURN v;
        END $$;

-- pk_series: pk_value per step of pk_grid (one pk_points scan per step for the simple
-- kinds). Defined in 0004.
CREATE OR REPLACE FUNCTION pk_series(spec jsonb, t_from timestamptz, t_to timestamptz,
                                     step interval, dims jsonb)
RETURNS TABLE(label timestamptz, val double precision)
LANGUAGE plpgsql STABLE AS $$
        DECLARE
            kind text := spec->>'kind';
            f jsonb;
        BEGIN
            IF kind IN ('count', 'sum', 'avg', 'min', 'max') THEN
                -- One index range scan per bucket instead of one function call per bucket.
                f := pk_dims_filter(spec, dims);
                RETURN QUERY
                SELECT g.label, CASE kind
                    WHEN 'count' THEN coalesce(p.c, 0)::float8
                    WHEN 'sum' THEN coalesce(p.s, 0)
                    WHEN 'avg' THEN p.s / NULLIF(p.c, 0)::float8
                    WHEN 'min' THEN p.mn
                    ELSE p.mx END
                FROM pk_grid(t_from, t_to, step, pk_timezone()) g
                CROSS JOIN LATERAL pk_points(spec->>'name', g.lo, g.hi, f) p
                ORDER BY g.label;
            ELSE
                RETURN QUERY
                SELECT g.label, pk_value(spec, g.lo, g.hi, dims, 0)
                FROM pk_grid(t_from, t_to, step, pk_timezone()) g
                ORDER BY g.label;
            END IF;
        END $$;

-- kpi_value: the public read of a KPI's value over a window, by name (Grafana, alerts).
-- Defined in 0004; 0010 set jit = off.
CREATE OR REPLACE FUNCTION kpi_value(kpi text, t_from timestamptz, t_to timestamptz,
                                     dims jsonb DEFAULT NULL)
RETURNS double precision LANGUAGE sql STABLE SET jit = off AS $$
            SELECT pk_value(pk_spec(kpi), t_from, t_to, dims, 0)
        $$;

COMMENT ON FUNCTION kpi_value(text, timestamptz, timestamptz, jsonb) IS
'The value of a KPI over [t_from, t_to): an event counts when the minute it falls in starts inside the window. 0 for counts and sums without data, NULL where no value exists.';

-- kpi_series: the public read of a KPI as a time series, by name (Grafana panels).
-- Defined in 0004; 0010 set jit = off.
CREATE OR REPLACE FUNCTION kpi_series(kpi text, t_from timestamptz, t_to timestamptz,
                                      step interval, dims jsonb DEFAULT NULL)
RETURNS TABLE("time" timestamptz, value double precision)
LANGUAGE sql STABLE SET jit = off AS $$
            SELECT s.label, s.val FROM pk_series(pk_spec(kpi), t_from, t_to, step, dims) s
        $$;

COMMENT ON FUNCTION kpi_series(text, timestamptz, timestamptz, interval, jsonb) IS
'kpi_value per step over [t_from, t_to); day, week and month steps align to the business time zone (app_settings.timezone); time is the start of each step.';
