"""On TimescaleDB: the hourly and daily continuous aggregates behind kpi_value for old hours
and days give what the per-minute points say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.timescaledb import refresh_aggregate

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]


def test_old_whole_hours_come_from_the_continuous_aggregate(db: Conn) -> None:
    conn = db
    for spec in (
        {"name": "orders", "kind": "count", "event": "o", "dimensions": ["source"]},
        {"name": "top", "kind": "max", "event": "o", "field": "properties.v"},
        {"name": "aov", "kind": "avg", "event": "o", "field": "properties.v"},
    ):
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES (%s, %s)",
            (spec["name"], orjson.dumps(spec).decode()),
        )
    # Three hours of minutes, thirty days ago: past the horizon, so final.
    conn.execute(
        """
        INSERT INTO kpi_points (kpi, dims, bucket, count, sum, max)
        SELECT k, d::jsonb,
               date_trunc('hour', now() - interval '30 days') + m * interval '1 minute',
               2, 2 * m, m
        FROM generate_series(0, 179) AS m,
             (VALUES ('orders'), ('top'), ('aov')) AS kk(k),
             (VALUES ('{"source": "web"}'), ('{"source": "app"}')) AS dd(d)
        """
    )
    refresh_aggregate(conn, "kpi_points_hourly")
    window = (
        "date_trunc('hour', now() - interval '30 days') + interval '17 minutes'",
        "date_trunc('hour', now() - interval '30 days') + interval '163 minutes'",
    )
    query = (
        f"SELECT kpi_value('orders', {window[0]}, {window[1]}),"
        f" kpi_value('orders', {window[0]}, {window[1]}, '{{\"source\": \"web\"}}'),"
        f" kpi_value('top', {window[0]}, {window[1]}),"
        f" kpi_value('aov', {window[0]}, {window[1]})"
    )
    expected = (146 * 2 * 2, 146 * 2, 162, sum(range(17, 163)) / 146)
    assert conn.execute(query).fetchone() == pytest.approx(expected)
    # The middle hour now exists only in the aggregate: kpi_value must still see it.
    conn.execute(
        "DELETE FROM kpi_points WHERE bucket >= date_trunc('hour', now() - interval '30 days')"
        " + interval '1 hour' AND bucket < date_trunc('hour', now() - interval '30 days')"
        " + interval '2 hours'"
    )
    assert conn.execute(query).fetchone() == pytest.approx(expected)
    series = conn.execute(
        f"SELECT value FROM kpi_series('orders', {window[0]}, {window[1]}, '1 hour')"
    ).fetchall()
    assert [r[0] for r in series] == [43 * 4, 60 * 4, 43 * 4]


def test_old_whole_days_come_from_the_daily_aggregate(db: Conn) -> None:
    day0 = "date_trunc('day', now() - interval '40 days', 'UTC')"
    conn = db
    conn.execute(
        "INSERT INTO kpis (name, spec) VALUES ('visits', %s)",
        (orjson.dumps({"name": "visits", "kind": "count", "event": "v"}).decode(),),
    )
    # Three UTC days of minutes, forty days ago: one visit a minute, value = day + 1.
    conn.execute(
        f"""
        INSERT INTO kpi_points (kpi, dims, bucket, count, sum, max)
        SELECT 'visits', '{{}}'::jsonb, {day0} + m * interval '1 minute',
               m / 1440 + 1, 0, 0
        FROM generate_series(0, 3 * 1440 - 1) AS m
        """
    )
    refresh_aggregate(conn, "kpi_points_hourly")
    refresh_aggregate(conn, "kpi_points_daily")
    # From 22:30 on day 0 to 01:15 on day 2: minute edges, hour edges, one whole day.
    window = (
        f"{day0} + interval '22 hours 30 minutes'",
        f"{day0} + interval '2 days 1 hour 15 minutes'",
    )
    query = f"SELECT kpi_value('visits', {window[0]}, {window[1]})"
    expected = 90 * 1 + 1440 * 2 + 75 * 3
    assert conn.execute(query).fetchone() == (expected,)
    # Day 1 now exists only in the daily aggregate (minutes deleted, hourly refreshed
    # to nothing): kpi_value must still count it.
    conn.execute(
        f"DELETE FROM kpi_points WHERE bucket >= {day0} + interval '1 day'"
        f" AND bucket < {day0} + interval '2 days'"
    )
    first = conn.execute(f"SELECT {day0}").fetchone()
    assert first is not None
    day1 = first[0] + timedelta(days=1)
    refresh_aggregate(conn, "kpi_points_hourly", day1, day1 + timedelta(days=1))
    assert conn.execute(query).fetchone() == (expected,)
    grafana = conn.execute(
        "SELECT has_table_privilege('grafana', 'kpi_points_daily', 'SELECT')"
    ).fetchone()
    assert grafana == (True,)


MINUTES = 20 * 1440
SOURCES = ("web", "app")
MATH = {
    "orders": {"kind": "count", "event": "o", "dimensions": ["source"]},
    "revenue": {"kind": "sum", "event": "o", "field": "properties.v", "dimensions": ["source"]},
    "low": {"kind": "min", "event": "o", "field": "properties.v", "dimensions": ["source"]},
    "top": {"kind": "max", "event": "o", "field": "properties.v", "dimensions": ["source"]},
    "aov": {"kind": "avg", "event": "o", "field": "properties.v", "dimensions": ["source"]},
}


def point(i: int, k: int) -> tuple[int, float, float, float]:
    """count, sum, min, max of minute i for source k: a simple, irregular pattern."""
    return i % 5 + 1 + k, (i % 17) * 1.25 + k, float(i % 7 + k), float(i % 11 + 20 - k)


@pytest.fixture
def history(db: Conn) -> datetime:
    """Twenty days of minutes (every third one) up to now, both aggregates materialized."""
    base = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=19)
    for name, spec in MATH.items():
        db.execute(
            "INSERT INTO kpis (name, spec) VALUES (%s, %s)",
            (name, orjson.dumps({"name": name, **spec}).decode()),
        )
    with db.cursor().copy(
        "COPY kpi_points (kpi, dims, bucket, count, sum, min, max) FROM STDIN"
    ) as copy:
        for i in range(0, MINUTES, 3):
            for k, source in enumerate(SOURCES):
                dims = orjson.dumps({"source": source}).decode()
                for name in MATH:
                    copy.write_row((name, dims, base + timedelta(minutes=i), *point(i, k)))
    refresh_aggregate(db, "kpi_points_hourly")
    refresh_aggregate(db, "kpi_points_daily")
    return base


def oracle_values(lo: float, hi: float, source: int | None) -> tuple[float | None, ...]:
    """The five KPIs over minutes [lo, hi) counted from the start of the history."""
    rows = [
        point(i, k)
        for i in range(0, MINUTES, 3)
        if lo <= i < hi
        for k in range(len(SOURCES))
        if source in (None, k)
    ]
    if not rows:
        return (0.0, 0.0, None, None, None)
    count = float(sum(r[0] for r in rows))
    total = sum(r[1] for r in rows)
    return (count, total, min(r[2] for r in rows), max(r[3] for r in rows), total / count)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the history is read-only
)
@given(
    start=st.integers(-60, MINUTES),
    length=st.integers(0, MINUTES),
    seconds=st.integers(0, 59),
    source=st.sampled_from([None, 0, 1]),
)
def test_any_window_across_minutes_hours_and_days_equals_the_minutes_it_covers(
    db: Conn, history: datetime, start: int, length: int, seconds: int, source: int | None
) -> None:
    lo = history + timedelta(minutes=start, seconds=seconds)
    hi = lo + timedelta(minutes=length)
    dims = None if source is None else orjson.dumps({"source": SOURCES[source]}).decode()
    row = db.execute(
        "SELECT "
        + ", ".join(f"kpi_value('{name}', %(lo)s, %(hi)s, %(dims)s::jsonb)" for name in MATH),
        {"lo": lo, "hi": hi, "dims": dims},
    ).fetchone()
    # A minute counts when it starts inside the window.
    first = start + (1 if seconds else 0)
    expected = oracle_values(first, start + length + (1 if seconds else 0), source)
    assert row == pytest.approx(expected), (lo, hi, source)
