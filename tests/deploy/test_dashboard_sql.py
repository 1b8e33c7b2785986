"""Every SQL query of the provisioned dashboards runs as the read-only `grafana` role.

The queries are rendered as Grafana's PostgreSQL data source renders them and run against a
freshly migrated schema holding a few KPIs and their per-minute points, so a dashboard that
needs a grant the migrations do not give, or that misuses kpi_value / kpi_series, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from pydantic import TypeAdapter

from shared.config.kpis import KpiSpec
from shared.config.store import spec_json
from tests.conftest import connect_as_grafana, libpq_url
from tests.deploy.dashboards import SqlQuery, load_dashboards, render, sql_queries

pytestmark = pytest.mark.integration


KPIS: list[dict[str, Any]] = [
    {"name": "orders", "kind": "count", "event": "order_completed", "dimensions": ["source"]},
    {"name": "revenue", "kind": "sum", "event": "order_completed", "field": "properties.revenue"},
    {"name": "visitors", "kind": "count", "event": "page_viewed"},
    {"name": "conversion", "kind": "ratio", "numerator": "orders", "denominator": "visitors"},
]
WINDOW_FROM = datetime(2026, 11, 26, tzinfo=UTC)
WINDOW_TO = WINDOW_FROM + timedelta(hours=6)
# orders: (minute after WINDOW_FROM, source, count); the last one is in the window before.
ORDER_POINTS = [(5, "web-shop", 3), (65, "web-shop", 2), (125, "app", 4), (-30, "app", 2)]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def kpi_schema(schema: str, database_url: str) -> str:
    adapter: TypeAdapter[Any] = TypeAdapter(KpiSpec)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for raw in KPIS:
            spec = spec_json(adapter.validate_python(raw))
            conn.execute(
                "INSERT INTO kpis (name, spec) VALUES (%s, %s::jsonb)",
                (spec["name"], orjson.dumps(spec).decode()),
            )
        for minute, source, count in ORDER_POINTS:
            conn.execute(
                "INSERT INTO kpi_points (kpi, dims, bucket, count) VALUES ('orders', %s, %s, %s)",
                (
                    orjson.dumps({"source": source}).decode(),
                    WINDOW_FROM + timedelta(minutes=minute),
                    count,
                ),
            )
    return schema


@pytest.fixture
def grafana(kpi_schema: str, database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    with connect_as_grafana(database_url, kpi_schema) as conn:
        yield conn


def queries() -> list[SqlQuery]:
    return [q for name, d in load_dashboards().items() for q in sql_queries(name, d)]


def run(
    conn: psycopg.Connection[tuple[Any, ...]], query: SqlQuery, kpis: list[str], dims: str = ""
) -> tuple[list[str], list[tuple[Any, ...]]]:
    rendered = render(
        query.sql,
        time_from=iso(WINDOW_FROM),
        time_to=iso(WINDOW_TO),
        interval="1h",
        variables={"kpi": kpis, "dims": [dims], "goal": ["revenue-push"]},
    )
    cursor = conn.execute(rendered)
    columns = [column.name for column in cursor.description or []]
    return columns, cursor.fetchall()


def by_title(title: str) -> list[SqlQuery]:
    return [q for q in queries() if f"panel {title!r}" in q.where]


def test_the_kpi_variable_lists_every_kpi(grafana: psycopg.Connection[tuple[Any, ...]]) -> None:
    (variable,) = [q for q in queries() if q.fmt == "variable" and "kpis.json" in q.where]
    _, rows = run(grafana, variable, [])
    assert [row[0] for row in rows] == sorted(k["name"] for k in KPIS)


@pytest.mark.parametrize("kpi", [k["name"] for k in KPIS])
def test_every_panel_query_runs_for_every_kind_of_kpi(
    grafana: psycopg.Connection[tuple[Any, ...]], kpi: str
) -> None:
    for query in queries():
        if query.fmt != "variable":
            columns, _ = run(grafana, query, [kpi])
            assert columns, query.where


def test_window_value_is_the_kpi_value_of_the_range(
    grafana: psycopg.Connection[tuple[Any, ...]],
) -> None:
    (stat,) = [q for q in by_title("${kpi}") if "kpi_value" in q.sql]
    assert run(grafana, stat, ["orders"]) == (["orders"], [(9.0,)])
    assert run(grafana, stat, ["orders"], '{"source": "app"}') == (["orders"], [(4.0,)])


def test_series_are_kpi_series_at_the_interval_with_the_window_before(
    grafana: psycopg.Connection[tuple[Any, ...]],
) -> None:
    current, previous = sorted(
        (q for q in by_title("${kpi}") if "kpi_series" in q.sql), key=lambda q: q.where
    )
    columns, rows = run(grafana, current, ["orders"])
    assert columns == ["time", "orders"]
    assert [value for _, value in rows] == [3.0, 2.0, 4.0, 0.0, 0.0, 0.0]
    assert rows[0][0] == WINDOW_FROM
    columns, rows = run(grafana, previous, ["orders"])
    assert columns == ["time", "previous window"]
    # The window before, shifted onto this one: the order 30 minutes before the range
    # lands in the last hour.
    assert rows[0][0] == WINDOW_FROM
    assert [value for _, value in rows] == [0.0, 0.0, 0.0, 0.0, 0.0, 2.0]


def test_scorecard_compares_with_the_window_before_and_honours_dimensions(
    grafana: psycopg.Connection[tuple[Any, ...]],
) -> None:
    (scorecard,) = by_title("Window vs the window before")
    names = [k["name"] for k in KPIS]
    columns, rows = run(grafana, scorecard, names)
    assert columns == ["KPI", "Window", "Previous window", "Change"]
    table = {row[0]: row[1:] for row in rows}
    assert set(table) == set(names)
    assert table["orders"] == (9.0, 2.0, 3.5)
    # Only KPIs that declare every dimension of the filter are listed.
    _, rows = run(grafana, scorecard, names, '{"source": "web-shop"}')
    assert rows == [("orders", 5.0, 0.0, None)]
