"""On TimescaleDB (PGlite build): hourly continuous aggregate behind kpi_value for old hours."""

from __future__ import annotations

import orjson
import psycopg
import pytest

from tests.shared.test_timescaledb import libpq, migrate, timescale_url  # noqa: F401  # fixture

pytestmark = [pytest.mark.integration, pytest.mark.timescaledb]


def test_old_whole_hours_come_from_the_continuous_aggregate(timescale_url: str) -> None:  # noqa: F811
    migrate(timescale_url)
    with psycopg.connect(libpq(timescale_url), autocommit=True) as conn:
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
        conn.execute("CALL refresh_continuous_aggregate('kpi_points_hourly', NULL, NULL)")
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


def test_old_whole_days_come_from_the_daily_aggregate(timescale_url: str) -> None:  # noqa: F811
    migrate(timescale_url)
    day0 = "date_trunc('day', now() - interval '40 days', 'UTC')"
    with psycopg.connect(libpq(timescale_url), autocommit=True) as conn:
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
        conn.execute("CALL refresh_continuous_aggregate('kpi_points_hourly', NULL, NULL)")
        conn.execute("CALL refresh_continuous_aggregate('kpi_points_daily', NULL, NULL)")
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
        conn.execute(
            f"CALL refresh_continuous_aggregate('kpi_points_hourly', {day0} + interval '1 day',"
            f" {day0} + interval '2 days')"
        )
        assert conn.execute(query).fetchone() == (expected,)
        grafana = conn.execute(
            "SELECT has_table_privilege('grafana', 'kpi_points_daily', 'SELECT')"
            " WHERE EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana')"
        ).fetchone()
        assert grafana in (None, (True,))
