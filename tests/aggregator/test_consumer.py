"""The consumer refuses a batch read ahead of a seek, on the real broker.

Found by the restore crash test (one CI run in six lost a partition's events): after the
database lost every commit, the consumer went back to the beginning of a partition, but
the batch it had read ahead, continuing the lost position, still passed `in_order` and
was written — with the offsets after it, so the events before it were never counted.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from services.aggregator.consumer import EventConsumer
from services.aggregator.repository import StoredOffset
from services.aggregator.settings import AggregatorSettings
from shared.kafka import ensure_topics
from tests.conftest import Topics, settings_from_env

pytestmark = pytest.mark.integration


async def _no_stored_offsets(partitions: object) -> dict[int, StoredOffset]:
    return {}


async def test_a_batch_read_before_going_back_to_the_beginning_is_refused(
    service_env: dict[str, str], topics: Topics, unique: str, kafka_bootstrap: str
) -> None:
    settings = settings_from_env(AggregatorSettings, service_env, aggregator_group_id=unique)
    await ensure_topics(settings, {topics.events: 1})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait(topics.events, f"{i}".encode(), partition=0)
    finally:
        await producer.stop()

    consumer = EventConsumer(settings, _no_stored_offsets)
    await consumer.start()
    try:
        records = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(records) < 20 and asyncio.get_running_loop().time() < deadline:
            records += await consumer.collect(20 - len(records), 0.5)
        assert [r.offset for r in records] == list(range(20))
        async with consumer.lock:
            # The first ten are committed; the next ten were read ahead meanwhile.
            consumer.committed({0: 10}, {})
            seeks = consumer.seeks
            ahead = records[10:]
            assert consumer.in_order(ahead, seeks)
            # The database turns out to hold no offsets at all (a restore): start over.
            await consumer.resume_from({0: None})
            assert not consumer.in_order(ahead, seeks)
            await consumer.rewind(ahead)
        again = await consumer.collect(20, 2.0)
        assert [r.offset for r in again][:1] == [0]
    finally:
        await consumer.stop()
