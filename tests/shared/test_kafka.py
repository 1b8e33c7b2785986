"""The broker is real: produce and consume through our aiokafka factories on a fresh topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from shared.events import Envelope, decode, encode, message_key
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.settings import BaseServiceSettings
from tests.conftest import Topics

pytestmark = pytest.mark.integration


def envelope(i: int) -> Envelope:
    return Envelope(
        id=f"e-{i}",
        type="page_viewed",
        source="web-shop",
        time=datetime(2026, 11, 27, 10, i % 60, tzinfo=UTC),
        user_id=f"u-{i % 7}",
        properties={"path": f"/p/{i}"},
        received_at=datetime(2026, 11, 27, 10, 30, tzinfo=UTC),
    )


async def test_produce_then_consume_round_trip(
    settings: BaseServiceSettings, topics: Topics, unique: str
) -> None:
    await ensure_topics(settings, {topics.events: 3})
    await ensure_topics(settings, {topics.events: 3})  # idempotent
    sent = [envelope(i) for i in range(200)]
    producer = make_producer(settings, client_id=f"{unique}-producer")
    await producer.start()
    try:
        acks = await asyncio.gather(
            *[await producer.send(topics.events, encode(e), key=message_key(e)) for e in sent]
        )
    finally:
        await producer.stop()
    assert {a.topic for a in acks} == {topics.events}
    assert len({a.partition for a in acks}) > 1, "keys should spread over the 3 partitions"

    consumer = make_consumer(settings, topics.events, group_id=f"{unique}-g", client_id=unique)
    await consumer.start()
    received: dict[str, tuple[bytes, int]] = {}
    try:
        async with asyncio.timeout(30):
            while len(received) < len(sent):
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        assert record.value is not None
                        assert record.key is not None
                        event = decode(record.value)
                        received[event.id] = (record.key, record.partition)
    finally:
        await consumer.stop()
    assert set(received) == {e.id for e in sent}
    # One user's events share a key, hence a partition: per-user order is kept.
    by_user: dict[bytes, set[int]] = {}
    for key, partition in received.values():
        by_user.setdefault(key, set()).add(partition)
    assert all(len(partitions) == 1 for partitions in by_user.values())
