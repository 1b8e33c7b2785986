"""aggregator: consumer offsets and watermarks, KPI state beyond kpi_points, and the KPI math
(`kpi_value`, `kpi_series`) as SQL functions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import (
    CAGG_HORIZON,
    grant_execute,
    grant_read_only,
    has_timescaledb,
    retire_policies,
)

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Percentile sketches: DDSketch bins with relative accuracy alpha = 1 %,
# gamma = (1 + alpha) / (1 - alpha).
# services/aggregator/sketch.py computes the bin keys with the same gamma (a unit test checks).
SKETCH_GAMMA = repr((1 + 0.01) / (1 - 0.01))

STATE_TABLES = (
    "consumer_offsets",
    "kpi_distinct",
    "kpi_funnel_steps",
    "kpi_retention_cohorts",
    "kpi_retention_returns",
    "kpi_dimension_values",
)


def _tables() -> None:
    # Where each partition's consumer stands, written in the same transaction as the KPI
    # state its events produced: the basis of exactly-once. The watermark columns travel
    # with the offset so a partition that moves to another process keeps its watermark.
    op.execute(
        """
        CREATE TABLE consumer_offsets (
            group_id        text        NOT NULL,
            topic           text        NOT NULL,
            partition       integer     NOT NULL,
            next_offset     bigint      NOT NULL,
            max_event_time  timestamptz,
            max_received_at timestamptz,
            watermark       timestamptz,
            updated_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (group_id, topic, partition)
        )
        """
    )
    # Minutes before `watermark` are complete on every partition that has seen data.
    op.execute(
        """
        CREATE VIEW kpi_watermarks AS
        SELECT group_id, topic, min(watermark) AS watermark, count(*) AS partitions,
               max(updated_at) AS updated_at
        FROM consumer_offsets WHERE watermark IS NOT NULL
        GROUP BY group_id, topic
        """
    )
    # Exact distinct counts: each value once per (kpi, dims, minute); any window counts
    # DISTINCT value over its minutes.
    op.execute(
        """
        CREATE TABLE kpi_distinct (
            kpi    text        NOT NULL,
            bucket timestamptz NOT NULL,
            dims   jsonb       NOT NULL DEFAULT '{}'::jsonb,
            value  text        NOT NULL,
            PRIMARY KEY (kpi, bucket, dims, value),
            CHECK (bucket = date_trunc('minute', bucket))
        )
        """
    )
    # Funnels: the time of every step event per actor (dims only on step 0, whose event
    # decides the segment). Conversion is worked out at query time, so late events and any
    # window give the exact answer.
    op.execute(
        """
        CREATE TABLE kpi_funnel_steps (
            kpi   text        NOT NULL,
            actor text        NOT NULL,
            step  smallint    NOT NULL,
            time  timestamptz NOT NULL,
            dims  jsonb       NOT NULL DEFAULT '{}'::jsonb,
            PRIMARY KEY (kpi, actor, step, time, dims)
        )
        """
    )
    op.execute("CREATE INDEX kpi_funnel_steps_start ON kpi_funnel_steps (kpi, step, time)")
    # Retention: each actor's first cohort event (ties broken by source/id in byte order)…
    op.execute(
        """
        CREATE TABLE kpi_retention_cohorts (
            kpi        text        NOT NULL,
            actor      text        NOT NULL,
            first_time timestamptz NOT NULL,
            first_key  text COLLATE "C" NOT NULL,
            dims       jsonb       NOT NULL DEFAULT '{}'::jsonb,
            PRIMARY KEY (kpi, actor)
        )
        """
    )
    op.execute("CREATE INDEX kpi_retention_cohorts_time ON kpi_retention_cohorts (kpi, first_time)")
    # …and the 15-minute slots in which they came back. Every time zone's midnight is on a
    # 15-minute boundary, so "day N" is exact in any business time zone, even after the
    # zone is changed.
    op.execute(
        """
        CREATE TABLE kpi_retention_returns (
            kpi   text        NOT NULL,
            actor text        NOT NULL,
            slot  timestamptz NOT NULL,
            PRIMARY KEY (kpi, actor, slot)
        )
        """
    )
    # Cardinality guard: the values admitted per (kpi, dimension); values past the limit
    # are folded into __other__ by the aggregator.
    op.execute(
        """
        CREATE TABLE kpi_dimension_values (
            kpi        text        NOT NULL,
            dimension  text        NOT NULL,
            value      text        NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (kpi, dimension, value)
        )
        """
    )


def _helpers() -> None:
    op.execute(
        """
        CREATE FUNCTION pk_minute_ceil(ts timestamptz) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT to_timestamp(ceil(extract(epoch FROM ts) / 60) * 60)
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION pk_timezone() RETURNS text LANGUAGE sql STABLE AS $$
            SELECT coalesce((SELECT value FROM app_settings WHERE key = 'timezone'), 'UTC')
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION pk_spec(kpi_name text) RETURNS jsonb LANGUAGE plpgsql STABLE AS $$
        DECLARE
            found jsonb;
        BEGIN
            SELECT k.spec INTO found FROM kpis k WHERE k.name = kpi_name;
            IF found IS NULL THEN
                RAISE EXCEPTION 'unknown KPI %', kpi_name USING ERRCODE = 'undefined_object';
            END IF;
            RETURN found;
        END $$
        """
    )
    # Durations as the config writes them (`7d`, `1h30m`, `1w`), else PostgreSQL's syntax.
    op.execute(
        r"""
        CREATE FUNCTION pk_duration(spelled text) RETURNS interval
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
        $$
        """
    )
    # A dims filter names declared dimensions; values compare as the text the aggregator
    # stored (numbers and booleans as their JSON text).
    op.execute(
        """
        CREATE FUNCTION pk_dims_filter(spec jsonb, dims jsonb) RETURNS jsonb
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
        END $$
        """
    )


def _sketch() -> None:
    op.execute(
        """
        CREATE FUNCTION pk_sketch_merge(a jsonb, b jsonb) RETURNS jsonb
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN a IS NULL THEN b WHEN b IS NULL THEN a ELSE (
                SELECT coalesce(jsonb_object_agg(bin, n), '{}'::jsonb) FROM (
                    SELECT bin, sum(n::bigint) AS n FROM (
                        SELECT key, value FROM jsonb_each_text(a)
                        UNION ALL
                        SELECT key, value FROM jsonb_each_text(b)
                    ) AS bins(bin, n) GROUP BY bin
                ) AS merged) END
        $$
        """
    )
    op.execute(
        """
        CREATE AGGREGATE pk_sketch_agg(jsonb) (
            SFUNC = pk_sketch_merge, STYPE = jsonb,
            COMBINEFUNC = pk_sketch_merge, PARALLEL = SAFE
        )
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION pk_sketch_value(bin text) RETURNS double precision
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE
                WHEN bin = 'z' THEN 0::float8
                WHEN left(bin, 1) = 'n'
                    THEN -2 * power({SKETCH_GAMMA}::float8, substr(bin, 2)::int)
                         / ({SKETCH_GAMMA}::float8 + 1)
                ELSE 2 * power({SKETCH_GAMMA}::float8, bin::int) / ({SKETCH_GAMMA}::float8 + 1)
            END
        $$
        """
    )
    # The value of rank floor(q*(n-1)): the first bin, in value order, whose running count
    # exceeds q*(n-1) — the same walk as sketch.quantile in Python.
    op.execute(
        """
        CREATE FUNCTION pk_sketch_quantile(sketch jsonb, q double precision)
        RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT v FROM (
                SELECT v, sum(n) OVER (ORDER BY v) AS running, sum(n) OVER () AS total
                FROM (SELECT pk_sketch_value(key) AS v, value::bigint AS n
                      FROM jsonb_each_text(sketch)) AS bins
            ) AS ranked
            WHERE running::float8 > q * (total - 1)::float8
            ORDER BY v LIMIT 1
        $$
        """
    )


def points(timescale: bool) -> None:
    """pk_points: the mergeable sums of kpi_points over [lo, hi) for one KPI and dims filter."""
    if not timescale:
        op.execute(
            """
            CREATE FUNCTION pk_points(kpi_name text, lo timestamptz, hi timestamptz, f jsonb)
            RETURNS TABLE(c numeric, s double precision, mn double precision,
                          mx double precision)
            LANGUAGE sql STABLE AS $$
                SELECT sum(p.count), sum(p.sum), min(p.min), max(p.max)
                FROM kpi_points p
                WHERE p.kpi = kpi_name AND p.bucket >= lo AND p.bucket < hi AND p.dims @> f
            $$
            """
        )
        return
    op.execute(
        """
        CREATE MATERIALIZED VIEW kpi_points_hourly
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT kpi, dims, time_bucket(interval '1 hour', bucket) AS bucket,
               sum(count) AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max
        FROM kpi_points
        GROUP BY kpi, dims, time_bucket(interval '1 hour', bucket)
        WITH NO DATA
        """
    )
    op.execute(
        "SELECT add_continuous_aggregate_policy('kpi_points_hourly',"
        " start_offset => interval '10 days', end_offset => interval '1 hour',"
        " schedule_interval => interval '1 hour')"
    )
    # Whole UTC hours older than the horizon come from the hourly aggregate, the ragged
    # edges and everything recent from the minutes.
    op.execute(
        f"""
        CREATE FUNCTION pk_points(kpi_name text, lo timestamptz, hi timestamptz, f jsonb)
        RETURNS TABLE(c numeric, s double precision, mn double precision,
                      mx double precision)
        LANGUAGE sql STABLE AS $$
            WITH edges AS (
                SELECT to_timestamp(ceil(extract(epoch FROM lo) / 3600) * 3600) AS h1,
                       to_timestamp(floor(extract(epoch FROM least(
                           hi, now() - interval '{CAGG_HORIZON}')) / 3600) * 3600) AS h2
            ), parts AS (
                SELECT p.count AS c, p.sum AS s, p.min AS mn, p.max AS mx
                FROM kpi_points p, edges e
                WHERE p.kpi = kpi_name AND p.bucket >= lo AND p.bucket < hi AND p.dims @> f
                  AND NOT (e.h1 < e.h2 AND p.bucket >= e.h1 AND p.bucket < e.h2)
                UNION ALL
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h, edges e
                WHERE e.h1 < e.h2 AND h.kpi = kpi_name AND h.bucket >= e.h1
                  AND h.bucket < e.h2 AND h.dims @> f
            )
            SELECT sum(c), sum(s), min(mn), max(mx) FROM parts
        $$
        """
    )
    grant_read_only("kpi_points_hourly")


def _math() -> None:
    op.execute(
        """
        CREATE FUNCTION pk_grid(t_from timestamptz, t_to timestamptz, step interval, tz text)
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
        END $$
        """
    )
    op.execute(
        r"""
        CREATE FUNCTION pk_value(spec jsonb, t_from timestamptz, t_to timestamptz,
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
        END $$
        """
    )
    # Formulas: every token is checked and KPI names become numeric literals before the
    # expression is evaluated, so the stored text can never run anything but arithmetic.
    op.execute(
        r"""
        CREATE FUNCTION pk_formula(spec jsonb, t_from timestamptz, t_to timestamptz,
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
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION pk_series(spec jsonb, t_from timestamptz, t_to timestamptz,
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
        END $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION kpi_value(kpi text, t_from timestamptz, t_to timestamptz,
                                  dims jsonb DEFAULT NULL)
        RETURNS double precision LANGUAGE sql STABLE AS $$
            SELECT pk_value(pk_spec(kpi), t_from, t_to, dims, 0)
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION kpi_series(kpi text, t_from timestamptz, t_to timestamptz,
                                   step interval, dims jsonb DEFAULT NULL)
        RETURNS TABLE("time" timestamptz, value double precision)
        LANGUAGE sql STABLE AS $$
            SELECT s.label, s.val FROM pk_series(pk_spec(kpi), t_from, t_to, step, dims) s
        $$
        """
    )
    op.execute(
        "COMMENT ON FUNCTION kpi_value(text, timestamptz, timestamptz, jsonb) IS"
        " 'The value of a KPI over [t_from, t_to): an event counts when the minute it falls"
        " in starts inside the window. 0 for counts and sums without data, NULL where no"
        " value exists.'"
    )
    op.execute(
        "COMMENT ON FUNCTION kpi_series(text, timestamptz, timestamptz, interval, jsonb) IS"
        " 'kpi_value per step over [t_from, t_to); day, week and month steps align to the"
        " business time zone (app_settings.timezone); time is the start of each step.'"
    )


def partition_state(migrate_data: bool = False) -> None:
    """Time-partitioned state on TimescaleDB; unique keys contain the partitioning column as
    required. `migrate_data` for tables that already hold rows (see 0009)."""
    migrate = ", migrate_data => true" if migrate_data else ""
    for table, column in (
        ("kpi_distinct", "bucket"),
        ("kpi_funnel_steps", "time"),
        ("kpi_retention_returns", "slot"),
    ):
        op.execute(
            f"SELECT create_hypertable('{table}', '{column}',"
            f" chunk_time_interval => interval '7 days'{migrate})"
        )


def upgrade() -> None:
    timescale = has_timescaledb()
    _tables()
    _helpers()
    _sketch()
    points(timescale)
    _math()
    if timescale:
        partition_state()
    grant_read_only(*STATE_TABLES[1:5], "kpi_watermarks")
    grant_execute("kpi_value(text, timestamptz, timestamptz, jsonb)")
    grant_execute("kpi_series(text, timestamptz, timestamptz, interval, jsonb)")


def downgrade() -> None:
    retire_policies("kpi_points_hourly")
    for signature in (
        "kpi_series(text, timestamptz, timestamptz, interval, jsonb)",
        "kpi_value(text, timestamptz, timestamptz, jsonb)",
        "pk_series(jsonb, timestamptz, timestamptz, interval, jsonb)",
        "pk_formula(jsonb, timestamptz, timestamptz, jsonb, integer)",
        "pk_value(jsonb, timestamptz, timestamptz, jsonb, integer)",
        "pk_grid(timestamptz, timestamptz, interval, text)",
        "pk_points(text, timestamptz, timestamptz, jsonb)",
        "pk_sketch_quantile(jsonb, double precision)",
        "pk_sketch_value(text)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("DROP AGGREGATE IF EXISTS pk_sketch_agg(jsonb)")
    for signature in (
        "pk_sketch_merge(jsonb, jsonb)",
        "pk_dims_filter(jsonb, jsonb)",
        "pk_duration(text)",
        "pk_spec(text)",
        "pk_timezone()",
        "pk_minute_ceil(timestamptz)",
    ):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
    op.execute("DROP MATERIALIZED VIEW IF EXISTS kpi_points_hourly")
    op.execute("DROP VIEW IF EXISTS kpi_watermarks")
    for table in reversed(STATE_TABLES):
        op.execute(f"DROP TABLE IF EXISTS {table}")
