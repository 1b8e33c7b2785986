"""KPI definitions change under a running aggregator: picked up without a restart, and a
backfill running alongside the consumer counts every event exactly once. Also the
cardinality guard against the database."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from services.aggregator.backfill import backfill, chunks
from tests.aggregator import oracle, workload
from tests.aggregator.conftest import settings_from
from tests.aggregator.helpers import running, store_kpis
from tests.conftest import Topics


@pytest.mark.integration
async def test_new_kpi_is_applied_live_and_backfilled_without_double_counting(
    service_env: dict[str, str],
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
    schema: str,
) -> None:
    await store_kpis(service_env, oracle.DEFINITIONS[0])  # only `orders` at first
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    events = workload.make_events(
        3000, seed=21, base=now - timedelta(hours=2), span=timedelta(hours=2)
    )
    first, second = events[:1500], events[1500:]
    settings = settings_from(
        service_env,
        aggregator_group_id=unique,
        aggregator_topic_partitions=3,
        aggregator_batch_max_wait=0.05,
        aggregator_batch_max_events=200,
    )
    async with running(settings) as aggregator:
        await workload.produce(kafka_bootstrap, topics.events, first)
        await workload.wait_consumed(database_url, schema, unique, topics.events, 1500, within=30)
        await store_kpis(
            service_env,
            *(
                d
                for d in oracle.DEFINITIONS
                if d["name"] in ("revenue", "visitors", "view_to_order")
            ),
        )
        # Hot reload: the running aggregator hears the change (LISTEN/NOTIFY).
        for _ in range(50):
            if "revenue" in aggregator.definitions.catalog.specs:
                break
            await asyncio.sleep(0.1)
        assert "revenue" in aggregator.definitions.catalog.specs
        # Backfill the new KPIs while the rest of the stream is being consumed.
        producing = asyncio.create_task(
            workload.produce(kafka_bootstrap, topics.events, second, rate=3000)
        )
        for name in ("revenue", "visitors", "view_to_order"):
            await backfill(
                settings,
                name,
                now - timedelta(days=1),
                now + timedelta(hours=1),
                chunk=timedelta(minutes=30),
            )
        await producing
        await workload.wait_consumed(database_url, schema, unique, topics.events, 3000, within=30)
    zone = oracle.ZoneInfo("UTC")
    for name, dims in (
        ("revenue", None),
        ("revenue", {"source": "web"}),
        ("visitors", None),
        ("view_to_order", None),
    ):
        for lo, hi in (
            (now - timedelta(days=1), now + timedelta(hours=1)),
            (now - timedelta(minutes=77), now - timedelta(minutes=10)),
        ):
            expected = oracle.value(name, events, lo, hi, dims, zone)
            assert oracle.close(
                workload.sql_value(database_url, schema, name, lo, hi, dims), expected
            ), (name, dims)


@pytest.mark.integration
async def test_cardinality_guard_folds_values_past_the_limit(
    service_env: dict[str, str],
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
    schema: str,
) -> None:
    await store_kpis(
        service_env,
        {
            "name": "orders",
            "kind": "count",
            "event": "order",
            "dimensions": ["properties.channel"],
            "max_cardinality": 2,
        },
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    events = [
        oracle.Raw(
            "web", f"e{i}", "order", now - timedelta(minutes=5), f"u{i}", None, {"channel": ch}
        )
        for i, ch in enumerate(["seo", "seo", "ads", "mail", "mail", "mail"])
    ]
    settings = settings_from(service_env, aggregator_group_id=unique, aggregator_topic_partitions=1)
    async with running(settings):
        await workload.produce(kafka_bootstrap, topics.events, events)
        await workload.wait_consumed(database_url, schema, unique, topics.events, 6, within=30)
    lo, hi = now - timedelta(hours=1), now
    value = lambda dims: workload.sql_value(database_url, schema, "orders", lo, hi, dims)  # noqa: E731
    assert value(None) == 6
    assert value({"properties.channel": "seo"}) == 2
    assert value({"properties.channel": "ads"}) == 1
    assert value({"properties.channel": "__other__"}) == 3


@pytest.mark.unit
def test_backfill_chunks_are_aligned_and_cover_the_range() -> None:
    t0 = datetime(2026, 11, 27, 10, 7, tzinfo=UTC)
    plan = chunks(t0, t0 + timedelta(hours=2), timedelta(hours=1))
    assert plan[0][0] == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert plan[-1][1] == datetime(2026, 11, 27, 12, 15, tzinfo=UTC)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
