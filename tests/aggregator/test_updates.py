"""kpi-updates go through an outbox: the changed ranges commit with the batch that changed
them and a relay sends them afterwards. What a crash right after the commit leaves behind
(ranges committed, nothing sent) is what `BatchWriter.write` alone leaves; these tests
start from that state, on the real database and broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.aggregator.batch import Batch
from services.aggregator.definitions import Definitions
from services.aggregator.guard import CardinalityGuard
from services.aggregator.settings import AggregatorSettings
from services.aggregator.updates import UpdateRelay
from services.aggregator.writer import BatchWriter
from shared.db import make_engine, make_sessionmaker
from shared.kafka import ensure_topics, make_producer
from tests.aggregator import oracle, workload
from tests.aggregator.strategies import to_event
from tests.conftest import Topics, read_messages, settings_from_env

pytestmark = pytest.mark.integration


@dataclass
class Committed:
    """A schema where two batches committed and their process died before announcing them."""

    settings: AggregatorSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    topic: str
    queued: int

    def producer(self) -> AIOKafkaProducer:
        return make_producer(self.settings, client_id="test-relay")

    @property
    def where(self) -> tuple[str, str]:
        """Database URL and schema, as the workload helpers take them."""
        return self.settings.database_url.get_secret_value(), self.settings.database_schema

    def still_queued(self) -> int:
        return workload.queued_updates(*self.where)


@pytest.fixture
async def committed(
    service_env: dict[str, str], definitions_stored: None, topics: Topics
) -> AsyncIterator[Committed]:
    settings = settings_from_env(AggregatorSettings, service_env)
    await ensure_topics(settings, {topics.kpi_updates: 2})
    engine = make_engine(settings, application_name="test")
    sessions = make_sessionmaker(engine)
    writer = BatchWriter(
        sessions, Definitions(), CardinalityGuard(), group_id="g", topic="t",
        watermark_delay_us=60_000_000,
    )  # fmt: skip
    now = datetime.now(UTC)
    raw = oracle.dedupe(
        workload.make_events(400, seed=4, base=now - timedelta(hours=2), span=timedelta(hours=2))
    )
    # Two batches, so the queue holds rows of the same KPIs twice.
    half = len(raw) // 2
    await writer.write(Batch(events=[to_event(e) for e in raw[:half]], next_offsets={0: half}))
    await writer.write(Batch(events=[to_event(e) for e in raw[half:]], next_offsets={0: len(raw)}))
    state = Committed(settings, engine, sessions, topics.kpi_updates, 0)
    state.queued = state.still_queued()
    try:
        yield state
    finally:
        await engine.dispose()


async def test_ranges_committed_but_never_sent_go_out_from_the_next_relay(
    committed: Committed, kafka_bootstrap: str
) -> None:
    assert committed.queued > 0
    assert await read_messages(kafka_bootstrap, committed.topic) == []
    producer = committed.producer()
    await producer.start()
    try:
        relay = UpdateRelay(committed.sessions, producer, committed.topic)
        await relay.drain()
        sent = await read_messages(kafka_bootstrap, committed.topic, at_least=1)
        values = [value for _key, value, _headers in sent]
        assert workload.minutes_not_announced(*committed.where, values) == []
        assert all(key == orjson.loads(value)["kpi"].encode() for key, value, _h in sent)
        # Rows of one KPI from both batches went out as one message.
        kpis = [orjson.loads(value)["kpi"] for value in values]
        assert len(kpis) == len(set(kpis)) < committed.queued
        assert committed.still_queued() == 0

        await relay.drain()  # nothing left: nothing sent again
        assert len(await read_messages(kafka_bootstrap, committed.topic)) == len(sent)
    finally:
        await producer.stop()


async def test_a_send_that_fails_leaves_the_ranges_queued(
    committed: Committed, kafka_bootstrap: str
) -> None:
    broken = committed.producer()
    await broken.start()
    await broken.stop()  # its sends now fail or never finish, as with a broker out of reach
    with pytest.raises((KafkaError, TimeoutError)):
        await UpdateRelay(committed.sessions, broken, committed.topic, timeout=2).flush()
    assert committed.still_queued() == committed.queued
    assert await read_messages(kafka_bootstrap, committed.topic) == []

    producer = committed.producer()
    await producer.start()
    try:
        await UpdateRelay(committed.sessions, producer, committed.topic).drain()
    finally:
        await producer.stop()
    assert committed.still_queued() == 0
    values = [value for _k, value, _h in await read_messages(kafka_bootstrap, committed.topic, 1)]
    assert workload.minutes_not_announced(*committed.where, values) == []


async def test_relays_of_two_processes_send_each_queued_range_once(
    committed: Committed, kafka_bootstrap: str
) -> None:
    producer = committed.producer()
    await producer.start()
    try:
        # One row per round: every message is exactly one queued row.
        relays = [
            UpdateRelay(committed.sessions, producer, committed.topic, limit=1) for _ in range(2)
        ]
        await asyncio.gather(*(relay.drain() for relay in relays))
    finally:
        await producer.stop()
    sent = await read_messages(kafka_bootstrap, committed.topic, at_least=committed.queued)
    assert len(sent) == committed.queued
    assert committed.still_queued() == 0


class _FailsOnce(UpdateRelay):
    """The relay's loop around a round that raises something unforeseen, then works."""

    def __init__(self, error: Exception) -> None:
        super().__init__(None, None, "unused", interval=0.05)  # type: ignore[arg-type]
        self.error: Exception | None = error
        self.rounds: list[str] = []
        self.drained = asyncio.Event()

    async def flush(self) -> int:
        if self.error is not None:
            error, self.error = self.error, None
            self.rounds.append("failed")
            raise error
        self.rounds.append("drained")
        self.drained.set()
        return 0


@pytest.mark.unit
@pytest.mark.parametrize("error", [ValueError("bad"), KafkaError("down"), OSError("reset")])
async def test_the_relay_keeps_going_after_a_failed_round(error: Exception) -> None:
    relay = _FailsOnce(error)
    running = asyncio.create_task(relay.run(asyncio.Event()))
    try:
        await asyncio.wait_for(relay.drained.wait(), timeout=5)
    finally:
        running.cancel()
    # The failed round did not end the loop: it tried again, and the next round worked.
    assert relay.rounds[:2] == ["failed", "drained"]
