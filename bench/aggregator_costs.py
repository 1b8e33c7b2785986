"""Where one aggregator batch spends its time, stage by stage, and what each storage design
tried for the throughput target costs: side by side, on the same events.

Python stages (this process's CPU, one thread): decoding the Kafka values, the roll-up of
20 KPIs, the COPY rows of the events and the COPY text of the KPI state. PostgreSQL
stages: the CPU of the database backend (`/proc/<pid>/schedstat`, nanoseconds) spent on
each statement of the batch transaction, exactly the statements the aggregator sends
(`services.aggregator.repository`). Every design runs in its own freshly migrated schema
of the `pacekeeper` database, on the same events, cut into the same batches, one design
after the other:

- `current`: what the aggregator does (dedupe row + events row per event, the events in
  COPY's binary format, distinct values per minute, plain COPY of rows not known to be
  stored).
- `time-indexes`: as before migration 0011, with the time index `create_hypertable` adds
  on `events`, `kpi_distinct`, `kpi_funnel_steps` and `kpi_retention_returns`.
- `events-no-pk`: one dedupe structure. `events` without its primary key
  (time, source, id): `event_dedupe` alone says whether an event is new.
- `events-text`: the events through COPY's text format (built in Python, parsed by the
  server) instead of the binary format the aggregator uses.
- `distinct-hourly`: exact-distinct state as one row per (kpi, dims, hour, value) with a
  bitmask of its minutes, upserted (`minutes | excluded.minutes`), instead of one row per
  minute; rows whose bits this process knows are stored are not sent.

The machine's speed drifts by tens of percent within minutes, so the designs run in
`--rounds` interleaved rounds and each figure is the median over the rounds.

Command: `.venv/bin/python bench/aggregator_costs.py` (needs `make infra-up`).
Writes bench/results/aggregator_costs.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aggregator import DATABASE_URL, KPIS, build_event, libpq
from common import drop_schemas, load_average, machine, write_result
from psycopg.types.json import set_json_dumps
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table

from services.aggregator import repository
from services.aggregator.catalog import Catalog, compile_catalog
from services.aggregator.copy_text import CopyTimes, text_field
from services.aggregator.known import KnownRows
from services.aggregator.records import US_PER_MINUTE, Event, decode_event
from services.aggregator.rollup import ComebackRow, DistinctRow, Rollup, rollup
from shared.config.kpis import KpiSpec
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings

RESULTS = Path(__file__).parent / "results" / "aggregator_costs.json"
DESIGNS = ("current", "time-indexes", "events-text", "events-no-pk", "distinct-hourly")
# The default time indexes of create_hypertable that migration 0011 drops.
TIME_INDEXES = import_module("shared.migrations.versions.0011_no_redundant_time_indexes").REDUNDANT
US_PER_HOUR = 60 * US_PER_MINUTE

_HOURLY_TABLE = """
    CREATE TABLE kpi_distinct_hourly (
        kpi     text COLLATE "C" NOT NULL,
        hour    timestamptz NOT NULL,
        dims    jsonb NOT NULL,
        value   text COLLATE "C" NOT NULL,
        minutes bigint NOT NULL,
        PRIMARY KEY (kpi, hour, dims, value)
    );
    CREATE TEMP TABLE pk_stage_hourly (LIKE kpi_distinct_hourly) ON COMMIT DELETE ROWS;
"""
_UPSERT_HOURLY = """
    INSERT INTO kpi_distinct_hourly AS d (kpi, hour, dims, value, minutes)
    SELECT kpi, hour, dims, value, minutes FROM pk_stage_hourly
    ON CONFLICT (kpi, hour, dims, value) DO UPDATE SET minutes = d.minutes | excluded.minutes
"""


def backend_ns(pid: int) -> int:
    """CPU time the database backend has run, in nanoseconds."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0])


class Ledger:
    """Nanoseconds per stage: Python's (process CPU) and the backend's."""

    def __init__(self, backend: int) -> None:
        self.backend = backend
        self.python: dict[str, int] = defaultdict(int)
        self.database: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)

    @contextmanager
    def py(self, stage: str) -> Iterator[None]:
        started = time.process_time_ns()
        yield
        self.python[stage] += time.process_time_ns() - started

    @contextmanager
    def db(self, stage: str) -> Iterator[None]:
        started = backend_ns(self.backend)
        yield
        self.database[stage] += backend_ns(self.backend) - started


def copy_text(conn: psycopg.Connection[Any], table: str, columns: str, lines: list[str]) -> None:
    with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        copy.write("".join(lines).encode())


def copy_binary(conn: psycopg.Connection[Any], events: list[Event]) -> None:
    with conn.cursor().copy(
        f"COPY events ({repository._EVENT_COLUMNS}) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types(repository._EVENT_TYPES)
        for e in events:
            copy.write_row(
                (
                    e.time,
                    e.source,
                    e.id,
                    e.type,
                    e.user_id,
                    e.anonymous_id,
                    e.properties,  # jsonb: dumped by orjson (set_json_dumps in run_design)
                    e.received_at,
                )
            )


def event_lines(events: list[Event]) -> list[str]:
    """The events as lines of COPY's text format (what the aggregator sent before it used
    the binary format)."""
    times, lines = CopyTimes(), []
    for e in events:
        properties = orjson.dumps(e.properties).decode().replace("\\", "\\\\")
        lines.append(
            f"{times(e.ts)}\t{text_field(e.source)}\t{text_field(e.id)}\t{text_field(e.type)}\t"
            f"{text_field(e.user_id)}\t{text_field(e.anonymous_id)}\t{properties}\t"
            f"{e.received_at.isoformat()}\n"
        )
    return lines


def hourly_rows(
    distinct: list[DistinctRow], known: dict[tuple[str, Any, int, str], int]
) -> list[tuple[str, Any, int, str, int]]:
    """Per-minute distinct rows → (kpi, dims, hour, value, minute bits) not yet stored."""
    masks: dict[tuple[str, Any, int, str], int] = defaultdict(int)
    for kpi, dims, minute, value in distinct:
        hour, offset = divmod(minute, 60)
        masks[(kpi, dims, hour, value)] |= 1 << offset
    out = []
    for key, bits in masks.items():
        stored = known.get(key, 0)
        if bits & ~stored:
            out.append((*key, bits | stored))
    return out


def run_design(
    design: str,
    database_url: str,
    batches: list[list[bytes]],
    catalog: Catalog,
    console: Console,
) -> dict[str, Any]:
    schema = f"bench_costs_{uuid.uuid4().hex[:8]}"
    settings = BaseServiceSettings(database_url=database_url, database_schema=schema)
    upgrade(settings)
    conn = psycopg.connect(libpq(database_url), options=f"-c search_path={schema},public")
    try:
        for table, shape in repository._STAGING.items():
            conn.execute(f"CREATE TEMP TABLE {table} {shape} ON COMMIT DELETE ROWS")
        if design == "time-indexes":
            for table, (index, column) in TIME_INDEXES.items():
                conn.execute(f'CREATE INDEX {index} ON {table} ("{column}" DESC)')
        if design == "events-no-pk":
            conn.execute("ALTER TABLE events DROP CONSTRAINT events_pkey")
        if design == "distinct-hourly":
            conn.execute(_HOURLY_TABLE)
        set_json_dumps(orjson.dumps, context=conn)
        conn.commit()
        ledger = Ledger(conn.info.backend_pid)
        known_distinct: KnownRows[DistinctRow] = KnownRows(500_000)
        known_comebacks: KnownRows[ComebackRow] = KnownRows(500_000)
        known_hourly: dict[tuple[str, Any, int, str], int] = {}
        events_total = 0
        wall_started = time.perf_counter()
        for values in batches:
            with ledger.py("decode"):
                events = [decode_event(v) for v in values]
            events_total += len(events)
            with ledger.py("rollup"):
                state = rollup(events, catalog)
            lines = None
            if design == "events-text":
                with ledger.py("events COPY text"):
                    lines = event_lines(events)
            known = (known_distinct, known_comebacks, known_hourly)
            write_batch(design, conn, ledger, events, lines, state, catalog, known)
        wall = time.perf_counter() - wall_started
    finally:
        conn.close()
        drop_schemas(settings, schema)
    per_event = {
        "python_us": {k: round(v / 1000 / events_total, 2) for k, v in ledger.python.items()},
        "postgres_us": {k: round(v / 1000 / events_total, 2) for k, v in ledger.database.items()},
        "rows_per_event": {k: round(v / events_total, 3) for k, v in ledger.rows.items()},
    }
    python_total = sum(ledger.python.values()) / 1000 / events_total
    postgres_total = sum(ledger.database.values()) / 1000 / events_total
    console.print(
        f"{design}: Python {python_total:.1f} µs + PostgreSQL {postgres_total:.1f} µs per event"
        f" ({events_total / wall:,.0f} events/s one after the other)",
        markup=False,
    )
    return {
        "design": design,
        "events": events_total,
        "python_us_per_event": round(python_total, 2),
        "postgres_us_per_event": round(postgres_total, 2),
        "serial_events_per_s": round(events_total / wall),
        **per_event,
    }


def write_batch(
    design: str,
    conn: psycopg.Connection[Any],
    ledger: Ledger,
    events: list[Event],
    lines: list[str] | None,
    state: Rollup,
    catalog: Catalog,
    known: tuple[
        KnownRows[DistinctRow], KnownRows[ComebackRow], dict[tuple[str, Any, int, str], int]
    ],
) -> None:
    """One batch's transaction, statement by statement, as the aggregator writes it."""
    with ledger.py("COPY text of keys"):
        keys = [f"{e.source}\t{e.id}\n" for e in events]
    with ledger.db("dedupe COPY"):
        copy_text(conn, "event_dedupe", "source, id", keys)
    ledger.rows["event_dedupe"] += len(keys)
    if lines is None:
        with ledger.py("events COPY binary"), ledger.db("events COPY"):
            copy_binary(conn, events)
    else:
        with ledger.db("events COPY"):
            copy_text(conn, "events", repository._EVENT_COLUMNS, lines)
    ledger.rows["events"] += len(events)

    known_distinct, known_comebacks, known_hourly = known
    distinct = known_distinct.unknown(state.distinct)
    comebacks = known_comebacks.unknown(state.comebacks)
    hourly: list[tuple[str, Any, int, str, int]] = []
    if design == "distinct-hourly":
        with ledger.py("distinct hourly rows"):
            hourly = hourly_rows(list(state.distinct), known_hourly)
        distinct = []
    with ledger.py("state COPY text"):
        text = repository.state_lines(state, catalog, distinct=distinct, comebacks=comebacks)
    for table, rows in text.items():
        spec = repository.STATE_TABLES[table]
        with ledger.db(table):
            if spec.merge:
                copy_text(conn, spec.stage, spec.columns, rows)
                conn.execute(spec.statement.text)
            else:  # set rows not known to be stored: a plain COPY
                copy_text(conn, table, spec.columns, rows)
        ledger.rows[table] += len(rows)
    if hourly:
        names = {kpi: catalog.dimensions(kpi) for kpi in catalog.specs}
        with ledger.py("distinct hourly rows"):
            rows_h = [
                f"{kpi}\t{datetime.fromtimestamp(hour * 3600, UTC).isoformat()}\t"
                f"{repository.dims_json(names[kpi], dims)}\t{value}\t{bits}\n"
                for kpi, dims, hour, value, bits in hourly
            ]
        with ledger.db("kpi_distinct_hourly"):
            copy_text(conn, "pk_stage_hourly", "kpi, hour, dims, value, minutes", rows_h)
            conn.execute(_UPSERT_HOURLY)
        ledger.rows["kpi_distinct_hourly"] += len(rows_h)
    with ledger.db("commit"):
        conn.commit()
    known_distinct.remember(distinct)
    known_comebacks.remember(comebacks)
    for kpi, dims, hour, value, bits in hourly:
        known_hourly[(kpi, dims, hour, value)] = bits


def workload(n: int, batch: int) -> list[list[bytes]]:
    """The aggregator benchmark's events (bench/aggregator.py), cut into batches."""
    rng, now, run = random.Random(1), datetime.now(UTC), uuid.uuid4().hex[:8]
    values = [
        orjson.dumps(
            build_event(rng, i, now, run, behind=3600 * (1 - i / n)), option=orjson.OPT_UTC_Z
        )
        for i in range(n)
    ]
    return [values[i : i + batch] for i in range(0, n, batch)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=150_000)
    parser.add_argument("--batch", type=int, default=15_000, help="the aggregator's default")
    parser.add_argument("--designs", default=",".join(DESIGNS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    console = Console()
    load_before = load_average()
    adapter: TypeAdapter[Any] = TypeAdapter(KpiSpec)
    catalog = compile_catalog({d["name"]: adapter.validate_python(d) for d in KPIS})
    batches = workload(args.events, args.batch)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    designs = args.designs.split(",")
    for round_ in range(args.rounds):
        console.print(f"round {round_ + 1} of {args.rounds}", style="bold")
        for design in designs:
            runs[design].append(run_design(design, DATABASE_URL, batches, catalog, console))
    results = [median_run(runs[design]) for design in designs]
    show(results, console)
    write_result(
        RESULTS,
        {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "events": args.events,
            "batch": args.batch,
            "rounds": args.rounds,
            "machine": machine(load_before),
            "designs": results,
        },
    )
    console.print(f"wrote {RESULTS.relative_to(Path.cwd())}")


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One design's figures: the median of each over the rounds."""

    def median(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    out = dict(runs[0])
    for key in ("python_us_per_event", "postgres_us_per_event", "serial_events_per_s"):
        out[key] = median([r[key] for r in runs])
    for side in ("python_us", "postgres_us", "rows_per_event"):
        stages = {k for r in runs for k in r[side]}
        out[side] = {k: median([r[side].get(k, 0.0) for r in runs]) for k in sorted(stages)}
    out["rounds"] = [
        {k: r[k] for k in ("python_us_per_event", "postgres_us_per_event")} for r in runs
    ]
    return out


def show(results: list[dict[str, Any]], console: Console) -> None:
    stages: Callable[[str], list[str]] = lambda side: sorted(  # noqa: E731
        {k for r in results for k in r[side]}
    )
    table = Table(title="µs per event, by stage")
    table.add_column("stage")
    for r in results:
        table.add_column(r["design"], justify="right")
    for side, label in (("python_us", "Python"), ("postgres_us", "PostgreSQL")):
        for stage in stages(side):
            table.add_row(f"{label}: {stage}", *(f"{r[side].get(stage, 0):.1f}" for r in results))
    table.add_row("Python total", *(f"{r['python_us_per_event']:.1f}" for r in results))
    table.add_row("PostgreSQL total", *(f"{r['postgres_us_per_event']:.1f}" for r in results))
    for stage in stages("rows_per_event"):
        counts = (f"{r['rows_per_event'].get(stage, 0):.3f}" for r in results)
        table.add_row(f"rows: {stage}", *counts)
    console.print(table)


if __name__ == "__main__":
    main()
