"""Restated goal periods with the evaluator in-process on real PostgreSQL and a controlled
clock: a day closes and is recorded as reported; late points restate it; crossing met ↔
missed or moving past the threshold notifies once, smaller changes only record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts.evaluator import CycleResult, Evaluator
from services.alerts.store.results import goal_results
from shared.db import transaction
from tests.alerts.conftest import ApplyConfig, put_points

pytestmark = pytest.mark.integration

# The day that closes: recent, as late events are (older minutes are read from the daily
# aggregate, which the aggregator maintains and these tests do not).
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
CONFIG = """
kpis:
  - {name: orders, kind: count, event: order_completed}
channels:
  - {name: ops, type: webhook, url: "http://127.0.0.1:9/hook"}
  - {name: audit, type: webhook, url: "http://127.0.0.1:9/audit"}
goals:
  - {name: daily-orders, kpi: orders, target: 100, period: day, channels: [ops, audit],
     labels: {team: shop}}
  - {name: daily-growth, kpi: orders, growth: 0.1, period: day, restate_threshold: 0.5}
"""

Cycle = Callable[[datetime], Awaitable[CycleResult]]


@pytest.fixture
async def cycle(
    sessions: async_sessionmaker[AsyncSession], alerts_settings: Any, apply_yaml: ApplyConfig
) -> Cycle:
    await apply_yaml(CONFIG)
    evaluator = Evaluator(
        default_timezone="UTC",
        external_url="http://alerts",
        events_topic=alerts_settings.events_topic,
    )
    async with transaction(sessions) as session:
        await evaluator.load(session, DAY)

    async def run(now: datetime) -> CycleResult:
        async with transaction(sessions) as session:
            result = await evaluator.cycle(session, now)
        evaluator.apply(result)
        return result

    return run


def notices(db: psycopg.Connection[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = db.execute(
        "SELECT channel, idempotency_key, payload FROM deliveries"
        " WHERE group_key LIKE 'restated:%' ORDER BY id"
    ).fetchall()
    return [(c, k, p) for c, k, p in rows]


def result_of(db: psycopg.Connection[Any], goal: str, start: datetime) -> dict[str, Any]:
    row = db.execute(
        "SELECT reported_value, reported_status, value, status, restatements,"
        " restated_delta, restated_relative, notified_restatement"
        " FROM goal_results WHERE goal = %s AND period_start = %s",
        (goal, start),
    ).fetchone()
    assert row is not None, f"{goal} {start} not recorded"
    keys = ("reported_value", "reported_status", "value", "status", "restatements", "delta",
            "relative", "notified")  # fmt: skip
    return dict(zip(keys, row, strict=True))


def late(db: psycopg.Connection[Any], orders: float) -> None:
    """The day's orders as they stand after late events (one minute holds them all)."""
    put_points(db, "orders", orders, bucket=DAY + timedelta(hours=10))


async def test_a_closed_day_restated_by_late_events_notifies_once_per_crossing(
    db: psycopg.Connection[Any], cycle: Cycle, sessions: async_sessionmaker[AsyncSession]
) -> None:
    late(db, 100)
    closed = DAY + timedelta(days=1, minutes=5)
    await cycle(closed)
    assert result_of(db, "daily-orders", DAY) | {"relative": None} == {
        "reported_value": 100, "reported_status": "met", "value": 100, "status": "met",
        "restatements": 0, "delta": None, "relative": None, "notified": None,
    }  # fmt: skip
    assert notices(db) == []
    await cycle(closed + timedelta(minutes=1))
    assert notices(db) == []  # recorded once, nothing changed

    # Late orders are taken back: 100 -> 90 crosses met -> missed, once per channel.
    late(db, 90)
    result = await cycle(closed + timedelta(minutes=2))
    assert result.deliveries == 2
    for i in range(3, 6):
        await cycle(closed + timedelta(minutes=i))
    sent = notices(db)
    assert [channel for channel, _, _ in sent] == ["ops", "audit"]
    _, key, payload = sent[0]
    assert payload["idempotencyKey"] == key
    assert payload["status"] == "firing"
    (alert,) = payload["alerts"]
    assert alert["labels"] == {
        "alertname": "daily-orders", "goal": "daily-orders", "kpi": "orders",
        "severity": "ticket", "event": "restated", "team": "shop",
        "period": DAY.isoformat(),
    }  # fmt: skip
    restatement = payload["restatement"]
    assert restatement["number"] == 1
    assert restatement["reported"]["value"] == 100
    assert restatement["reported"]["status"] == "met"
    assert restatement["restated"] == {"value": 90, "target": 100, "status": "missed"}
    assert restatement["delta"] == -10
    assert restatement["relative"] == pytest.approx(-0.1)
    assert result_of(db, "daily-orders", DAY)["notified"] == 1

    # 90 -> 89: still missed and -1.1% of what was told: recorded, not notified.
    late(db, 89)
    await cycle(closed + timedelta(minutes=6))
    assert len(notices(db)) == 2
    now = result_of(db, "daily-orders", DAY)
    assert (now["value"], now["status"], now["restatements"], now["notified"]) == (
        89, "missed", 2, 1
    )  # fmt: skip
    assert now["delta"] == -11  # as restated vs as reported

    # Back over the target: missed -> met notifies again, with a new key.
    late(db, 101)
    await cycle(closed + timedelta(minutes=7))
    sent = notices(db)
    assert len(sent) == 4
    assert len({key for _, key, _ in sent}) == 4
    assert sent[2][2]["restatement"]["previous"] == {"value": 90, "status": "missed"}

    history = db.execute(
        "SELECT number, before_value, value, status, notified FROM goal_restatements"
        " WHERE goal = 'daily-orders' ORDER BY number"
    ).fetchall()
    assert history == [
        (1, 100, 90, "missed", True),
        (2, 90, 89, "missed", False),
        (3, 89, 101, "met", True),
    ]
    async with transaction(sessions) as session:
        (newest, *_) = await goal_results(session, "daily-orders", 3)
    assert (newest.period_start, newest.restatements, newest.status) == (DAY, 3, "met")

    # Past the allowed lateness the day is final: later changes are not read any more.
    late(db, 10)
    await cycle(DAY + timedelta(days=9))
    assert result_of(db, "daily-orders", DAY)["value"] == 101
    assert len(notices(db)) == 4


async def test_a_growth_target_follows_its_restated_baseline(
    db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    put_points(db, "orders", 100, bucket=DAY - timedelta(hours=12))  # the day before
    late(db, 105)
    closed = DAY + timedelta(days=1, minutes=5)
    await cycle(closed)
    reported = result_of(db, "daily-growth", DAY)
    assert (reported["reported_value"], reported["reported_status"]) == (105, "missed")

    # Late cancellations of the day before lower this day's target (110 -> 88): it is met.
    put_points(db, "orders", 80, bucket=DAY - timedelta(hours=12))
    await cycle(closed + timedelta(minutes=1))
    restated = result_of(db, "daily-growth", DAY)
    assert (restated["value"], restated["status"], restated["notified"]) == (105, "met", 1)
    (target,) = db.execute(
        "SELECT target FROM goal_results WHERE goal = 'daily-growth' AND period_start = %s",
        (DAY,),
    ).fetchone() or (None,)
    assert target == pytest.approx(88)
    # The day before moved -20%: under this goal's own threshold of 50%, no verdict.
    before = result_of(db, "daily-growth", DAY - timedelta(days=1))
    assert (before["restatements"], before["notified"]) == (1, None)


async def test_results_that_cannot_be_stored_never_stop_alerting(
    db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    db.execute("DROP TABLE goal_restatements")
    db.execute("DROP TABLE goal_results")
    late(db, 100)
    result = await cycle(DAY + timedelta(days=1, minutes=5))
    assert result is not None
    assert db.execute("SELECT count(*) FROM goal_readings").fetchone() == (2,)
