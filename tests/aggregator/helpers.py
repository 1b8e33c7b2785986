"""Helpers shared by the aggregator's database tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.service import Aggregator
from services.aggregator.settings import AggregatorSettings
from shared.config.kpis import KpiSpec
from shared.config.store import set_setting, upsert_spec

T = TypeVar("T")
STATE_TABLES = (
    "events",
    "event_dedupe",
    "kpi_points",
    "kpi_distinct",
    "kpi_funnel_steps",
    "kpi_retention_cohorts",
    "kpi_retention_returns",
    "kpi_dimension_values",
    "consumer_offsets",
)


Message = tuple[bytes | None, bytes, dict[str, bytes]]  # key, value, headers


async def read_all(bootstrap: str, topic: str, at_least: int = 0) -> list[Message]:
    """Every message on the topic up to its end, waiting (15 s at most) for `at_least`."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Message] = []
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            partitions = list(consumer.assignment())  # all of them: no group, no rebalance
            if partitions and len(out) >= at_least:
                end = await consumer.end_offsets(partitions)
                if all([await consumer.position(tp) >= end[tp] for tp in partitions]):
                    break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{topic}: {len(out)} messages read, {at_least} expected, end not reached"
                )
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend((r.key, r.value, dict(r.headers)) for r in records)
    finally:
        await consumer.stop()
    return out


def run_isolated(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop in its own thread (for sync hypothesis tests)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def store_definitions(
    session: AsyncSession, specs: Iterable[KpiSpec], timezone: str = "UTC"
) -> None:
    for spec in specs:
        await upsert_spec(session, "kpis", spec)
    await set_setting(session, "timezone", timezone)


@contextlib.asynccontextmanager
async def running(settings: AggregatorSettings) -> AsyncIterator[Aggregator]:
    """An in-process aggregator consuming until the block ends, then stopped cleanly."""
    aggregator = Aggregator(settings)
    await aggregator.start()
    task = asyncio.create_task(aggregator.run())
    try:
        yield aggregator
    finally:
        aggregator.stopping.set()
        await asyncio.wait_for(task, timeout=15)
        await aggregator.stop()
