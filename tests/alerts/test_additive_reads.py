"""Counts and sums over short windows read from their minutes (store.kpis.additive_values):
the spans cover every window, and every answer equals `kpi_value`'s on the same data —
recent minutes, minutes older than the 8-day horizon (where kpi_value reads the hourly
aggregate), dims filters, a KPI whose state lives under a version's storage key."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts import store
from services.alerts.evaluation.rules import Query
from services.alerts.evaluator import Evaluator
from services.alerts.settings import AlertsSettings
from services.alerts.store.kpis import MAX_SPAN, MINUTE_WINDOW, plan_spans, window_sum
from shared.db import make_engine, transaction
from shared.timescaledb import rematerialize
from tests.alerts.conftest import ApplyConfig

BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SHIFT = timedelta(minutes=7)
minutes = st.integers(min_value=0, max_value=600)


def _query(kpi: str, start: int, length: int, dims: tuple[tuple[str, str], ...] = ()) -> Query:
    t_from = BASE + timedelta(minutes=start)
    return Query(kpi, t_from, t_from + timedelta(minutes=length), dims)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), minutes, st.integers(1, 180), st.booleans()),
        min_size=1,
        max_size=60,
    )
)
def test_spans_cover_each_window_once_within_the_span_limit(
    windows: list[tuple[str, int, int, bool]],
) -> None:
    queries = {
        _query(kpi, start, length, (("source", "web"),) if web else ())
        for kpi, start, length, web in windows
    }
    spans = plan_spans(queries)
    members = [q for span in spans for q in span.members]
    assert sorted(members) == sorted(queries)
    for span in spans:
        assert span.t_to - span.t_from <= MAX_SPAN
        for q in span.members:
            assert (q.kpi, q.dims) == (span.kpi, span.dims)
            assert span.t_from <= q.t_from
            assert q.t_to <= span.t_to


@given(
    st.dictionaries(minutes, st.integers(0, 50), max_size=80),
    minutes,
    st.integers(0, 200),
    st.integers(0, 59),
)
def test_a_window_sums_the_minutes_that_start_inside_it(
    points: dict[int, int], start: int, length: int, second: int
) -> None:
    ordered = sorted(points.items())
    buckets = [BASE + timedelta(minutes=m) for m, _ in ordered]
    values = [float(v) for _, v in ordered]
    t_from = BASE + timedelta(minutes=start, seconds=second)
    q = Query("a", t_from, t_from + timedelta(minutes=length))
    oracle = sum(v for b, v in zip(buckets, values, strict=True) if q.t_from <= b < q.t_to)
    assert window_sum([b.timestamp() for b in buckets], values, q) == oracle


CONFIG = """
kpis:
  - {name: orders, kind: count, event: order_completed, dimensions: [source, properties.country]}
  - {name: revenue, kind: sum, event: order_completed, field: properties.amount,
     dimensions: [source]}
  - {name: basket, kind: avg, event: order_completed, field: properties.amount,
     dimensions: [source]}
  - {name: revenue_per_order, kind: ratio, numerator: revenue, denominator: orders}
  - {name: revenue_per_basket, kind: ratio, numerator: revenue, denominator: basket}
"""
SOURCES = ["web", "app"]
COUNTRIES = ["fr", "de", "cn"]


def _seed(db: psycopg.Connection[Any], now: datetime) -> None:
    """Random minutes over the last 3 hours and around 9 days back, several dims sets per
    minute, and a second version of `orders` stored under `orders@2` (active)."""
    rng = random.Random(7)
    rows = []
    for back in (timedelta(0), timedelta(days=9)):
        end = now.replace(second=0, microsecond=0) - back
        for m in range(200):
            bucket = end - timedelta(minutes=m)
            for source in SOURCES:
                for country in COUNTRIES:
                    if rng.random() < 0.7:
                        count = rng.randint(1, 40)
                        dims = json.dumps({"source": source, "properties.country": country})
                        rows.append(("orders", dims, bucket, count, count))
                        rows.append(("orders@2", dims, bucket, count * 3, count * 3))
                if rng.random() < 0.8:
                    amount = round(rng.uniform(0, 500), 2)
                    dims = json.dumps({"source": source})
                    rows.append(("revenue", dims, bucket, rng.randint(1, 9), amount))
                    rows.append(("basket", dims, bucket, 2, amount))
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO kpi_points (kpi, dims, bucket, count, sum) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (kpi, dims, bucket) DO NOTHING",
            rows,
        )


@pytest.mark.integration
async def test_minute_sums_equal_kpi_value(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    sessions: async_sessionmaker[AsyncSession],
    alerts_settings: AlertsSettings,
) -> None:
    await apply_yaml(CONFIG)
    now = datetime.now(UTC)
    _seed(db, now)
    engine = make_engine(alerts_settings, application_name="alerts-test", pool_size=1)
    try:
        await rematerialize(engine, now - timedelta(days=10), now)
    finally:
        await engine.dispose()
    # 1,500 windows: recent and 9 days back (whole hours from the hourly aggregate in
    # kpi_value), from 1 minute to past MINUTE_WINDOW, ends at any second, dims or none.
    rng = random.Random(11)
    dims_sets: list[tuple[tuple[str, str], ...]] = [
        (),
        (("source", "web"),),
        (("properties.country", "cn"), ("source", "app")),
    ]
    queries: set[Query] = set()
    while len(queries) < 1500:
        kpi = rng.choice(["orders", "revenue", "basket"])
        dims = rng.choice(dims_sets)
        if kpi != "orders":
            dims = tuple(d for d in dims if d[0] == "source") if kpi == "revenue" else ()
        back = rng.choice([timedelta(0), timedelta(days=9)])
        t_to = now - back - timedelta(seconds=rng.randint(0, 200 * 60))
        queries.add(Query(kpi, t_to - timedelta(minutes=rng.randint(1, 240)), t_to, dims))
    unique = sorted(queries)

    def check(active_storage: str) -> None:
        for q in unique:
            if q.kpi == "basket" or q.t_to - q.t_from > MINUTE_WINDOW:
                assert q not in got, q  # not additive, or long: left to kpi_value
            else:
                assert got[q] == pytest.approx(expected[q], rel=1e-12, abs=1e-9), (
                    q,
                    active_storage,
                )

    async with transaction(sessions) as session:
        got = await store.kpis.additive_values(session, unique)
        expected = await store.kpis.kpi_values(session, unique)
    assert sum(1 for v in got.values() if v) > 500  # most windows hold data
    check("orders")
    await _evaluator_reads_equal_kpi_value(sessions, unique, now)

    # `orders` switches over to version 2: both reads follow it to `orders@2`.
    db.execute("UPDATE kpi_versions SET state = 'retired' WHERE kpi = 'orders'")
    db.execute(
        "INSERT INTO kpi_versions (kpi, version, spec, storage, state)"
        " SELECT kpi, 2, spec, 'orders@2', 'active' FROM kpi_versions"
        " WHERE kpi = 'orders' AND version = 1"
    )
    async with transaction(sessions) as session:
        before = got
        got = await store.kpis.additive_values(session, unique)
        expected = await store.kpis.kpi_values(session, unique)
    check("orders@2")
    tripled = [q for q in got if q.kpi == "orders" and before[q]]
    assert tripled
    assert all(got[q] == 3 * before[q] for q in tripled)  # type: ignore[operator]


async def _evaluator_reads_equal_kpi_value(
    sessions: async_sessionmaker[AsyncSession], queries: list[Query], now: datetime
) -> None:
    """The evaluator's reads (minute sums, ratios of two additive KPIs from them, kpi_value
    for the rest) answer exactly what kpi_value answers for every window."""
    ratios = [
        q._replace(kpi=kpi, dims=tuple(d for d in q.dims if d[0] == "source"))
        for q in queries
        if q.kpi == "revenue"
        for kpi in ("revenue_per_order", "revenue_per_basket")
    ]
    empty = Query("revenue_per_order", now + timedelta(hours=1), now + timedelta(hours=2))
    wanted = [*queries, *ratios, empty]
    evaluator = Evaluator(default_timezone="UTC", external_url="http://x", events_topic="t")
    async with transaction(sessions) as session:
        await evaluator.config_cache.refresh(session)
        got = await evaluator.reads.read(session, evaluator.config.kpis, wanted)
        expected = await store.kpis.kpi_values(session, wanted)
    assert set(got) == set(wanted)
    assert expected[empty] is None  # no orders: NULL, not a division by zero
    for q in wanted:
        if expected[q] is None:
            assert got[q] is None, q
        else:
            assert got[q] == pytest.approx(expected[q], rel=1e-12, abs=1e-9), q
    assert sum(1 for q in ratios if got[q]) > 100

    # Nine days back is final under a 7-day lateness: those windows are summed from whole
    # hours of minutes, kept, and windows moved by a few minutes are summed from them.
    final = now - timedelta(days=8)
    settled = [q for q in wanted if q.t_to <= final]
    moved = [q._replace(t_from=q.t_from - SHIFT, t_to=q.t_to - SHIFT) for q in settled]
    reads = evaluator.reads
    async with transaction(sessions) as session:
        first = await reads.read(session, evaluator.config.kpis, wanted, final)
        hours, misses = len(reads.final_hours), reads.final_hours.misses
        second = await reads.read(session, evaluator.config.kpis, [*wanted, *moved], final)
        expected.update(await store.kpis.kpi_values(session, moved))
    assert hours > 20
    assert reads.final_hours.hits > 0
    assert reads.final_hours.misses - misses < hours / 2  # most moved windows: hours kept
    assert first == {q: second[q] for q in wanted}
    for q in moved:
        assert (second[q] is None) == (expected[q] is None), q
        if expected[q] is not None:
            assert second[q] == pytest.approx(expected[q], rel=1e-12, abs=1e-9), q
