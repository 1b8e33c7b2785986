"""A reproducible event workload for the Kafka tests, and helpers to drive it.

Events are spread over the last few hours (so they are late relative to each other but
within the allowed lateness), a share is sent twice, and the order is shuffled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg
from aiokafka import AIOKafkaProducer

from tests.aggregator import oracle
from tests.conftest import libpq_url


def make_events(n: int, *, seed: int, base: datetime, span: timedelta) -> list[oracle.Raw]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = rng.choice(["order", "order", "view", "view", "view", "signup", "survey"])
        props: dict[str, Any] = {}
        if rng.random() < 0.7:
            props["channel"] = rng.choice(["seo", "ads", "mail"])
        if kind == "order":
            props["revenue"] = rng.randrange(0, 400) / 2
        if kind == "survey":
            props["score"] = rng.randrange(0, 6)
        offset = timedelta(milliseconds=rng.randrange(int(span.total_seconds() * 1000)))
        out.append(
            oracle.Raw(
                source=rng.choice(["web", "app"]),
                id=f"{seed}-{i}",
                type=kind,
                time=base + offset,
                user_id=rng.choice([None, *(f"u{k}" for k in range(40))]),
                anonymous_id=rng.choice([None, "a1", "a2"]),
                properties=props,
            )
        )
    return out


def deliveries(events: Sequence[oracle.Raw], *, seed: int, repeat: float = 0.2) -> list[oracle.Raw]:
    rng = random.Random(seed + 1)
    stream = list(events) + [e for e in events if rng.random() < repeat]
    rng.shuffle(stream)
    return stream


def key(e: oracle.Raw) -> bytes:
    return f"{e.source}\x1f{e.actor or e.id}".encode()


def value(e: oracle.Raw, received_at: datetime | None = None) -> bytes:
    return orjson.dumps(
        {
            "id": e.id,
            "type": e.type,
            "source": e.source,
            "time": e.time,
            "user_id": e.user_id,
            "anonymous_id": e.anonymous_id,
            "properties": e.properties,
            "received_at": received_at or datetime.now(UTC),
        },
        option=orjson.OPT_UTC_Z,
    )


async def produce(
    bootstrap: str, topic: str, stream: Sequence[oracle.Raw], *, rate: float | None = None
) -> None:
    """Send every event (acks=all); with `rate`, spread them at about that many per second."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        chunk = 200
        for start in range(0, len(stream), chunk):
            futures = [
                await producer.send(topic, value=value(e), key=key(e))
                for e in stream[start : start + chunk]
            ]
            await asyncio.gather(*futures)
            if rate:
                await asyncio.sleep(chunk / rate)
    finally:
        await producer.stop()


def consumed(database_url: str, schema: str, group_id: str, topic: str) -> int:
    """Messages the aggregator has committed, over all partitions."""
    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets"
            " WHERE group_id = %s AND topic = %s",
            (group_id, topic),
        ).fetchone()
    return int(row[0]) if row else 0


async def wait_consumed(
    database_url: str, schema: str, group_id: str, topic: str, total: int, within: float
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while consumed(database_url, schema, group_id, topic) < total:
        if loop.time() > deadline:
            raise AssertionError(
                f"only {consumed(database_url, schema, group_id, topic)} of {total} consumed"
            )
        await asyncio.sleep(0.2)


def sql_value(
    database_url: str, schema: str, kpi: str, lo: datetime, hi: datetime, dims: Any = None
) -> float | None:
    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as conn:
        row = conn.execute(
            "SELECT kpi_value(%s, %s, %s, %s::jsonb)",
            (kpi, lo, hi, None if dims is None else orjson.dumps(dims).decode()),
        ).fetchone()
    return None if row is None else row[0]


def assert_all_kpis_exact(
    database_url: str,
    schema: str,
    truth: Sequence[oracle.Raw],
    windows: Sequence[tuple[datetime, datetime]],
) -> int:
    """Every KPI (and every declared dims filter) over each window equals the oracle."""
    checked = 0
    zone = ZoneInfo("UTC")
    for name in sorted(oracle.SPECS):
        for dims in oracle.DIM_CHOICES.get(name, [None]):
            for lo, hi in windows:
                expected = oracle.value(name, truth, lo, hi, dims, zone)
                actual = sql_value(database_url, schema, name, lo, hi, dims)
                oracle.assert_matches(name, dims, lo, hi, actual, expected)
                checked += 1
    return checked


def minutes_not_announced(
    database_url: str, schema: str, updates: Sequence[bytes]
) -> list[tuple[str, datetime]]:
    """(kpi, minute) pairs holding state that no kpi-updates message covers: a reader
    evaluating only on those messages would never have looked at them."""
    announced: dict[str, list[tuple[datetime, datetime]]] = {}
    for raw in updates:
        doc = orjson.loads(raw)
        announced.setdefault(doc["kpi"], []).append(
            (datetime.fromisoformat(doc["from"]), datetime.fromisoformat(doc["to"]))
        )
    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as conn:
        stored = conn.execute(
            "SELECT kpi, bucket FROM kpi_points UNION SELECT kpi, bucket FROM kpi_distinct"
        ).fetchall()
    return sorted(
        (kpi, minute)
        for kpi, minute in stored
        if not any(lo <= minute < hi for lo, hi in announced.get(kpi, ()))
    )


def queued_updates(database_url: str, schema: str) -> int:
    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as conn:
        row = conn.execute("SELECT count(*) FROM kpi_update_outbox").fetchone()
    return int(row[0]) if row else 0
