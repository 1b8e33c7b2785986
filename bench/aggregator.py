"""Aggregator benchmark: sustained events/s and event-to-KPI freshness, on TimescaleDB
hypertables and on plain PostgreSQL tables side by side in one run, and a peer: Kafka
Connect with the Debezium JDBC sink over the same events.

    .venv/bin/python bench/aggregator.py [--events 300000] [--storage timescaledb,plain]
        [--peer insert-t1-b500,...] [--no-peer]

For each storage, in turn, on the same broker, database server and events:
1. Preloads N events into a private topic (6 partitions) and stores 20 KPI definitions in
   a private schema. The events are a busy product's last hour: event times follow the
   produce order with up to 30 s of disorder, 50,000 users. `timescaledb` is a schema of
   the `pacekeeper` database (hypertables, aggregates, policies); `plain` is a schema of a
   throw-away database created from template0, without the extension, where the same
   migrations build plain tables.
2. Raw baseline: an aiokafka consumer that reads every message and decodes it with orjson.
3. The aggregator (`python -m services.aggregator.main`, its own process) drains the same
   topic; sustained rate = events committed per second between its first and last commit.
4. Freshness: a steady 5,000 events/s; a probe event (with its own count KPI) every
   100 ms; a poller asks `kpi_value` every 20 ms until the probe is counted. Freshness =
   produce-call time to visible-in-kpi_value time.

Then the peer (skip it with --no-peer): the same N events, as JSON with an embedded schema
(Kafka Connect's JsonConverter, schemas.enable=true; a flat struct, EVENT_SCHEMA), in a
second topic with the same partitions. For each sink configuration of --peer in turn, a
fresh Kafka Connect 4.1.1 standalone worker runs the Debezium JDBC sink 3.6.0.Final
(bench/peers/kafka_connect.py; fetched from Maven Central once) into its own table of a
throw-away schema of the `pacekeeper` database; sustained rate = rows visible per second
between the first poll that sees rows and the one that sees all N, as for the aggregator.

Writes bench/results/aggregator.json. Needs the local Kafka and PostgreSQL (make infra-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from common import drop_schemas, load_average, machine
from peers import kafka_connect
from pydantic import TypeAdapter
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table
from sqlalchemy.engine import make_url

from shared.config.kpis import KpiSpec
from shared.config.store import spec_json
from shared.kafka import ensure_topics
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import database_status

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "aggregator.json"
PARTITIONS = 6
DATABASE_URL = os.environ.get(
    "PACEKEEPER_DATABASE_URL",
    "postgresql+psycopg://pacekeeper:pacekeeper@127.0.0.1:5432/pacekeeper",
)
BOOTSTRAP = os.environ.get("PACEKEEPER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
# The Debezium JDBC sink configurations tried by default (bench/peers/kafka_connect.py,
# SinkConfig): the sink's defaults; more tasks and bigger batches, as insert and upsert; and
# what did best while tuning on 2 cores: one task, batches of 5,000 written with UNNEST,
# and the worker JVM on the throughput collector.
PEER_CONFIGS = (
    "insert-t1-b500",
    "insert-t2-b2000",
    "upsert-t2-b2000",
    "insert-t1-b5000-unnest",
    "upsert-t1-b5000-unnest",
    "insert-t1-b5000-unnest-parallelgc",
    "upsert-t1-b5000-unnest-parallelgc",
)

KPIS: list[dict[str, Any]] = [
    {
        "name": "orders",
        "kind": "count",
        "event": "order_completed",
        "dimensions": ["source", "properties.channel"],
    },
    {
        "name": "seo_orders",
        "kind": "count",
        "event": "order_completed",
        "where": {"properties.channel": "seo"},
    },
    {"name": "revenue", "kind": "sum", "event": "order_completed", "field": "properties.revenue"},
    {
        "name": "revenue_by_source",
        "kind": "sum",
        "event": "order_completed",
        "field": "properties.revenue",
        "dimensions": ["source"],
    },
    {"name": "aov", "kind": "avg", "event": "order_completed", "field": "properties.revenue"},
    {"name": "min_order", "kind": "min", "event": "order_completed", "field": "properties.revenue"},
    {"name": "max_order", "kind": "max", "event": "order_completed", "field": "properties.revenue"},
    {
        "name": "followers",
        "kind": "last",
        "event": "followers_counted",
        "field": "properties.followers",
    },
    {
        "name": "order_p90",
        "kind": "percentile",
        "event": "order_completed",
        "field": "properties.revenue",
        "q": 0.9,
        "dimensions": ["source"],
    },
    {
        "name": "page_views",
        "kind": "count",
        "event": "page_viewed",
        "dimensions": ["properties.channel"],
    },
    {"name": "visitors", "kind": "count_distinct", "event": "page_viewed"},
    {"name": "buyers", "kind": "count_distinct", "event": "order_completed", "field": "user_id"},
    {"name": "conversion", "kind": "ratio", "numerator": "orders", "denominator": "visitors"},
    {
        "name": "csat_happy",
        "kind": "count",
        "event": "survey_answered",
        "where": {"properties.score": {"gte": 4}},
    },
    {"name": "csat_answers", "kind": "count", "event": "survey_answered"},
    {"name": "csat", "kind": "ratio", "numerator": "csat_happy", "denominator": "csat_answers"},
    {
        "name": "nps",
        "kind": "formula",
        "expression": "100 * (csat_happy - csat_answers + csat_happy) / csat_answers",
    },
    {
        "name": "view_to_order",
        "kind": "funnel",
        "steps": [{"event": "page_viewed"}, {"event": "order_completed"}],
        "within": "1h",
    },
    {
        "name": "d1_retention",
        "kind": "retention",
        "cohort_event": "signed_up",
        "return_event": "page_viewed",
        "day": 1,
    },
    {"name": "probe_count", "kind": "count", "event": "bench_probe"},
]


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def build_event(
    rng: random.Random, i: int, now: datetime, run: str, behind: float = 0.0
) -> dict[str, Any]:
    """One event `behind` seconds before `now`, give or take 30 s of out-of-order arrival."""
    kind = rng.choices(
        ["page_viewed", "order_completed", "survey_answered", "signed_up", "followers_counted"],
        weights=[60, 25, 8, 5, 2],
    )[0]
    user = f"u{rng.randrange(50_000)}"
    props: dict[str, Any] = {"channel": rng.choice(["seo", "ads", "mail", "direct"])}
    if kind == "order_completed":
        props["revenue"] = round(rng.uniform(5, 300), 2)
    elif kind == "survey_answered":
        props["score"] = rng.randrange(1, 6)
    elif kind == "followers_counted":
        props["followers"] = 10_000 + i
    source = rng.choice(["web-shop", "app", "crm"])
    return {
        "id": f"{run}-{i}",
        "type": kind,
        "source": source,
        "time": now - timedelta(seconds=behind + rng.uniform(0, 30)),
        "user_id": user,
        "anonymous_id": None,
        "properties": props,
        "received_at": now,
    }


def event_key(event: dict[str, Any]) -> bytes:
    return f"{event['source']}\x1f{event['user_id']}".encode()


def make_event(
    rng: random.Random, i: int, now: datetime, run: str, behind: float = 0.0
) -> tuple[bytes, bytes]:
    """Key and value (the envelope, orjson) of `build_event`."""
    event = build_event(rng, i, now, run, behind)
    return event_key(event), orjson.dumps(event, option=orjson.OPT_UTC_Z)


def _field(name: str, kind: str, optional: bool, logical: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"field": name, "type": kind, "optional": optional}
    if logical:
        spec |= {"name": logical, "version": 1}
    return spec


# The peer's encoding: Kafka Connect's JsonConverter with schemas.enable=true, a flat struct
# of the envelope and every property the workload's events carry. The times are Debezium's
# ZonedTimestamp (ISO-8601 text), which the JDBC sink stores as timestamptz.
ZONED = "io.debezium.time.ZonedTimestamp"
EVENT_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "name": "pacekeeper.Event",
    "optional": False,
    "fields": [
        _field("id", "string", False),
        _field("type", "string", False),
        _field("source", "string", False),
        _field("time", "string", False, ZONED),
        _field("user_id", "string", True),
        _field("anonymous_id", "string", True),
        _field("channel", "string", True),
        _field("revenue", "double", True),
        _field("score", "int32", True),
        _field("followers", "int64", True),
        _field("received_at", "string", False, ZONED),
    ],
}
_SCHEMA_PREFIX = b'{"schema":' + orjson.dumps(EVENT_SCHEMA) + b',"payload":'


def connect_value(event: dict[str, Any]) -> bytes:
    """The event as JsonConverter reads it with schemas.enable=true."""
    props = event["properties"]
    payload = {
        "id": event["id"],
        "type": event["type"],
        "source": event["source"],
        "time": event["time"],
        "user_id": event["user_id"],
        "anonymous_id": event["anonymous_id"],
        "channel": props.get("channel"),
        "revenue": props.get("revenue"),
        "score": props.get("score"),
        "followers": props.get("followers"),
        "received_at": event["received_at"],
    }
    return _SCHEMA_PREFIX + orjson.dumps(payload, option=orjson.OPT_UTC_Z) + b"}"


async def preload(
    topic: str,
    n: int,
    run: str,
    now: datetime,
    progress: Progress,
    *,
    connect: bool = False,
) -> float:
    """Produce the workload's N events (the same ones for the same run and now): as the
    envelope, or with `connect` as JsonConverter's JSON with schema."""
    rng = random.Random(1)
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type="gzip",
    )
    await producer.start()
    task = progress.add_task(escape(f"producing to {topic}"), total=n)
    started = time.perf_counter()
    try:
        pending = []
        for i in range(n):
            # A busy product's last hour, in order but for 30 s of jitter.
            event = build_event(rng, i, now, run, behind=3600 * (1 - i / n))
            value = (
                connect_value(event) if connect else orjson.dumps(event, option=orjson.OPT_UTC_Z)
            )
            pending.append(await producer.send(topic, value=value, key=event_key(event)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
                progress.update(task, completed=i + 1)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
        progress.remove_task(task)
    return time.perf_counter() - started


async def raw_consumer_rate(topic: str, n: int) -> float:
    """Read + orjson-decode every message of the topic; events/s."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        seen = 0
        started = time.perf_counter()
        while seen < n:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def consumed(conn: psycopg.Connection[Any], group: str) -> int:
    row = conn.execute(
        "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = %s", (group,)
    ).fetchone()
    return int(row[0]) if row else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def freshness(
    topic: str, conn: psycopg.Connection[Any], seconds: float, rate: int, run: str
) -> list[float]:
    rng = random.Random(2)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5)
    await producer.start()
    sent_at: list[float] = []
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    latencies: list[float] = []
    stop = asyncio.Event()

    async def load() -> None:
        i, tick = 0, 0.1
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            now = datetime.now(UTC)
            for _ in range(int(rate * tick) - 1):
                key, value = make_event(rng, i, now, f"{run}-fresh")
                await producer.send(topic, value=value, key=key)
                i += 1
            probe = {
                "id": f"{run}-probe-{len(sent_at)}",
                "type": "bench_probe",
                "source": "bench",
                "time": now,
                "received_at": now,
                "properties": {},
            }
            sent_at.append(time.perf_counter())
            await producer.send(
                topic, value=orjson.dumps(probe, option=orjson.OPT_UTC_Z), key=b"probe"
            )
            await asyncio.sleep(max(0.0, started + len(sent_at) * tick - time.perf_counter()))
        stop.set()

    async def poll() -> None:
        counted = 0
        while not (stop.is_set() and counted >= len(sent_at)):
            row = conn.execute(
                "SELECT kpi_value('probe_count', %s, now() + interval '1 minute')", (t0,)
            ).fetchone()
            visible = int(row[0]) if row and row[0] is not None else 0
            now = time.perf_counter()
            while counted < min(visible, len(sent_at)):
                latencies.append(now - sent_at[counted])
                counted += 1
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(asyncio.gather(load(), poll()), timeout=seconds + 60)
    finally:
        await producer.stop()
    return latencies


def plain_database(name: str) -> str:
    """A database without the timescaledb extension (template0), for the plain layout."""
    with psycopg.connect(libpq(DATABASE_URL), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return make_url(DATABASE_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    with psycopg.connect(libpq(DATABASE_URL), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def progress_bar(console: Console) -> Progress:
    """A progress bar on a terminal; nothing in a log (no blank line either)."""
    return Progress(console=console, transient=True, disable=not console.is_terminal)


async def measure(
    storage: str,
    database_url: str,
    args: argparse.Namespace,
    workload: tuple[str, datetime],
    console: Console,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    schema, group = f"bench_{run}", f"bench-{run}"
    topic = f"bench.{run}.events.v1"
    settings = BaseServiceSettings(database_url=database_url, database_schema=schema)
    upgrade(settings)
    layout = database_status(settings).summary()
    say = console.print
    say(f"[{storage}] {layout}", markup=False, highlight=False)
    await ensure_topics(
        settings, {topic: PARTITIONS, f"{topic}.dlq": 1, f"{topic}.updates": PARTITIONS}
    )
    adapter: TypeAdapter[Any] = TypeAdapter(KpiSpec)
    conn = psycopg.connect(
        libpq(database_url), autocommit=True, options=f"-c search_path={schema},public"
    )
    for d in KPIS:
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES (%s, %s)",
            (d["name"], orjson.dumps(spec_json(adapter.validate_python(d))).decode()),
        )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        say(f"[{storage}] preloading {args.events:,} events into {topic} …", markup=False)
        with progress_bar(console) as progress:
            produce_s = await preload(topic, args.events, *workload, progress)
        say(f"[{storage}]   produced in {produce_s:.1f} s", markup=False)
        raw_rate = await raw_consumer_rate(topic, args.events)
        say(
            f"[{storage}] raw consumer (read + orjson decode): {raw_rate:,.0f} events/s",
            markup=False,
        )

        env = {
            **os.environ,
            "PACEKEEPER_DATABASE_URL": database_url,
            "PACEKEEPER_DATABASE_SCHEMA": schema,
            "PACEKEEPER_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "PACEKEEPER_EVENTS_TOPIC": topic,
            "PACEKEEPER_DLQ_TOPIC": f"{topic}.dlq",
            "PACEKEEPER_KPI_UPDATES_TOPIC": f"{topic}.updates",
            "PACEKEEPER_AGGREGATOR_GROUP_ID": group,
            "PACEKEEPER_AGGREGATOR_HEALTH_PORT": "0",
            "PACEKEEPER_LOG_LEVEL": "WARNING",
        }
        procs = [
            subprocess.Popen(  # noqa: ASYNC220  # started once; nothing else runs yet
                [sys.executable, "-m", "services.aggregator.main"], cwd=REPO, env=env
            )
            for _ in range(args.processes)
        ]
        samples: list[tuple[float, int, float]] = []
        deadline = time.perf_counter() + 900
        with progress_bar(console) as progress:
            task = progress.add_task(escape(f"[{storage}] aggregator"), total=args.events)
            while time.perf_counter() < deadline:
                done = consumed(conn, group)
                cpu = sum(kafka_connect.cpu_seconds(p.pid) for p in procs if p.poll() is None)
                samples.append((time.perf_counter(), done, cpu))
                progress.update(task, completed=done)
                if done >= args.events:
                    break
                await asyncio.sleep(0.25)
        moving = [(t, c, cpu) for t, c, cpu in samples if c > 0]
        (t_first, c_first, cpu_first), (t_last, c_last, cpu_last) = moving[0], moving[-1]
        agg_rate = (c_last - c_first) / (t_last - t_first)
        # CPU time of the aggregator process(es) over the same interval, per 1,000 events:
        # the figure the peer reports for its worker JVM.
        cpu_per_1000 = (cpu_last - cpu_first) * 1e6 / (c_last - c_first)
        say(
            f"[{storage}] aggregator x{args.processes} (20 KPIs, exactly-once): "
            f"{agg_rate:,.0f} events/s = {agg_rate / raw_rate:.0%} of raw; "
            f"{cpu_per_1000:.1f} CPU ms per 1,000 events",
            markup=False,
        )

        latencies = await freshness(topic, conn, args.freshness_seconds, args.freshness_rate, run)
        fresh = {
            "p50_s": round(percentile(latencies, 0.50), 3),
            "p95_s": round(percentile(latencies, 0.95), 3),
            "p99_s": round(percentile(latencies, 0.99), 3),
            "probes": len(latencies),
        }
        say(
            f"[{storage}] freshness at {args.freshness_rate:,} events/s: p50 {fresh['p50_s']} s,"
            f" p95 {fresh['p95_s']} s, p99 {fresh['p99_s']} s",
            markup=False,
        )
        return {
            "layout": layout,
            "raw_consumer_events_per_s": round(raw_rate),
            "aggregator_events_per_s": round(agg_rate),
            "ratio_to_raw": round(agg_rate / raw_rate, 3),
            "aggregator_cpu_ms_per_1000_events": round(cpu_per_1000, 1),
            "freshness": {"rate_events_per_s": args.freshness_rate, **fresh},
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        conn.close()
        drop_schemas(settings, schema)


async def delete_topics(*topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    finally:
        await admin.close()


def reporter(progress: Progress, task: TaskID) -> Callable[[int], None]:
    """A callback that moves `task` to the rows counted so far (from a worker thread)."""
    return lambda rows: progress.update(task, completed=rows)


async def measure_peer(
    install: kafka_connect.Install,
    configs: list[kafka_connect.SinkConfig],
    args: argparse.Namespace,
    workload: tuple[str, datetime],
    console: Console,
) -> list[dict[str, Any]]:
    """The same events as JSON with schema in their own topic, then each sink configuration
    in a fresh Connect worker, into its own table of a throw-away schema."""
    run = uuid.uuid4().hex[:8]
    topic, schema = f"bench.{run}.connect.v1", f"bench_{run}_sink"
    db = kafka_connect.Jdbc.from_url(DATABASE_URL)
    say = console.print
    await ensure_topics(BaseServiceSettings(database_url=DATABASE_URL), {topic: PARTITIONS})
    workroot = Path(tempfile.mkdtemp(prefix=f"pacekeeper-connect-{run}-"))
    with psycopg.connect(libpq(DATABASE_URL), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    runs: list[dict[str, Any]] = []
    failed = False
    try:
        say(
            f"[peer] preloading the same {args.events:,} events as JSON with schema into {topic} …",
            markup=False,
        )
        with progress_bar(console) as progress:
            produce_s = await preload(topic, args.events, *workload, progress, connect=True)
        say(f"[peer]   produced in {produce_s:.1f} s", markup=False)
        for config in configs:
            name = f"pk-bench-{run}-{config.label}"
            table = f"{schema}.events_{config.label.replace('-', '_')}"
            with progress_bar(console) as progress:
                task = progress.add_task(escape(f"[peer] {config.describe()}"), total=args.events)
                load = load_average()
                try:
                    figures = await asyncio.to_thread(
                        kafka_connect.run_sink,
                        install,
                        config,
                        bootstrap=BOOTSTRAP,
                        topic=topic,
                        events=args.events,
                        db=db,
                        table=table,
                        workdir=workroot / config.label,
                        name=name,
                        progress=reporter(progress, task),
                        timeout_s=args.peer_timeout,
                    )
                except kafka_connect.ConnectError as error:
                    failed = True
                    say(f"[peer] {config.describe()}: failed: {error}", markup=False)
                    runs.append(
                        {
                            "config": config.label,
                            "description": config.describe(),
                            "error": str(error),
                        }
                    )
                    continue
            runs.append({**figures, "load_average_before": load})
            say(
                f"[peer] Kafka Connect + Debezium JDBC sink, {config.describe()}: "
                f"{figures['events_per_s']:,} events/s "
                f"({figures['events_per_s_from_running']:,} from RUNNING)",
                markup=False,
            )
        return runs
    finally:
        with psycopg.connect(libpq(DATABASE_URL), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await delete_topics(topic)
        if failed:
            say(f"[peer] Connect logs kept in {workroot}", markup=False)
        else:
            shutil.rmtree(workroot, ignore_errors=True)


def peer_section(
    runs: dict[str, dict[str, Any]], peer: list[dict[str, Any]], console: Console
) -> dict[str, Any]:
    """The peer's figures, its best configuration, and the aggregator against it."""
    section: dict[str, Any] = {
        "name": (
            f"Kafka Connect {kafka_connect.CONNECT_VERSION} standalone + Debezium JDBC sink "
            f"{kafka_connect.DEBEZIUM_JDBC.split(':')[2]}"
        ),
        "encoding": "JsonConverter, schemas.enable=true (a flat struct per event)",
        "writes": "one row per event, at-least-once, into its own table in the pacekeeper db",
        "measured": "rows visible per second, first poll with rows to the poll with all",
        "configs": peer,
    }
    ok = [r for r in peer if "events_per_s" in r]
    table = Table(title="Kafka Connect + Debezium JDBC sink, same events")
    table.add_column("configuration")
    table.add_column("events/s", justify="right")
    table.add_column("from RUNNING", justify="right")
    table.add_column("worker CPU ms / 1,000 events", justify="right")
    for r in peer:
        table.add_row(
            escape(r["description"]),
            f"{r['events_per_s']:,}" if "events_per_s" in r else "failed",
            f"{r['events_per_s_from_running']:,}" if "events_per_s" in r else "",
            f"{r['worker_cpu_ms_per_1000_events']}" if "events_per_s" in r else "",
        )
    console.print(table)
    if not ok:
        return section
    best = max(ok, key=lambda r: r["events_per_s"])
    section["best"] = {
        "config": best["config"],
        "description": best["description"],
        "events_per_s": best["events_per_s"],
    }
    for storage, figures in runs.items():
        ratio = figures["aggregator_events_per_s"] / best["events_per_s"]
        section[f"aggregator_{storage}_to_best"] = round(ratio, 2)
        console.print(
            f"Pacekeeper aggregator ({storage}, 20 KPIs, exactly-once): "
            f"{figures['aggregator_events_per_s']:,} events/s; "
            f"sink's best ({best['description']}): {best['events_per_s']:,} events/s; "
            f"ratio {ratio:.2f}",
            markup=False,
            highlight=False,
        )
    return section


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--freshness-seconds", type=float, default=20.0)
    parser.add_argument("--freshness-rate", type=int, default=5000)
    parser.add_argument(
        "--processes", type=int, default=1, help="aggregator processes sharing the partitions"
    )
    parser.add_argument(
        "--storage", default="timescaledb,plain", help="comma-separated: timescaledb, plain"
    )
    parser.add_argument(
        "--peer",
        default=",".join(PEER_CONFIGS),
        help="comma-separated sink configurations, MODE-tTASKS-bBATCH[-unnest][-rewrite]"
        "[-parallelgc] (MODE insert or upsert); default: %(default)s",
    )
    parser.add_argument("--no-peer", action="store_true", help="measure no Kafka Connect sink")
    parser.add_argument(
        "--peer-timeout", type=float, default=900.0, help="seconds per sink configuration"
    )
    args = parser.parse_args()
    storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    for storage in storages:
        if storage not in ("timescaledb", "plain"):
            parser.error(f"unknown storage {storage!r}")
    configs: list[kafka_connect.SinkConfig] = []
    if not args.no_peer:
        try:
            configs = [kafka_connect.SinkConfig.parse(s) for s in args.peer.split(",") if s]
        except ValueError as error:
            parser.error(f"--peer: {error}")
    console = Console(width=None if sys.stdout.isatty() else 120)
    install = None
    if configs:
        try:
            install = kafka_connect.fetch(say=console.print)
        except kafka_connect.ConnectError as error:
            console.print(f"error: {error}", markup=False, highlight=False)
            raise SystemExit(1) from None
    load_before = load_average()
    # Every topic gets the same events: the same ids, times and order.
    workload = (uuid.uuid4().hex[:8], datetime.now(UTC))
    plain_name = f"pacekeeper_bench_plain_{uuid.uuid4().hex[:6]}"
    runs: dict[str, dict[str, Any]] = {}
    peer: list[dict[str, Any]] = []
    try:
        for storage in storages:
            url = plain_database(plain_name) if storage == "plain" else DATABASE_URL
            runs[storage] = await measure(storage, url, args, workload, console)
        if install is not None:
            peer = await measure_peer(install, configs, args, workload, console)
    finally:
        if "plain" in storages:
            drop_database(plain_name)
    result: dict[str, Any] = {
        "benchmark": "aggregator",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before),
        "events": args.events,
        "kpi_definitions": len(KPIS),
        "partitions": PARTITIONS,
        "aggregator_processes": args.processes,
        "runs": runs,
        "targets": {
            "aggregator_events_per_s": 40_000,
            "freshness_p95_s": 1.0,
            "aggregator_to_peer_best": 2.0,
        },
    }
    if {"timescaledb", "plain"} <= runs.keys():
        ratio = (
            runs["timescaledb"]["aggregator_events_per_s"]
            / runs["plain"]["aggregator_events_per_s"]
        )
        result["timescaledb_to_plain"] = round(ratio, 3)
        console.print(f"hypertables / plain tables, same events and machine: {ratio:.2f}")
    if peer:
        result["peer"] = peer_section(runs, peer, console)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {RESULTS.relative_to(REPO)}", markup=False)


if __name__ == "__main__":
    asyncio.run(main())
