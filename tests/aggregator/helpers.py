"""Helpers shared by the aggregator's database tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.service import Aggregator
from services.aggregator.settings import AggregatorSettings
from shared.config.kpis import KpiSpec
from shared.config.store import set_setting, upsert_spec
from shared.db import make_engine, make_sessionmaker, transaction
from tests.conftest import settings_from_env

T = TypeVar("T")
_KPI: TypeAdapter[KpiSpec] = TypeAdapter(KpiSpec)
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


async def store_kpis(service_env: dict[str, str], *specs: dict[str, object]) -> None:
    """Store KPI definitions (as `pacekeeper apply` would) in the test's schema."""
    settings = settings_from_env(AggregatorSettings, service_env)
    engine = make_engine(settings, application_name="test")
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await store_definitions(session, [_KPI.validate_python(s) for s in specs])
    finally:
        await engine.dispose()


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
