"""Aggregator benchmark: sustained events/s and event-to-KPI freshness, on TimescaleDB
hypertables and on plain PostgreSQL tables side by side in one run.

    .venv/bin/python bench/aggregator.py [--events 300000] [--storage timescaledb,plain]

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

Writes bench/results/aggregator.json. Needs the local Kafka and PostgreSQL (make infra-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from common import drop_schemas
from pydantic import TypeAdapter
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


def make_event(
    rng: random.Random, i: int, now: datetime, run: str, behind: float = 0.0
) -> tuple[bytes, bytes]:
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
    event = {
        "id": f"{run}-{i}",
        "type": kind,
        "source": source,
        "time": now - timedelta(seconds=behind + rng.uniform(0, 30)),
        "user_id": user,
        "anonymous_id": None,
        "properties": props,
        "received_at": now,
    }
    return f"{source}\x1f{user}".encode(), orjson.dumps(event, option=orjson.OPT_UTC_Z)


async def preload(topic: str, n: int, run: str) -> float:
    rng = random.Random(1)
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type="gzip",
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for i in range(n):
            # A busy product's last hour, in order but for 30 s of jitter.
            key, value = make_event(rng, i, now, run, behind=3600 * (1 - i / n))
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
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


async def measure(storage: str, database_url: str, args: argparse.Namespace) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    schema, group = f"bench_{run}", f"bench-{run}"
    topic = f"bench.{run}.events.v1"
    settings = BaseServiceSettings(database_url=database_url, database_schema=schema)
    upgrade(settings)
    layout = database_status(settings).summary()
    print(f"[{storage}] {layout}", flush=True)
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
        print(f"[{storage}] preloading {args.events:,} events into {topic} …", flush=True)
        produce_s = await preload(topic, args.events, run)
        print(f"[{storage}]   produced in {produce_s:.1f} s", flush=True)
        raw_rate = await raw_consumer_rate(topic, args.events)
        print(f"[{storage}] raw consumer (read + orjson decode): {raw_rate:,.0f} events/s")

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
        samples: list[tuple[float, int]] = []
        deadline = time.perf_counter() + 900
        while time.perf_counter() < deadline:
            done = consumed(conn, group)
            samples.append((time.perf_counter(), done))
            if done >= args.events:
                break
            await asyncio.sleep(0.25)
        moving = [(t, c) for t, c in samples if c > 0]
        (t_first, c_first), (t_last, c_last) = moving[0], moving[-1]
        agg_rate = (c_last - c_first) / (t_last - t_first)
        print(
            f"[{storage}] aggregator x{args.processes} (20 KPIs, exactly-once): "
            f"{agg_rate:,.0f} events/s = {agg_rate / raw_rate:.0%} of raw",
            flush=True,
        )

        latencies = await freshness(topic, conn, args.freshness_seconds, args.freshness_rate, run)
        fresh = {
            "p50_s": round(percentile(latencies, 0.50), 3),
            "p95_s": round(percentile(latencies, 0.95), 3),
            "p99_s": round(percentile(latencies, 0.99), 3),
            "probes": len(latencies),
        }
        print(
            f"[{storage}] freshness at {args.freshness_rate:,} events/s: p50 {fresh['p50_s']} s,"
            f" p95 {fresh['p95_s']} s, p99 {fresh['p99_s']} s",
            flush=True,
        )
        return {
            "layout": layout,
            "raw_consumer_events_per_s": round(raw_rate),
            "aggregator_events_per_s": round(agg_rate),
            "ratio_to_raw": round(agg_rate / raw_rate, 3),
            "freshness": {"rate_events_per_s": args.freshness_rate, **fresh},
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        conn.close()
        drop_schemas(settings, schema)


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
    args = parser.parse_args()
    storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    plain_name = f"pacekeeper_bench_plain_{uuid.uuid4().hex[:6]}"
    runs: dict[str, dict[str, Any]] = {}
    try:
        for storage in storages:
            if storage == "plain":
                runs[storage] = await measure(storage, plain_database(plain_name), args)
            elif storage == "timescaledb":
                runs[storage] = await measure(storage, DATABASE_URL, args)
            else:
                parser.error(f"unknown storage {storage!r}")
    finally:
        if "plain" in storages:
            drop_database(plain_name)
    result: dict[str, Any] = {
        "benchmark": "aggregator",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "events": args.events,
        "kpi_definitions": len(KPIS),
        "partitions": PARTITIONS,
        "aggregator_processes": args.processes,
        "runs": runs,
        "targets": {"aggregator_events_per_s": 40_000, "freshness_p95_s": 1.0},
    }
    if {"timescaledb", "plain"} <= runs.keys():
        ratio = (
            runs["timescaledb"]["aggregator_events_per_s"]
            / runs["plain"]["aggregator_events_per_s"]
        )
        result["timescaledb_to_plain"] = round(ratio, 3)
        print(f"hypertables / plain tables, same events and machine: {ratio:.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    asyncio.run(main())
