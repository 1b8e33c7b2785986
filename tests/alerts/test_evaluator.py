"""The evaluator in-process on real PostgreSQL (KPIs through `kpi_value`), with a controlled
clock: goals notify once when they fall behind, silences and acknowledgements, change rules,
deleted rules, and a new leader carrying on where the last one stopped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts import store
from services.alerts.evaluator import CycleResult, Evaluator
from services.alerts.silence import Matcher
from shared.config.store import delete_spec
from shared.db import transaction
from tests.alerts.conftest import ApplyConfig, put_points
from tests.conftest import connect_as_grafana
from tests.deploy.dashboards import load_dashboards, render, sql_queries

pytestmark = pytest.mark.integration

KPIS = """
kpis:
  - {name: orders, kind: count, event: order_completed, dimensions: [source]}
  - {name: revenue, kind: sum, event: order_completed, field: properties.revenue,
     dimensions: [source]}
channels:
  - {name: ops, type: webhook, url: "http://127.0.0.1:9/hook",
     group_wait: 0s, group_interval: 10s, repeat_interval: 1m}
"""

Cycle = Callable[..., Awaitable[CycleResult]]


@pytest.fixture
async def evaluator(sessions: async_sessionmaker[AsyncSession], alerts_settings: Any) -> Evaluator:
    ev = Evaluator(
        default_timezone="UTC",
        external_url="http://alerts",
        events_topic=alerts_settings.events_topic,
    )
    async with transaction(sessions) as session:
        await ev.load(session, datetime.now(UTC))
    return ev


@pytest.fixture
def cycle(evaluator: Evaluator, sessions: async_sessionmaker[AsyncSession]) -> Cycle:
    async def run(now: datetime, **kwargs: Any) -> CycleResult:
        async with transaction(sessions) as session:
            result = await evaluator.cycle(session, now, **kwargs)
        evaluator.apply(result)
        return result

    return run


def payloads(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    return [r[0] for r in db.execute("SELECT payload FROM deliveries ORDER BY id").fetchall()]


async def a_goal_behind(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], now: datetime
) -> None:
    """revenue-push: 500 of 10,000 one day into a three-day period, and the previous three
    days earned more from the app than this period so far."""
    today = now.date()
    await apply_yaml(
        KPIS
        + f"""
goals:
  - {{name: revenue-push, kpi: revenue, target: 10000, start: {today - timedelta(days=1)},
     deadline: {today + timedelta(days=1)}, channels: [ops]}}
"""
    )
    earlier = now - timedelta(days=3)
    put_points(db, "revenue", 10, total=900, dims={"source": "app"}, bucket=earlier)
    put_points(db, "revenue", 10, total=100, dims={"source": "web"}, bucket=earlier)
    put_points(db, "revenue", 5, total=300, dims={"source": "app"}, bucket=now)
    put_points(db, "revenue", 5, total=200, dims={"source": "web"}, bucket=now)


async def test_goal_falling_behind_notifies_once_with_its_gap_and_drivers(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    cycle: Cycle,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    today = now.date()
    await a_goal_behind(apply_yaml, db, now)
    await cycle(now)
    for i in range(1, 4):
        await cycle(now + timedelta(seconds=i))
    (payload,) = payloads(db)
    (alert,) = payload["alerts"]
    assert alert["labels"]["status"] == "off_track"
    assert alert["labels"]["goal"] == "revenue-push"
    goal = alert["goal"]
    assert goal["value"] == 500
    assert goal["target"] == 10000
    assert goal["status"] == "off_track"
    assert goal["gap"] == pytest.approx(500 - goal["expected"])
    assert goal["contributors"][0]["dims"] == {"source": "app"}
    history = db.execute("SELECT status FROM goal_status").fetchall()
    assert history == [("off_track",)]
    # The row the API's goal history reads back is the one the cycle wrote.
    async with transaction(sessions) as session:
        (entry,) = await store.goals.goal_history(session, "revenue-push", 10)
    assert (entry.status, entry.value, entry.target) == ("off_track", 500, 10000)
    # From the start day to the end of the deadline day, which counts whole.
    period = (entry.period_start.date(), entry.period_end.date())
    assert period == (today - timedelta(days=1), today + timedelta(days=2))
    assert entry.evaluated_at == now


async def test_a_goal_on_a_kpi_past_its_first_version_still_finds_its_drivers(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    """After a changed definition switched over, the KPI's state lives under `revenue@2`:
    the goal's contributors (and group-by rules) read the dimension values from there."""
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    await a_goal_behind(apply_yaml, db, now)
    db.execute("UPDATE kpi_versions SET state = 'retired' WHERE kpi = 'revenue'")
    db.execute(
        "INSERT INTO kpi_versions (kpi, version, spec, storage, state)"
        " SELECT kpi, 2, spec, 'revenue@2', 'active' FROM kpi_versions"
        " WHERE kpi = 'revenue' AND version = 1"
    )
    db.execute("UPDATE kpi_points SET kpi = 'revenue@2' WHERE kpi = 'revenue'")
    await cycle(now)
    (payload,) = payloads(db)
    goal = payload["alerts"][0]["goal"]
    assert goal["value"] == 500
    assert goal["contributors"][0]["dims"] == {"source": "app"}


async def test_silence_and_acknowledgement(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    cycle: Cycle,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await apply_yaml(
        KPIS
        + """
rules:
  - {name: orders-high, kpi: orders, window: 5m, op: ">", value: 5, group_by: [source],
     channels: [ops]}
"""
    )
    now = datetime.now(UTC)
    put_points(db, "orders", 9, dims={"source": "web"}, bucket=now)
    put_points(db, "orders", 9, dims={"source": "app"}, bucket=now)
    async with transaction(sessions) as session:
        await store.silences.create_silence(
            session,
            [Matcher(name="source", value="app")],
            now - timedelta(minutes=1),
            now + timedelta(hours=1),
            "amy",
            "known",
        )
    await cycle(now)
    (first,) = payloads(db)
    assert [a["labels"]["source"] for a in first["alerts"]] == ["web"]

    # Repeats come every minute until the alert is acknowledged.
    await cycle(now + timedelta(seconds=61))
    assert len(payloads(db)) == 2
    (alert_id,) = (
        db.execute("SELECT id FROM alerts WHERE labels->>'source' = 'web'").fetchone() or ()
    )
    fp, episode, _ = (
        db.execute(
            "SELECT fingerprint, episode, state FROM alerts WHERE id = %s", (alert_id,)
        ).fetchone()
        or ()
    )
    async with transaction(sessions) as session:
        await store.alerts.acknowledge(session, fp, episode, "amy", "on it")
    await cycle(now + timedelta(seconds=130))
    assert len(payloads(db)) == 2
    # The resolve still goes out.
    put_points(db, "orders", 0, dims={"source": "web"}, bucket=now)
    await cycle(now + timedelta(seconds=140))
    last = payloads(db)[-1]
    assert last["status"] == "resolved"
    assert len(payloads(db)) == 3


async def test_change_rule_against_last_week(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    await apply_yaml(
        KPIS
        + """
rules:
  - {name: orders-drop, kind: change, kpi: orders, window: 10m, offset: 7d, op: "<",
     value: -0.3, channels: [ops]}
"""
    )
    now = datetime.now(UTC)
    put_points(db, "orders", 100, bucket=now - timedelta(days=7, minutes=2))
    put_points(db, "orders", 60, bucket=now - timedelta(minutes=2))
    await cycle(now)
    (payload,) = payloads(db)
    assert payload["alerts"][0]["value"] == 60
    put_points(db, "orders", 80, bucket=now - timedelta(minutes=2))
    await cycle(now + timedelta(seconds=11))
    assert [p["status"] for p in payloads(db)] == ["firing", "resolved"]


async def test_deleted_rule_resolves_and_a_new_leader_carries_on(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    cycle: Cycle,
    sessions: async_sessionmaker[AsyncSession],
    alerts_settings: Any,
) -> None:
    await apply_yaml(
        KPIS
        + """
rules:
  - {name: orders-high, kpi: orders, window: 5m, op: ">", value: 5, channels: [ops]}
"""
    )
    now = datetime.now(UTC)
    put_points(db, "orders", 9, bucket=now)
    await cycle(now)
    # A new leader loads the state and neither re-fires nor re-sends.
    successor = Evaluator(
        default_timezone="UTC",
        external_url="http://alerts",
        events_topic=alerts_settings.events_topic,
    )
    async with transaction(sessions) as session:
        await successor.load(session, now)
        result = await successor.cycle(session, now + timedelta(seconds=1))
    successor.apply(result)
    assert result.deliveries == 0
    assert len(payloads(db)) == 1
    async with transaction(sessions) as session:
        await delete_spec(session, "rules", "orders-high")
    async with transaction(sessions) as session:
        result = await successor.cycle(session, now + timedelta(seconds=12))
    assert [p["status"] for p in payloads(db)] == ["firing", "resolved"]
    assert db.execute("SELECT state FROM alerts").fetchall() == [("resolved",)]


async def test_a_stored_row_that_no_longer_validates_stops_nothing(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    evaluator: Evaluator,
    sessions: async_sessionmaker[AsyncSession],
    cycle: Cycle,
) -> None:
    """Rows stored before the checks were tightened (a goal over ten thousand years, a
    negative `for`) used to crash-loop the evaluator; they are left out, the rest runs."""
    await apply_yaml(
        KPIS
        + """
rules:
  - {name: orders-low, kpi: orders, window: 10m, op: "<", value: 5, channels: [ops]}
"""
    )
    db.execute(
        "INSERT INTO goals (name, spec) VALUES ('forever', %s::jsonb)",
        (
            '{"name": "forever", "kpi": "orders", "target": 5, "start": "0001-01-01",'
            ' "deadline": "9999-12-31"}',
        ),
    )
    db.execute(
        "INSERT INTO rules (name, spec) VALUES ('negative', %s::jsonb)",
        ('{"name": "negative", "kpi": "orders", "window": "10m", "op": "<", "for": -60}',),
    )
    now = datetime.now(UTC)
    async with transaction(sessions) as session:
        await evaluator.load(session, now)
    put_points(db, "orders", 1, bucket=now - timedelta(minutes=2))
    await cycle(now)
    (payload,) = payloads(db)
    assert [a["labels"]["alertname"] for a in payload["alerts"]] == ["orders-low"]


async def test_goal_readings_for_dashboards_follow_every_evaluation_and_stay_bounded(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    evaluator: Evaluator,
    cycle: Cycle,
    sessions: async_sessionmaker[AsyncSession],
    database_url: str,
    schema: str,
) -> None:
    step = 300  # goal_reading_history keeps one reading per goal and 5 minutes
    base = datetime.fromtimestamp(int(datetime.now(UTC).timestamp()) // step * step + 30, UTC)
    await a_goal_behind(apply_yaml, db, base)
    evaluator.goal_history_retention = timedelta(minutes=10)
    for minutes in (0, 1, 6):
        await cycle(base + timedelta(minutes=minutes))

    ((goal, kpi, direction, status, value, target, attainment, projected, projection,
      contributors, evaluated_at),) = db.execute(
        "SELECT goal, kpi, direction, status, value, target, attainment, projected_attainment,"
        " projection, contributors, evaluated_at FROM goal_readings"
    ).fetchall()  # fmt: skip
    assert (goal, kpi, direction, status) == ("revenue-push", "revenue", "at_least", "off_track")
    assert (value, target) == (500, 10000)
    assert attainment == pytest.approx(500 / 10000)
    assert projected == pytest.approx(projection / 10000)
    assert contributors[0]["dims"] == {"source": "app"}
    assert evaluated_at == base + timedelta(minutes=6)
    # One row per 5 minutes, holding the latest reading of those 5 minutes.
    history = db.execute(
        "SELECT bucket, evaluated_at, value FROM goal_reading_history ORDER BY bucket"
    ).fetchall()
    assert history == [
        (base - timedelta(seconds=30), base + timedelta(minutes=1), 500),
        (base + timedelta(minutes=5, seconds=-30), base + timedelta(minutes=6), 500),
    ]

    # The provisioned dashboard reads them as the read-only role.
    dashboard = load_dashboards()["pacekeeper-goals.json"]
    queries = {q.where: q for q in sql_queries("goals", dashboard)}
    with connect_as_grafana(database_url, schema) as grafana:

        def run(where: str) -> list[tuple[Any, ...]]:
            rendered = render(
                queries[where].sql,
                time_from=(base - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                time_to=(base + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                interval="5m",
                variables={"goal": ["revenue-push"]},
            )
            return grafana.execute(rendered).fetchall()

        assert run("goals: variable goal") == [("revenue-push",)]
        (row,) = run("goals: panel 'Where every goal stands' A")
        assert row[:4] == ("revenue-push", "revenue", "off_track", 500)
        assert row[11].startswith("source=app (")
        assert run("goals: panel 'Goals by status' A") == [(1, 0, 0, 0)]
        assert [r[1] for r in run("goals: panel '${goal}' A")] == [500, 500]

    # Older than the retention: pruned. A goal taken out of the configuration: forgotten.
    await cycle(base + timedelta(minutes=20))
    buckets = db.execute("SELECT bucket FROM goal_reading_history").fetchall()
    assert buckets == [(base + timedelta(minutes=20, seconds=-30),)]
    async with transaction(sessions) as session:
        await delete_spec(session, "goals", "revenue-push")
    await cycle(base + timedelta(minutes=21))
    assert db.execute("SELECT count(*) FROM goal_readings").fetchone() == (0,)


async def test_goal_alerts_go_on_when_the_readings_for_dashboards_cannot_be_stored(
    apply_yaml: ApplyConfig, db: psycopg.Connection[Any], cycle: Cycle
) -> None:
    now = datetime.now(UTC).replace(second=30, microsecond=0)
    await a_goal_behind(apply_yaml, db, now)
    # Any database error storing them (here: a constraint no row can meet).
    db.execute("ALTER TABLE goal_reading_history ADD CONSTRAINT refuse CHECK (false) NOT VALID")
    failed = "pacekeeper_alerts_goal_readings_failed_total"
    before = REGISTRY.get_sample_value(failed) or 0.0
    for i in range(2):
        await cycle(now + timedelta(seconds=i))
    assert [p["alerts"][0]["labels"]["goal"] for p in payloads(db)] == ["revenue-push"]
    assert db.execute("SELECT status FROM goal_status").fetchall() == [("off_track",)]
    assert REGISTRY.get_sample_value(failed) == before + 2
    # The savepoint rolled back the readings as a whole: no half-written state.
    assert db.execute("SELECT count(*) FROM goal_readings").fetchone() == (0,)
