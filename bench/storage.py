"""Storage benchmark: bytes per stored event and per KPI minute, before and after compression.

    .venv/bin/python bench/storage.py [--events 300000] [--days 30]

1. A throw-away schema, migrated (on TimescaleDB: `events` in 1-day chunks segmented by
   source and type, `kpi_points` in 7-day chunks segmented by kpi and dims), holding the
   KPI catalogue of examples/pacekeeper.yaml.
2. `--days` of the demo simulator's products (services/demo/simulator.py: web shop,
   mobile app, support desk, content, ads), its shop sized so they make about `--events`
   events, written through the aggregator's own write path in batches of 10,000:
   `insert_events` (event_dedupe + events), `rollup`, the cardinality guard and
   `write_state` (kpi_points and the exact distinct/funnel/retention state).
3. Both continuous aggregates are refreshed over the whole history and the tables vacuumed
   (a live aggregator upserts each minute row many times; vacuum leaves the live rows).
   Then `hypertable_detailed_size` (heap, indexes, TOAST) over exact row counts gives
   bytes per event and per KPI minute (one kpi_points row: one KPI, dimension set, minute).
4. Every chunk of both hypertables is compressed (`compress_chunk`; the policies would
   compress events after 8 days and kpi_points after 30) and measured again, and
   `kpi_value` over the whole history is compared before and after for every KPI kept in
   kpi_points (total, and its busiest dimension set).

Prints tables and writes bench/results/storage.json. Needs the local PostgreSQL with
TimescaleDB (make infra-up); no Kafka.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any, LiteralString

import orjson
import psycopg
import yaml
from common import drop_schemas, load_average, machine, write_result
from psycopg import sql
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.aggregator import repository
from services.aggregator.catalog import POINT_KINDS, Catalog, compile_catalog
from services.aggregator.guard import CardinalityGuard
from services.aggregator.records import Event, make_event
from services.aggregator.rollup import fold, rollup
from services.demo.simulator import SimConfig, Simulator, events_between
from shared.config import PacekeeperConfig, parse_config
from shared.config.store import apply_config
from shared.db import make_engine, make_sessionmaker, transaction
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import AGGREGATES, refresh_aggregate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "storage.json"
CATALOGUE = ROOT / "examples" / "pacekeeper.yaml"
BATCH = 10_000  # events per transaction, as the aggregator's batches (max 15,000)
Query = LiteralString | sql.SQL | sql.Composed
HYPERTABLES = {"events": "event", "kpi_points": "KPI minute"}
# Per-event state beyond `events`, stored uncompressed (no compression settings).
OTHER_TABLES = (
    "event_dedupe",
    "kpi_distinct",
    "kpi_funnel_steps",
    "kpi_retention_cohorts",
    "kpi_retention_returns",
)
SEED = 7


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def catalogue() -> PacekeeperConfig:
    """The example's KPIs only (its channels need secrets from the environment)."""
    data = yaml.safe_load(CATALOGUE.read_text(encoding="utf-8"))
    return parse_config({"kpis": data["kpis"]})


def events_per_day(base: SimConfig, visits_per_day: float) -> float:
    """Measured over an ordinary simulated week (2026-11-02, a Monday) of this shop size."""
    sim = Simulator(replace(base, profile=base.profile.scaled(visits_per_day)))
    start = datetime(2026, 11, 2, tzinfo=UTC)
    return sum(1 for _ in events_between(sim, start, start + timedelta(days=7))) / 7


def simulated(events: int, days: int, end: datetime) -> Iterator[Event]:
    """The simulator's events in [end - days, end), as the aggregator decodes them."""
    base = SimConfig(seed=SEED)
    # Ad spend, follower counts and content do not grow with the shop: a fixed part per
    # day, plus a part per visit (sessions, orders, tickets, surveys).
    fixed = events_per_day(base, 1e-9)
    per_visit = (events_per_day(base, 4000.0) - fixed) / 4000.0
    visits_per_day = max(0.0, events / days - fixed) / per_visit
    sim = Simulator(replace(base, profile=base.profile.scaled(visits_per_day)))
    delay = random.Random(SEED)
    for e in events_between(sim, end - timedelta(days=days), end):
        body = e.body
        yield make_event(
            source=e.source,
            id=body["id"],
            type=body["type"],
            time=e.time,
            # Ingest stamps received_at a moment after the event happened.
            received_at=e.time + timedelta(seconds=delay.uniform(0.05, 2.0)),
            user_id=body.get("user_id"),
            anonymous_id=body.get("anonymous_id"),
            properties=body["properties"],
        )


def batches(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    it = iter(events)
    while batch := list(islice(it, size)):
        yield batch


async def load(
    settings: BaseServiceSettings, config: PacekeeperConfig, events: Iterable[Event], total: int
) -> int:
    """Store the KPI definitions, then every event the way the aggregator's batch does."""
    catalog: Catalog = compile_catalog({k.name: k for k in config.kpis})
    engine = make_engine(settings, application_name="bench-storage", pool_size=1)
    sessions = make_sessionmaker(engine)
    guard = CardinalityGuard()
    written = 0
    try:
        async with transaction(sessions) as session:
            await apply_config(session, config)
        with Progress() as progress:
            task = progress.add_task("aggregator write path", total=total)
            for batch in batches(events, BATCH):
                async with transaction(sessions) as session:
                    fresh = await repository.insert_events(session, batch)
                    state = rollup(fresh, catalog)
                    admitted, pending = await guard.resolve(session, state, catalog)
                    state, _folds = fold(state, admitted)
                    await repository.write_state(session, repository.state_lines(state, catalog))
                guard.commit(pending, catalog)
                written += len(fresh)
                progress.update(task, completed=min(written, total))
            progress.update(task, total=written, completed=written)
    finally:
        await engine.dispose()
    return written


def one(conn: psycopg.Connection[Any], query: Query, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def count(conn: psycopg.Connection[Any], table: str) -> int:
    return int(one(conn, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))))


def hypertable_sizes(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT table_bytes, index_bytes, toast_bytes, total_bytes"
        " FROM hypertable_detailed_size(%s)",
        (table,),
    ).fetchone()
    assert row is not None
    heap, index, toast, total = (int(v or 0) for v in row)
    rows = count(conn, table)
    chunks = int(one(conn, "SELECT count(*) FROM show_chunks(%s)", table))
    return {
        "rows": rows,
        "chunks": chunks,
        "heap_bytes": heap,
        "index_bytes": index,
        "toast_bytes": toast,
        "total_bytes": total,
    }


def per_row(sizes: dict[str, int]) -> dict[str, float]:
    rows = max(1, sizes["rows"])
    parts = ("heap", "index", "toast", "total")
    return {part: round(sizes[f"{part}_bytes"] / rows, 1) for part in parts}


def other_sizes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    out = {}
    for table in OTHER_TABLES:
        hypertable = one(
            conn,
            "SELECT count(*) > 0 FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = %s",
            table,
        )
        size: Query = (
            "SELECT hypertable_size(%s)"
            if hypertable
            else "SELECT pg_total_relation_size(%s::regclass)"
        )
        out[table] = {"rows": count(conn, table), "total_bytes": int(one(conn, size, table) or 0)}
    for view in AGGREGATES:
        out[view] = {
            "rows": count(conn, view),
            "total_bytes": int(one(conn, "SELECT hypertable_size(%s)", view) or 0),
        }
    return out


def value_checks(
    conn: psycopg.Connection[Any], config: PacekeeperConfig
) -> list[tuple[str, str | None]]:
    """Every KPI kept in kpi_points: its total, and its busiest dimension set."""
    checks: list[tuple[str, str | None]] = []
    for spec in config.kpis:
        if spec.kind not in POINT_KINDS:
            continue
        checks.append((spec.name, None))
        if getattr(spec, "dimensions", None):
            row = conn.execute(
                "SELECT dims FROM kpi_points WHERE kpi = %s GROUP BY dims"
                " ORDER BY count(*) DESC LIMIT 1",
                (spec.name,),
            ).fetchone()
            if row is not None:
                checks.append((spec.name, orjson.dumps(row[0]).decode()))
    return checks


def kpi_values(
    conn: psycopg.Connection[Any],
    checks: list[tuple[str, str | None]],
    lo: datetime,
    hi: datetime,
) -> list[float | None]:
    return [
        one(conn, "SELECT kpi_value(%s, %s, %s, %s::jsonb)", kpi, lo, hi, dims)
        for kpi, dims in checks
    ]


def relative_difference(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return 0.0 if a is b else math.inf
    if a == b:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


def compress(conn: psycopg.Connection[Any], table: str) -> tuple[int, float]:
    started = time.perf_counter()
    chunks = int(
        one(
            conn,
            "SELECT count(compress_chunk(c, if_not_compressed => true)) FROM show_chunks(%s) c",
            table,
        )
    )
    return chunks, time.perf_counter() - started


def compression_stats(conn: psycopg.Connection[Any], table: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT total_chunks, number_compressed_chunks, before_compression_total_bytes,"
        " after_compression_total_bytes FROM hypertable_compression_stats(%s)",
        (table,),
    ).fetchone()
    assert row is not None
    keys = ("total_chunks", "compressed_chunks", "before_total_bytes", "after_total_bytes")
    return {k: int(v or 0) for k, v in zip(keys, row, strict=True)}


def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    load_before = load_average()
    schema = f"bench_storage_{uuid.uuid4().hex[:8]}"
    settings = BaseServiceSettings().model_copy(update={"database_schema": schema})
    url = libpq(settings.database_url.get_secret_value())
    config = catalogue()
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    conn = psycopg.connect(url, autocommit=True, options=f"-c search_path={schema},public")
    try:
        console.log(f"migrating {schema}")
        upgrade(settings)
        if not one(conn, "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"):
            raise SystemExit("this benchmark needs the timescaledb extension in the database")
        started = time.perf_counter()
        written = asyncio.run(
            load(settings, config, simulated(args.events, args.days, end), args.events)
        )
        load_seconds = time.perf_counter() - started
        console.log(f"{written:,} events written in {load_seconds:.0f} s")
        for view in AGGREGATES:
            refresh_aggregate(conn, view)
        for table in (*HYPERTABLES, *OTHER_TABLES):
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        console.log("aggregates refreshed, tables vacuumed; measuring")

        before = {t: hypertable_sizes(conn, t) for t in HYPERTABLES}
        others = other_sizes(conn)
        checks = value_checks(conn, config)
        started = time.perf_counter()
        values_before = kpi_values(conn, checks, start, end)
        check_before_s = time.perf_counter() - started

        compressed: dict[str, dict[str, float]] = {}
        for table in HYPERTABLES:
            chunks, seconds = compress(conn, table)
            compressed[table] = {"chunks": chunks, "seconds": round(seconds, 1)}
            console.log(f"{table}: {chunks} chunks compressed in {seconds:.1f} s")
        after = {t: hypertable_sizes(conn, t) for t in HYPERTABLES}
        stats = {t: compression_stats(conn, t) for t in HYPERTABLES}
        started = time.perf_counter()
        values_after = kpi_values(conn, checks, start, end)
        check_after_s = time.perf_counter() - started
    finally:
        conn.close()
        drop_schemas(settings, schema)

    differences = [
        relative_difference(a, b) for a, b in zip(values_before, values_after, strict=True)
    ]
    tables: dict[str, dict[str, Any]] = {}
    for table, unit in HYPERTABLES.items():
        b, a = per_row(before[table]), per_row(after[table])
        tables[table] = {
            "unit": unit,
            "before": before[table],
            "after": after[table],
            "bytes_per_row_before": b,
            "bytes_per_row_after": a,
            "ratio": round(b["total"] / a["total"], 2) if a["total"] else None,
            "compression": {**compressed[table], **stats[table]},
        }
    return {
        "benchmark": "storage",
        "command": " ".join(["bench/storage.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before),
        "history": {
            "days": args.days,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "events_written": written,
            "load_seconds": round(load_seconds, 1),
            "kpis": len(config.kpis),
            "kpis_in_kpi_points": sum(1 for k in config.kpis if k.kind in POINT_KINDS),
        },
        "tables": tables,
        "other_tables_uncompressed": others,
        "kpi_value_check": {
            "checks": len(checks),
            "identical": sum(1 for d in differences if d == 0.0),
            "max_relative_difference": max(differences, default=0.0),
            "same": all(d <= 1e-9 for d in differences),
            "seconds_before": round(check_before_s, 2),
            "seconds_after": round(check_after_s, 2),
        },
        "bytes_per_event_before": tables["events"]["bytes_per_row_before"]["total"],
        "bytes_per_event_after": tables["events"]["bytes_per_row_after"]["total"],
        "bytes_per_kpi_minute_before": tables["kpi_points"]["bytes_per_row_before"]["total"],
        "bytes_per_kpi_minute_after": tables["kpi_points"]["bytes_per_row_after"]["total"],
        "events_compression_ratio": tables["events"]["ratio"],
        "kpi_points_compression_ratio": tables["kpi_points"]["ratio"],
    }


def show(result: dict[str, Any], console: Console) -> None:
    def parts(p: dict[str, float]) -> str:
        return f"{p['total']:,.0f} = {p['heap']:,.0f}+{p['index']:,.0f}+{p['toast']:,.0f}"

    table = Table(
        title="bytes per stored row (hypertable_detailed_size / count)",
        caption="total = heap + indexes + TOAST",
    )
    for column in ("hypertable", "rows", "before", "after compression", "ratio"):
        table.add_column(column, justify="left" if column == "hypertable" else "right")
    for name, t in result["tables"].items():
        table.add_row(
            f"{name}, per {t['unit']}",
            f"{t['before']['rows']:,}",
            parts(t["bytes_per_row_before"]),
            parts(t["bytes_per_row_after"]),
            f"{t['ratio']}x",
        )
    console.print(table)

    others = Table(title="other tables, uncompressed (no compression settings)")
    for column in ("table", "rows", "MB", "bytes/row", "bytes/event"):
        others.add_column(column, justify="left" if column == "table" else "right")
    events = max(1, result["history"]["events_written"])
    for name, o in result["other_tables_uncompressed"].items():
        others.add_row(
            name,
            f"{o['rows']:,}",
            f"{o['total_bytes'] / 1e6:,.1f}",
            f"{o['total_bytes'] / max(1, o['rows']):,.0f}",
            f"{o['total_bytes'] / events:,.1f}",
        )
    console.print(others)

    check = result["kpi_value_check"]
    verdict = "[green]same[/green]" if check["same"] else "[red]DIFFERENT[/red]"
    console.print(
        f"kpi_value over {result['history']['days']} days, before vs after compression:"
        f" {verdict} ({check['identical']} of {check['checks']} identical, max relative"
        f" difference {check['max_relative_difference']:.1e}; {check['seconds_before']} s"
        f" before, {check['seconds_after']} s after)"
    )
    machine = result["machine"]
    console.print(
        f"{result['history']['events_written']:,} events over {result['history']['days']} days,"
        f" {machine['cpus']} CPUs, load average {machine['load_average_before'][0]} before,"
        f" {machine['load_average_after'][0]} after"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300_000, help="about this many events")
    parser.add_argument("--days", type=int, default=30, help="of history, ending now")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console(width=None if sys.stdout.isatty() else 120)  # tables whole in logs
    result = run(args, console)
    show(result, console)
    write_result(args.output, result)
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
