"""Dashboard latency benchmark: `kpi_series` and `kpi_value` over 7, 30 and 90 days, through
the continuous aggregates (the schema as migrated) and from the per-minute rows alone.

    .venv/bin/python bench/series_latency.py [--days 100] [--repetitions 20] [--no-jit]

Setup, in a throw-away schema: a count KPI (`orders`) and a sum KPI (`revenue`), each with
three dimension sets (source x channel), a row per minute for `--days` days up to now
(144,000 minutes per dimension set at 100 days), shaped as the aggregator writes them
(count and sum; no min, max or sketch), filled with generate_series in SQL. Then what the
migrated policies would have done with such a history: both continuous aggregates
materialized over all of it (a manual refresh, retried while a policy job holds the
aggregate), and the compression policy run once (`run_job`: chunks older than 30 days).

Three paths, each on its own connection as the read-only `grafana` role, as a dashboard
connects (search_path = the schema; statements never prepared, as Grafana sends them):

- timescaledb: the schema as migrated. pk_points, under kpi_series and kpi_value, reads
  whole UTC days older than 8 days from kpi_points_daily, whole hours from
  kpi_points_hourly, and the ragged edges and the last 8 days from kpi_points.
- minutes: the same kpi_series and kpi_value with pk_points replaced by the version
  migration 0004 installs on plain PostgreSQL, which sums kpi_points only. The
  replacement lives in a second throw-away schema put first on that connection's
  search_path; the migrated functions do not pin a search_path, so they resolve it in
  place of the original (checked before timing). Same data, same grid and functions:
  the difference is exactly the aggregates. (A plain-PostgreSQL schema would need a
  second database, since the migrations pick the TimescaleDB DDL per database, and would
  also swap the hypertable for a plain table.)
- sql: a hand-written `date_bin … GROUP BY` (or a plain `sum`) over kpi_points, the least
  any query over the minutes does; a reference, it skips the empty-bucket grid.

Windows end at the moment of each repetition (as a panel's "last N days"); every
(case, path) runs once unmeasured first; the paths alternate within each repetition.
Reports p50/p95 per (query, window, step, KPI, path) and the ratio minutes ÷ timescaledb,
and checks that the three paths give the same answers. The sessions keep the server's
`jit` setting, as Grafana's would; `--no-jit` (or `--jit`) sets it for them. Run both:
with PostgreSQL's default thresholds JIT compilation can dominate kpi_series (the planner
takes pk_grid for 1,000 rows, so the plan's cost passes the inlining and optimization
thresholds). Prints a table and writes bench/results/series_latency.json. Needs the
local PostgreSQL with TimescaleDB.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import orjson
import psycopg
from common import drop_schemas, load_average, machine, write_result
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import TypeAdapter
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from shared.config.kpis import KpiSpec
from shared.config.store import spec_json
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import AGGREGATES, refresh_aggregate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "series_latency.json"
KPIS: dict[str, dict[str, Any]] = {
    "orders": {
        "name": "orders",
        "kind": "count",
        "event": "order_completed",
        "dimensions": ["source", "properties.channel"],
    },
    "revenue": {
        "name": "revenue",
        "kind": "sum",
        "event": "order_completed",
        "field": "properties.revenue",
        "dimensions": ["source", "properties.channel"],
    },
}
DIMS = (
    {"source": "web-shop", "properties.channel": "seo"},
    {"source": "web-shop", "properties.channel": "search"},
    {"source": "mobile-app", "properties.channel": "app"},
)
# Panel-sized steps: 169, 121, 31 and 91 points.
SERIES = ((7, "1 hour"), (30, "6 hours"), (30, "1 day"), (90, "1 day"))
VALUES = (7, 30, 90)
PATHS = ("timescaledb", "minutes", "sql")

# Orders per minute follow a daily wave (1 to ~14); revenue is 25-75 per order.
_FILL = """
    INSERT INTO kpi_points (kpi, dims, bucket, count, sum)
    SELECT %(kpi)s, %(dims)s::jsonb, m, n,
           CASE WHEN %(priced)s THEN round((n * (25 + 50 * random()))::numeric, 2)::float8
                ELSE 0 END
    FROM (
        SELECT m, (1 + floor(random() * 6 * (1.2 + sin(2 * pi() * extract(epoch FROM m)
                                                        / 86400))))::bigint AS n
        FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute',
                             interval '1 minute') AS m
    ) AS minutes
"""
# Migration 0004's pk_points for plain PostgreSQL, reading the benchmark schema's minutes.
_MINUTES_PK_POINTS = """
    CREATE FUNCTION {override}.pk_points(kpi_name text, lo timestamptz, hi timestamptz, f jsonb)
    RETURNS TABLE(c numeric, s double precision, mn double precision, mx double precision)
    LANGUAGE sql STABLE AS $$
        SELECT sum(p.count), sum(p.sum), min(p.min), max(p.max)
        FROM {schema}.kpi_points p
        WHERE p.kpi = kpi_name AND p.bucket >= lo AND p.bucket < hi AND p.dims @> f
    $$
"""
SHOW: dict[str, LiteralString] = {
    "jit": "SHOW jit",
    "jit_above_cost": "SHOW jit_above_cost",
    "shared_buffers": "SHOW shared_buffers",
    "work_mem": "SHOW work_mem",
}
_SIGNATURE = "pk_points(text, timestamptz, timestamptz, jsonb)"
_KPI_SERIES: LiteralString = "SELECT time, value FROM kpi_series(%s, %s, %s, %s::interval)"
_KPI_VALUE: LiteralString = "SELECT kpi_value(%s, %s, %s)"
# pk_grid bins hours from a local midnight and days from local midnights: in UTC, date_bin
# from this origin gives the same labels.
_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
_SQL_SERIES: dict[str, LiteralString] = {
    "count": "SELECT date_bin(%s::interval, bucket, %s), sum(count)::float8 FROM kpi_points"
    " WHERE kpi = %s AND bucket >= %s AND bucket < %s GROUP BY 1 ORDER BY 1",
    "sum": "SELECT date_bin(%s::interval, bucket, %s), sum(sum) FROM kpi_points"
    " WHERE kpi = %s AND bucket >= %s AND bucket < %s GROUP BY 1 ORDER BY 1",
}
_SQL_VALUE: dict[str, LiteralString] = {
    "count": "SELECT coalesce(sum(count), 0)::float8 FROM kpi_points"
    " WHERE kpi = %s AND bucket >= %s AND bucket < %s",
    "sum": "SELECT coalesce(sum(sum), 0) FROM kpi_points"
    " WHERE kpi = %s AND bucket >= %s AND bucket < %s",
}

Answer = dict[datetime, float] | float | None


@dataclass(frozen=True, slots=True)
class Case:
    query: str  # kpi_series | kpi_value
    days: int
    step: str | None
    kpi: str

    @property
    def kind(self) -> str:
        return str(KPIS[self.kpi]["kind"])

    def label(self) -> dict[str, Any]:
        return {"query": self.query, "days": self.days, "step": self.step, "kpi": self.kpi}


def cases() -> list[Case]:
    out = []
    for kpi in KPIS:
        out += [Case("kpi_series", days, step, kpi) for days, step in SERIES]
        out += [Case("kpi_value", days, None, kpi) for days in VALUES]
    return out


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def ask(conn: psycopg.Connection[Any], path: str, case: Case, t_to: datetime) -> Answer:
    t_from = t_to - timedelta(days=case.days)
    if case.query == "kpi_series":
        if path == "sql":
            rows = conn.execute(
                _SQL_SERIES[case.kind], (case.step, _ORIGIN, case.kpi, t_from, t_to)
            ).fetchall()
        else:
            rows = conn.execute(_KPI_SERIES, (case.kpi, t_from, t_to, case.step)).fetchall()
        return {t: float(v) for t, v in rows}
    query = _SQL_VALUE[case.kind] if path == "sql" else _KPI_VALUE
    row = conn.execute(query, (case.kpi, t_from, t_to)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def difference(a: Answer, b: Answer) -> float:
    """Largest relative difference between two answers (a missing bucket counts as 0)."""

    def rel(x: float, y: float) -> float:
        return 0.0 if x == y else abs(x - y) / max(abs(x), abs(y))

    if isinstance(a, dict) and isinstance(b, dict):
        return max((rel(a.get(t, 0.0), b.get(t, 0.0)) for t in a.keys() | b.keys()), default=0.0)
    if isinstance(a, float) and isinstance(b, float):
        return rel(a, b)
    return 0.0 if a == b else math.inf


def fill(conn: psycopg.Connection[Any], schema: str, days: int, console: Console) -> dict[str, Any]:
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    adapter: TypeAdapter[Any] = TypeAdapter(KpiSpec)  # the union is no NamedSpec to mypy
    for spec in KPIS.values():
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES (%s, %s)",
            (spec["name"], orjson.dumps(spec_json(adapter.validate_python(spec))).decode()),
        )
    conn.execute("SELECT setseed(0.42)")  # the same minutes on every run
    started = time.perf_counter()
    with Progress(console=console) as progress:
        task = progress.add_task("kpi_points, one row per minute", total=len(KPIS) * len(DIMS))
        for spec in KPIS.values():
            for dims in DIMS:
                conn.execute(
                    _FILL,
                    {
                        "kpi": spec["name"],
                        "dims": orjson.dumps(dims).decode(),
                        "priced": spec["kind"] == "sum",
                        "start": start,
                        "end": end,
                    },
                )
                progress.advance(task)
    fill_s = time.perf_counter() - started
    conn.execute("ANALYZE kpi_points")

    started = time.perf_counter()
    for view in AGGREGATES:
        refresh_aggregate(conn, view)
    refresh_s = time.perf_counter() - started
    started = time.perf_counter()
    job = conn.execute(
        "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression'"
        " AND hypertable_schema = %s AND hypertable_name = 'kpi_points'",
        (schema,),
    ).fetchone()
    if job is None:
        raise SystemExit("no compression policy on kpi_points: is TimescaleDB installed?")
    conn.execute("CALL run_job(%s)", (job[0],))
    compress_s = time.perf_counter() - started
    materialized = conn.execute(
        "SELECT materialization_hypertable_schema, materialization_hypertable_name"
        " FROM timescaledb_information.continuous_aggregates WHERE view_schema = %s",
        (schema,),
    ).fetchall()
    for table_schema, table in materialized:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table_schema, table)))
    conn.execute("ANALYZE kpi_points")

    def one(query: LiteralString) -> int:
        row = conn.execute(query).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    setup = {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "days": days,
        "dimension_sets": len(DIMS),
        "kpi_points_rows": one("SELECT count(*) FROM kpi_points"),
        "hourly_rows": one("SELECT count(*) FROM kpi_points_hourly"),
        "daily_rows": one("SELECT count(*) FROM kpi_points_daily"),
        "chunks": one("SELECT count(*) FROM show_chunks('kpi_points')"),
        "compressed_chunks": one(
            "SELECT count(*) FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'kpi_points'"
            " AND is_compressed"
        ),
        "fill_seconds": round(fill_s, 1),
        "refresh_seconds": round(refresh_s, 1),
        "compress_seconds": round(compress_s, 1),
    }
    console.log(
        f"{setup['kpi_points_rows']:,} minute rows in {fill_s:.0f} s; aggregates refreshed in"
        f" {refresh_s:.0f} s; {setup['compressed_chunks']} of {setup['chunks']} chunks"
        f" compressed by the policy in {compress_s:.0f} s"
    )
    return setup


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank: p95 of 20 samples is the 19th."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(
    conns: dict[str, psycopg.Connection[Any]],
    repetitions: int,
    console: Console,
) -> tuple[dict[Case, dict[str, list[float]]], dict[Case, dict[str, float]]]:
    """Milliseconds per (case, path); and each path's largest difference from timescaledb."""
    all_cases = cases()
    samples: dict[Case, dict[str, list[float]]] = {c: {p: [] for p in PATHS} for c in all_cases}
    differences: dict[Case, dict[str, float]] = {}
    t_to = datetime.now(UTC)
    for case in all_cases:  # unmeasured: caches, plans; and the answers, compared
        answers = {path: ask(conns[path], path, case, t_to) for path in PATHS}
        differences[case] = {p: difference(answers["timescaledb"], answers[p]) for p in PATHS}
    with Progress(console=console) as progress:
        task = progress.add_task("timing", total=repetitions * len(all_cases) * len(PATHS))
        for rep in range(repetitions):
            t_to = datetime.now(UTC)
            order = PATHS[rep % len(PATHS) :] + PATHS[: rep % len(PATHS)]
            for case in all_cases:
                for path in order:
                    started = time.perf_counter()
                    ask(conns[path], path, case, t_to)
                    samples[case][path].append((time.perf_counter() - started) * 1000)
                    progress.advance(task)
    return samples, differences


def connect(
    conninfo: str, search_path: str, name: str, jit: bool | None
) -> psycopg.Connection[Any]:
    options = f"-c search_path={search_path}"
    if jit is not None:
        options += f" -c jit={'on' if jit else 'off'}"
    return psycopg.connect(
        conninfo,
        autocommit=True,
        prepare_threshold=None,  # Grafana sends each query as text
        application_name=name,
        options=options,
    )


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    load_before = load_average()
    run_id = uuid.uuid4().hex[:8]
    schema, override = f"bench_series_{run_id}", f"bench_series_{run_id}_minutes"
    settings = BaseServiceSettings().model_copy(update={"database_schema": schema})
    owner_url = libpq(settings.database_url.get_secret_value())
    reader = make_conninfo(owner_url, user=args.reader_user, password=args.reader_password)
    owner = psycopg.connect(owner_url, autocommit=True, options=f"-c search_path={schema},public")
    conns: dict[str, psycopg.Connection[Any]] = {}
    try:
        console.log(f"migrating {schema}")
        upgrade(settings)
        setup = fill(owner, schema, args.days, console)
        owner.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(override)))
        owner.execute(
            sql.SQL(_MINUTES_PK_POINTS).format(
                override=sql.Identifier(override), schema=sql.Identifier(schema)
            )
        )
        owner.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(override), sql.Identifier(args.reader_user)
            )
        )
        conns = {
            "timescaledb": connect(reader, schema, "bench-series-timescaledb", args.jit),
            "minutes": connect(reader, f"{override},{schema}", "bench-series-minutes", args.jit),
            "sql": connect(reader, schema, "bench-series-sql", args.jit),
        }
        wanted = owner.execute(
            "SELECT to_regprocedure(%s)::oid", (f"{override}.{_SIGNATURE}",)
        ).fetchone()
        found = conns["minutes"].execute("SELECT to_regprocedure(%s)::oid", (_SIGNATURE,))
        if wanted is None or found.fetchone() != wanted:
            raise SystemExit("the minutes path does not resolve pk_points to its replacement")
        server = {
            name: conns["timescaledb"].execute(SHOW[name]).fetchone()
            for name in ("jit", "jit_above_cost", "shared_buffers", "work_mem")
        }
        samples, differences = measure(conns, args.repetitions, console)
    finally:
        for conn in (*conns.values(), owner):
            conn.close()
        drop_schemas(settings, override, schema)

    rows = []
    for case, by_path in samples.items():
        stats: dict[str, dict[str, float]] = {}
        for path, values in by_path.items():
            ordered = sorted(values)
            stats[path] = {
                "p50_ms": round(percentile(ordered, 0.50), 2),
                "p95_ms": round(percentile(ordered, 0.95), 2),
                "min_ms": round(ordered[0], 2),
                "max_ms": round(ordered[-1], 2),
            }
        base = stats["timescaledb"]["p50_ms"]
        rows.append(
            {
                **case.label(),
                **stats,
                "ratio_minutes": round(stats["minutes"]["p50_ms"] / base, 2),
                "ratio_sql": round(stats["sql"]["p50_ms"] / base, 2),
                "max_relative_difference": {
                    p: differences[case][p] for p in PATHS if p != "timescaledb"
                },
            }
        )
    worst = max(d for case in differences.values() for d in case.values())

    def headline(query: str, days: int) -> dict[str, Any]:
        return next(
            r
            for r in rows
            if r["query"] == query
            and r["days"] == days
            and r["kpi"] == "orders"
            and r["step"] in (None, "1 day")
        )

    series90, value90 = headline("kpi_series", 90), headline("kpi_value", 90)
    return {
        "benchmark": "series_latency",
        "command": " ".join(["bench/series_latency.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before, server={k: v[0] if v else None for k, v in server.items()}),
        "repetitions": args.repetitions,
        "jit": "server default" if args.jit is None else ("on" if args.jit else "off"),
        "setup": setup,
        "answers_agree": worst <= 1e-9,
        "max_relative_difference": worst,
        "cases": rows,
        "kpi_series_90d_p50_ms": series90["timescaledb"]["p50_ms"],
        "kpi_series_90d_minutes_p50_ms": series90["minutes"]["p50_ms"],
        "kpi_series_90d_ratio": series90["ratio_minutes"],
        "kpi_value_90d_p50_ms": value90["timescaledb"]["p50_ms"],
        "kpi_value_90d_minutes_p50_ms": value90["minutes"]["p50_ms"],
        "kpi_value_90d_ratio": value90["ratio_minutes"],
    }


def show(result: dict[str, Any], console: Console) -> None:
    table = Table(
        title=f"kpi_series / kpi_value as grafana, ms p50 / p95 of {result['repetitions']}"
        f" (jit {result['machine']['server']['jit']})",
        caption="minutes ÷ tsdb: p50 of the same functions over kpi_points alone",
    )
    for column in ("query", "window", "step", "kpi", "timescaledb", "minutes", "sql", "÷"):
        table.add_column(column, justify="left" if column in ("query", "kpi") else "right")

    def cell(stats: dict[str, float]) -> str:
        return f"{stats['p50_ms']:,.1f} / {stats['p95_ms']:,.1f}"

    for r in result["cases"]:
        table.add_row(
            r["query"],
            f"{r['days']}d",
            r["step"] or "",
            r["kpi"],
            cell(r["timescaledb"]),
            cell(r["minutes"]),
            cell(r["sql"]),
            f"{r['ratio_minutes']:.1f}x",
        )
    console.print(table)
    setup, machine = result["setup"], result["machine"]
    agree = "[green]agree[/green]" if result["answers_agree"] else "[red]DIFFER[/red]"
    console.print(
        f"answers of the three paths {agree} (max relative difference"
        f" {result['max_relative_difference']:.1e}); {setup['kpi_points_rows']:,} minute rows"
        f" over {setup['days']} days, {setup['compressed_chunks']} of {setup['chunks']} chunks"
        f" compressed; {machine['cpus']} CPUs, load average"
        f" {machine['load_average_before'][0]} before, {machine['load_average_after'][0]} after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=100, help="of minutes, ending now")
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--reader-user", default="grafana", help="the dashboard's login")
    parser.add_argument("--reader-password", default="grafana")
    parser.add_argument(
        "--jit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="set jit on or off for the timed sessions (default: the server's setting)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.days < max(d for d, _ in SERIES) + 1:
        parser.error("--days must cover the longest window (90 days) and a day more")
    console = Console(width=None if sys.stdout.isatty() else 120)  # tables whole in logs
    result = run(args, console)
    show(result, console)
    write_result(args.output, result)
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
