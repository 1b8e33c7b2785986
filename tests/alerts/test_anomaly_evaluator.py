"""Anomaly rules through the real evaluator on PostgreSQL: KPI minutes in `kpi_points`, the
same window 1..8 weeks back read through `kpi_value`, a cycle at a chosen `now`, and what
lands in `alerts` and the outbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.alerts.evaluator import Evaluator
from tests.alerts.conftest import ApplyConfig, put_points, set_watermark
from tests.alerts.test_evaluator import Cycle, cycle, evaluator, payloads

pytestmark = pytest.mark.integration
__all__ = ["cycle", "evaluator"]  # the fixtures of test_evaluator.py, used here too

CONFIG = """
kpis:
  - {name: orders, kind: count, event: order_completed}
  - {name: basket, kind: avg, event: order_completed, field: properties.revenue}
channels:
  - {name: ops, type: webhook, url: "http://127.0.0.1:9/hook",
     group_wait: 0s, group_interval: 10s, repeat_interval: 1h}
rules:
"""
# Per past week, the orders of the rule's window: median 100, MAD 2 x 1.4826, floored at
# sqrt(100) = 10 for a count, so with k 3 the band is 70..130.
WEEKLY = [98, 100, 103, 97, 101, 99, 102, 100]


def a_minute_now() -> datetime:
    """Now, on a whole minute plus 30 s (points land well inside the windows)."""
    return datetime.now(UTC).replace(second=30, microsecond=0)


def seed_weeks(
    db: psycopg.Connection[Any],
    kpi: str,
    now: datetime,
    values: list[float],
    *,
    before: timedelta = timedelta(minutes=5),
    total: float | None = None,
) -> None:
    """One minute holding a week's value, `before` ahead of `now`, 1..len(values) weeks back."""
    for n, value in enumerate(values, start=1):
        at = now - timedelta(weeks=n) - before
        put_points(db, kpi, value, bucket=at, total=None if total is None else total * value)


def alerts(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT state, value, annotations, context FROM alerts").fetchall()


async def test_a_normal_window_is_quiet_and_a_collapsed_one_fires_once_with_its_band(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    await apply_yaml(
        CONFIG
        + """
  - {name: orders-unusual, kind: anomaly, kpi: orders, window: 10m,
     anomaly: {direction: below, k: 3, weeks: 8}, channels: [ops]}
"""
    )
    now = a_minute_now()
    seed_weeks(db, "orders", now, WEEKLY)
    put_points(db, "orders", 96, bucket=now - timedelta(minutes=5))
    await cycle(now)
    assert alerts(db) == []
    assert payloads(db) == []

    put_points(db, "orders", 20, bucket=now - timedelta(minutes=5))
    await cycle(now + timedelta(seconds=1))
    ((state, value, annotations, context),) = alerts(db)
    assert (state, value) == ("firing", 20)
    band = context["band"]
    assert (band["usual"], band["weeks"], band["direction"]) == (100, 8, "below")
    assert band["low"] == pytest.approx(70)
    assert band["high"] == pytest.approx(130)
    assert annotations["summary"].startswith("orders 20 over 10m, usually 70\u2013130 on ")
    (payload,) = payloads(db)
    (alert,) = payload["alerts"]
    assert alert["status"] == "firing"
    assert alert["value"] == 20
    assert alert["band"] == band

    # Still collapsed: the alert stays firing and nothing is sent again within the repeat.
    for seconds in (2, 15, 30):
        await cycle(now + timedelta(seconds=seconds))
    assert len(payloads(db)) == 1
    assert [a[0] for a in alerts(db)] == ["firing"]


async def test_fewer_weeks_with_a_value_than_min_weeks_is_no_verdict(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    """An average of nothing is NULL (a count of nothing would be 0, a value): three weeks
    with orders are one short of `min_weeks: 4`, however far the current basket falls."""
    await apply_yaml(
        CONFIG
        + """
  - {name: basket-unusual, kind: anomaly, kpi: basket, window: 10m,
     anomaly: {direction: below, weeks: 8, min_weeks: 4}, channels: [ops]}
"""
    )
    now = a_minute_now()
    # basket = sum / count: 50 an order in weeks 1..3 (with a little spread), nothing before.
    for n, (count, total) in enumerate([(10, 500), (10, 490), (10, 510)], start=1):
        put_points(db, "basket", count, total=total, bucket=now - timedelta(weeks=n, minutes=5))
    put_points(db, "basket", 10, total=10, bucket=now - timedelta(minutes=5))  # 1 an order
    await cycle(now)
    assert alerts(db) == []
    assert payloads(db) == []

    # The fourth week makes the baseline: the same basket now fires.
    put_points(db, "basket", 10, total=500, bucket=now - timedelta(weeks=4, minutes=5))
    await cycle(now + timedelta(seconds=1))
    ((state, value, _, context),) = alerts(db)
    assert (state, value) == ("firing", 1)
    assert context["band"]["weeks"] == 4
    assert context["band"]["usual"] == 50
    assert len(payloads(db)) == 1


async def test_for_holds_the_alert_pending_until_the_anomaly_lasted(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    await apply_yaml(
        CONFIG
        + """
  - {name: orders-unusual, kind: anomaly, kpi: orders, window: 1h, for: 5m,
     anomaly: {direction: below, k: 3, weeks: 8}, channels: [ops]}
"""
    )
    now = a_minute_now()
    # 20 minutes before now: inside the 1h window of every cycle below, now and weeks back.
    seed_weeks(db, "orders", now, WEEKLY, before=timedelta(minutes=20))
    put_points(db, "orders", 20, bucket=now - timedelta(minutes=20))
    await cycle(now)
    assert [a[0] for a in alerts(db)] == ["pending"]
    await cycle(now + timedelta(minutes=4, seconds=59))
    assert [a[0] for a in alerts(db)] == ["pending"]
    assert payloads(db) == []
    await cycle(now + timedelta(minutes=5))
    assert [a[0] for a in alerts(db)] == ["firing"]
    (payload,) = payloads(db)
    assert payload["alerts"][0]["band"]["usual"] == 100

    # Back to normal before `for` elapsed again: a new pending episode never fires.
    put_points(db, "orders", 99, bucket=now - timedelta(minutes=20))
    await cycle(now + timedelta(minutes=6))
    assert [a[0] for a in alerts(db)] == ["resolved"]
    put_points(db, "orders", 20, bucket=now - timedelta(minutes=20))
    await cycle(now + timedelta(minutes=7))
    await cycle(now + timedelta(minutes=11))
    assert [a[0] for a in alerts(db)] == ["pending"]
    assert [p["status"] for p in payloads(db)] == ["firing", "resolved"]


async def test_final_past_weeks_come_from_the_cache_until_the_definition_changes(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    cycle: Cycle,
    evaluator: Evaluator,
    alerts_settings: Any,
) -> None:
    """With the watermark at now and a 7-day lateness, week 2 is final (cached) and week 1
    is not (read every tick: a late event may still change it). A KPI version switching
    over reads every week afresh."""
    await apply_yaml(
        CONFIG
        + """
  - {name: orders-unusual, kind: anomaly, kpi: orders, window: 10m,
     anomaly: {direction: below, k: 0.5, weeks: 2, min_weeks: 2}, channels: [ops]}
"""
    )
    now = a_minute_now()
    set_watermark(db, alerts_settings.events_topic, now)
    seed_weeks(db, "orders", now, [100, 100])
    put_points(db, "orders", 20, bucket=now - timedelta(minutes=5))

    def usual() -> tuple[float, float]:
        ((state, value, _, context),) = alerts(db)
        assert state == "firing"
        return value, context["band"]["usual"]

    await cycle(now)
    assert usual() == (20, 100)
    assert (len(evaluator.reads.final_values), evaluator.reads.final_values.hits) == (1, 0)

    # A late event raises week 1: seen at once. Week 2 came from the cache.
    seed_weeks(db, "orders", now, [300])
    put_points(db, "orders", 30, bucket=now - timedelta(minutes=5))
    await cycle(now + timedelta(seconds=1))
    assert usual() == (30, 200)
    assert evaluator.reads.final_values.hits == 1

    # A changed definition switches over to orders@2, whose history counts twice as much.
    db.execute("UPDATE kpi_versions SET state = 'retired' WHERE kpi = 'orders'")
    db.execute(
        "INSERT INTO kpi_versions (kpi, version, spec, storage, state)"
        " SELECT kpi, 2, spec, 'orders@2', 'active' FROM kpi_versions"
        " WHERE kpi = 'orders' AND version = 1"
    )
    db.execute(
        "INSERT INTO kpi_points (kpi, dims, bucket, count, sum)"
        " SELECT 'orders@2', dims, bucket, count * 2, sum * 2 FROM kpi_points"
        " WHERE kpi = 'orders'"
    )
    await cycle(now + timedelta(seconds=2))
    assert usual() == (60, (600 + 200) / 2)
    assert evaluator.reads.final_values.hits == 1
    assert len(evaluator.reads.final_values) == 2


async def test_nothing_is_cached_before_the_aggregator_has_a_watermark(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle, evaluator: Evaluator
) -> None:
    await apply_yaml(
        CONFIG
        + """
  - {name: orders-unusual, kind: anomaly, kpi: orders, window: 10m, channels: [ops]}
"""
    )
    now = a_minute_now()
    seed_weeks(db, "orders", now, WEEKLY)
    await cycle(now)
    await cycle(now + timedelta(seconds=1))
    assert (len(evaluator.reads.final_values), evaluator.reads.final_values.hits) == (0, 0)
