"""Versioned KPI definitions: a changed definition is recomputed from `events` in the
background while the aggregator runs and events flow; readers get the old version's exact
values until one transaction switches to the new one, whose whole history then equals the
oracle for the new definition — also when the aggregator is SIGKILLed mid-recompute."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator.recompute import Pacer, recompute_range
from shared.config.kpi_versions import diff, needs_recompute, storage_key
from shared.config.store import upsert_spec
from shared.db import make_engine, make_sessionmaker, transaction
from tests.aggregator import oracle, workload
from tests.aggregator.conftest import settings_from
from tests.aggregator.helpers import store_kpis
from tests.aggregator.test_crash import _ensure_topics, _env, _spawn, _stop
from tests.conftest import Topics, libpq_url

UTC_ZONE = ZoneInfo("UTC")

# Version 2 of two KPIs: "an order counts only from SEO", "a visitor only from ads" (the
# oracle knows equality and gte/lte conditions).
ORDERS_V2 = {**oracle.DEFINITIONS[0], "where": {"properties.channel": "seo"}}
VISITORS_V2 = {
    "name": "visitors",
    "kind": "count_distinct",
    "event": "view",
    "where": {"properties.channel": "ads"},
    "dimensions": ["source"],
}
CHANGED = {"orders": ORDERS_V2, "visitors": VISITORS_V2}


# --- pure: the diff and what needs a recompute ---------------------------------------------


@pytest.mark.unit
def test_diff_names_each_changed_field_by_path() -> None:
    before = {"name": "a", "kind": "count", "event": "x", "where": {"p.c": "seo"}, "unit": ""}
    after = {"name": "a", "kind": "count", "event": "y", "where": {"p.c": "ads", "p.d": 1}}
    changes = {c.path: (c.before, c.after) for c in diff(before, after)}
    assert changes == {
        "event": ("x", "y"),
        "where.p.c": ("seo", "ads"),
        "where.p.d": (None, 1),
        "unit": ("", None),
    }
    assert diff(before, after)[0].describe() == "event: x → y"
    assert diff(before, before) == []


@pytest.mark.unit
def test_only_state_changes_need_a_recompute() -> None:
    count = {"name": "a", "kind": "count", "event": "x", "description": "", "unit": ""}
    assert needs_recompute(None, count)
    assert not needs_recompute(count, {**count, "description": "orders", "unit": "orders"})
    assert needs_recompute(count, {**count, "event": "y"})
    assert needs_recompute(count, {**count, "where": {"source": "web"}})
    p90 = {"name": "p", "kind": "percentile", "event": "x", "field": "properties.v", "q": 0.9}
    assert not needs_recompute(p90, {**p90, "q": 0.5})  # the sketch holds every quantile
    ratio = {"name": "r", "kind": "ratio", "numerator": "a", "denominator": "b"}
    assert not needs_recompute(ratio, {**ratio, "denominator": "c"})
    assert needs_recompute(ratio, count)  # a derived KPI had no state to read
    assert storage_key("orders", 1) == "orders"
    assert storage_key("orders", 3) == "orders@3"


@pytest.mark.unit
def test_pacer_keeps_the_average_rate() -> None:
    now = [0.0]
    pacer = Pacer(100.0, clock=lambda: now[0])
    assert pacer.delay(50) == pytest.approx(0.5)
    now[0] = 2.0  # slower than the rate: no wait
    assert pacer.delay(50) == 0.0
    assert pacer.delay(300) == pytest.approx(2.0)  # 400 events by t=4


@pytest.mark.unit
def test_recompute_range_holds_every_stored_event_on_15_minute_edges() -> None:
    first = datetime(2026, 1, 1, 10, 7, 3, tzinfo=UTC)
    last = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    assert recompute_range(first, last, first) == (
        datetime(2026, 1, 1, 10, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 12, 45, tzinfo=UTC),
    )
    lo, hi = recompute_range(None, None, last)
    assert lo == hi


# --- the version rows apply writes -------------------------------------------------------


def _versions(db: psycopg.Connection[Any], kpi: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT version, storage, state, diff, applied_by FROM kpi_versions WHERE kpi = %s"
        " ORDER BY version",
        (kpi,),
    ).fetchall()


@pytest.mark.integration
async def test_apply_records_versions_and_resolves_the_active_one(
    service_env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    orders = oracle.DEFINITIONS[0]
    await store_kpis(service_env, orders)
    assert [r[:3] for r in _versions(db, "orders")] == [(1, "orders", "active")]
    await store_kpis(service_env, {**orders, "description": "paid orders"})  # no new state
    await store_kpis(service_env, ORDERS_V2)  # new state: recomputes
    await store_kpis(service_env, {**ORDERS_V2, "where": {"properties.channel": "ads"}})
    rows = _versions(db, "orders")
    assert [r[:3] for r in rows] == [
        (1, "orders", "retired"),
        (2, "orders", "active"),
        (3, "orders@3", "superseded"),
        (4, "orders@4", "recomputing"),
    ]
    assert rows[3][3] == [{"path": "where.properties.channel", "before": "seo", "after": "ads"}]
    assert rows[0][4]  # who applied it
    # Readers resolve the name to the active version's state, under its key.
    spec = db.execute("SELECT pk_spec('orders')").fetchone()
    assert spec is not None
    assert spec[0]["name"] == "orders"
    assert spec[0]["description"] == "paid orders"
    assert "where" not in spec[0] or spec[0]["where"] == {}


@pytest.mark.integration
async def test_a_kpi_defined_again_after_delete_continues_its_versions(
    service_env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    from shared.config.store import delete_spec

    engine = make_engine(settings_from(service_env), application_name="test")
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await _upsert(session, oracle.DEFINITIONS[0])
        async with transaction(make_sessionmaker(engine)) as session:
            assert await delete_spec(session, "kpis", "orders")
        async with transaction(make_sessionmaker(engine)) as session:
            await _upsert(session, oracle.DEFINITIONS[0])
    finally:
        await engine.dispose()
    assert [r[:3] for r in _versions(db, "orders")] == [
        (1, "orders", "retired"),
        (2, "orders@2", "active"),
    ]


async def _upsert(session: AsyncSession, definition: dict[str, Any]) -> None:
    await upsert_spec(session, "kpis", oracle.SPEC.validate_python(definition))


# --- end to end: a changed definition under a running aggregator ---------------------------


@dataclass
class Scenario:
    service_env: dict[str, str]
    topics: Topics
    group: str
    bootstrap: str
    url: str
    schema: str
    log: Path
    now: datetime
    history: list[oracle.Raw]
    live: list[oracle.Raw]
    processes: list[Any] = field(default_factory=list)

    def spawn(self) -> Any:
        env = _env(
            self.service_env,
            self.group,
            PACEKEEPER_AGGREGATOR_INSTANCE_ID=f"{self.group}-a",
            # Slow on purpose: readers and the kill must meet the recompute under way.
            PACEKEEPER_AGGREGATOR_RECOMPUTE_EVENTS_PER_SECOND="300",
            PACEKEEPER_AGGREGATOR_RECOMPUTE_CHUNK="PT15M",
            PACEKEEPER_AGGREGATOR_RECOMPUTE_POLL="0.5",
        )
        proc = _spawn(env, self.log)
        self.processes.append(proc)
        return proc

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(libpq_url(self.url), options=f"-c search_path={self.schema}")

    def states(self) -> dict[str, tuple[str, Any, Any, Any, int]]:
        """Per changed KPI, its version 2's state, range, progress and events read."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT kpi, state, recompute_from, recompute_to, recomputed_until,"
                " events_processed FROM kpi_versions WHERE version = 2"
            ).fetchall()
        return {r[0]: tuple(r[1:]) for r in rows}  # type: ignore[misc]


def _history_windows(now: datetime) -> list[tuple[datetime, datetime]]:
    # Only history events fall in these: the live ones are all later.
    return [
        (now - timedelta(hours=3), now - timedelta(hours=1)),
        (now - timedelta(hours=2, minutes=13), now - timedelta(hours=1, minutes=29)),
    ]


QUESTIONS = [
    (name, dims) for name in ("orders", "visitors", "conversion")
    for dims in oracle.DIM_CHOICES[name]
]  # fmt: skip


def _expected(
    specs: dict[str, Any], truth: list[oracle.Raw], windows: list[tuple[datetime, datetime]]
) -> dict[tuple[str, str, datetime, datetime], float | None]:
    saved = dict(oracle.SPECS)
    oracle.SPECS.update(specs)
    try:
        return {
            (name, orjson.dumps(dims).decode(), lo, hi): oracle.value(
                name, truth, lo, hi, dims, UTC_ZONE
            )
            for name, dims in QUESTIONS
            for lo, hi in windows
        }
    finally:
        oracle.SPECS.clear()
        oracle.SPECS.update(saved)


def _reader(
    scenario: Scenario,
    old: dict[tuple[str, str, datetime, datetime], float | None],
    new: dict[tuple[str, str, datetime, datetime], float | None],
    done: threading.Event,
) -> dict[str, int]:
    """Poll every question in one snapshot with the versions' states until `done`; every
    answer must be the old version's exactly while its KPI recomputes, the new one's after.
    Returns how many answers were checked in each state."""
    seen = {"recomputing": 0, "active": 0}
    with scenario.connect() as conn:
        conn.autocommit = True
        while not done.is_set():
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                states = dict(
                    conn.execute("SELECT kpi, state FROM kpi_versions WHERE version = 2").fetchall()
                )
                for key in old:
                    name, dims, lo, hi = key
                    row = conn.execute(
                        "SELECT kpi_value(%s, %s, %s, %s::jsonb)",
                        (name, lo, hi, None if dims == "null" else dims),
                    ).fetchone()
                    actual = None if row is None else row[0]
                    inputs = ["orders", "visitors"] if name == "conversion" else [name]
                    state = {states.get(k) for k in inputs}
                    if state == {"recomputing"}:
                        want, seen_as = old[key], "recomputing"
                    elif state == {"active"}:
                        want, seen_as = new[key], "active"
                    else:
                        continue  # a ratio across one switched input and one not yet
                    assert oracle.close(actual, want), (
                        f"{name} {dims} [{lo}, {hi}) read {actual} while version 2 was"
                        f" {seen_as}; expected {want}"
                    )
                    seen[seen_as] += 1
    return seen


@pytest.fixture
async def scenario(
    service_env: dict[str, str],
    definitions_stored: None,
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
    schema: str,
    tmp_path: Path,
) -> AsyncIterator[Scenario]:
    await _ensure_topics(service_env, topics)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    history = workload.make_events(
        3000, seed=31, base=now - timedelta(hours=3), span=timedelta(hours=2)
    )
    live = workload.make_events(
        2000, seed=32, base=now - timedelta(minutes=50), span=timedelta(minutes=50)
    )
    run = Scenario(
        service_env, topics, unique, kafka_bootstrap, database_url, schema,
        tmp_path / "aggregator.log", now, history, live,
    )  # fmt: skip
    try:
        yield run
    finally:
        for proc in run.processes:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _wait(what: str, check: Any, within: float, scenario: Scenario) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {within} s\n{scenario.log.read_text()[-4000:]}")
        await asyncio.sleep(0.2)


@pytest.mark.e2e
@pytest.mark.parametrize("kill", [False, True], ids=["steady", "sigkill-mid-recompute"])
async def test_changed_definition_recomputes_under_load_and_switches_atomically(
    scenario: Scenario, kill: bool
) -> None:
    s = scenario
    history_stream = workload.deliveries(s.history, seed=31)
    live_stream = workload.deliveries(s.live, seed=32)
    proc = s.spawn()
    await workload.produce(s.bootstrap, s.topics.events, history_stream)
    await workload.wait_consumed(
        s.url, s.schema, s.group, s.topics.events, len(history_stream), within=90
    )
    windows = _history_windows(s.now)
    history = oracle.dedupe(s.history)
    new_specs = {k: oracle.SPEC.validate_python(v) for k, v in CHANGED.items()}
    old = _expected({}, history, windows)
    new = _expected(new_specs, history, windows)
    assert old != new  # the change must show in the questions asked

    done = threading.Event()
    reader = asyncio.create_task(asyncio.to_thread(_reader, s, old, new, done))
    producing = asyncio.create_task(
        workload.produce(s.bootstrap, s.topics.events, live_stream, rate=500)
    )
    await store_kpis(s.service_env, ORDERS_V2, VISITORS_V2)
    try:
        if kill:

            def progressed() -> bool:
                orders = s.states()["orders"]
                return orders[3] is not None and orders[3] > orders[1]

            await _wait("no recompute progress", progressed, 60, s)
            before = s.states()["orders"]
            assert before[0] == "recomputing", "switched before the kill: slow it down"
            proc.kill()  # SIGKILL mid-recompute
            proc.wait()
            proc = s.spawn()
        await producing

        def switched() -> bool:
            return {v[0] for v in s.states().values()} == {"active"}

        await _wait("version 2 never became active", switched, 120, s)
        await workload.wait_consumed(
            s.url, s.schema, s.group, s.topics.events,
            len(history_stream) + len(live_stream), within=90,
        )  # fmt: skip
        await asyncio.sleep(1)  # a few more readings after the switch
    finally:
        done.set()
        seen = await reader
    assert seen["recomputing"] > 0, "no reading happened during the recompute"
    assert seen["active"] > 0

    after = s.states()
    if kill:
        # Resumed, not restarted: the range stored before the kill was kept, and every
        # event was read once at most (a restart from scratch reads the first chunks twice).
        assert after["orders"][1:3] == before[1:3]
    with s.connect() as conn:
        for kpi, (_state, lo, hi, _until, processed) in after.items():
            types = ["order"] if kpi == "orders" else ["view"]
            row = conn.execute(
                "SELECT count(*) FROM events WHERE type = ANY(%s) AND time >= %s AND time < %s",
                (types, lo, hi),
            ).fetchone()
            assert row is not None
            assert 0 < processed <= row[0]

    def dropped() -> bool:
        with s.connect() as conn:
            row = conn.execute(
                "SELECT count(*) FROM kpi_points WHERE kpi = 'orders'"
                " UNION ALL SELECT count(*) FROM kpi_distinct WHERE kpi = 'visitors'"
            ).fetchall()
        return all(r[0] == 0 for r in row)

    await _wait("version 1's state never dropped", dropped, 30, s)
    assert _stop(proc) == 0, s.log.read_text()[-3000:]

    # The whole history, every KPI, equals the oracle for the definitions now in force.
    saved = dict(oracle.SPECS)
    oracle.SPECS.update(new_specs)
    try:
        truth = oracle.dedupe([*s.history, *s.live])
        full = [
            (s.now - timedelta(days=1), s.now + timedelta(hours=1)),
            (s.now - timedelta(hours=2, minutes=13), s.now - timedelta(minutes=29)),
            *windows,
        ]
        assert workload.assert_all_kpis_exact(s.url, s.schema, truth, full) > 30
    finally:
        oracle.SPECS.clear()
        oracle.SPECS.update(saved)


@pytest.mark.integration
async def test_history_command_and_api_summary_show_every_version(
    service_env: dict[str, str], settings: Any
) -> None:
    from typer.testing import CliRunner

    from services.cli import app
    from shared.config.store import kpi_versions_summary

    await store_kpis(service_env, oracle.DEFINITIONS[0])
    await store_kpis(service_env, ORDERS_V2)
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["kpis", "history", "orders"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "+where.properties.channel: seo" in result.output
    assert "recomputing" in result.output
    assert "first definition" in result.output
    engine = make_engine(settings_from(service_env), application_name="test")
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            summary = await kpi_versions_summary(session, "orders")
    finally:
        await engine.dispose()
    assert summary["version"] == 2
    assert summary["active_version"] == 1
    assert [v["state"] for v in summary["versions"]] == ["active", "recomputing"]
    assert summary["recompute"]["progress"] == 0.0  # no aggregator ran
