"""The TimescaleDB branch of the migrations on the real extension (deploy/local/timescaledb.sh):
hypertables, continuous aggregates, policy jobs, grants, and the read-only role reading old
data through the aggregates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import refresh_aggregate
from tests.conftest import connect_as_grafana, drop_schema, libpq_url, schedule_policies
from tests.deploy.dashboards import load_dashboards, render, sql_queries

pytestmark = pytest.mark.integration

TIMESCALEDB_VERSION = "2.28.3"  # deploy/local/timescaledb.sh and docker-compose.yml

Conn = psycopg.Connection[tuple[Any, ...]]


def jobs(conn: Conn, schema: str) -> set[tuple[str, str]]:
    rows = conn.execute(
        "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
        " WHERE hypertable_schema = %s",
        (schema,),
    )
    return {(r[0], r[1]) for r in rows}


EXPECTED_JOBS = {
    ("policy_compression", "events"),
    ("policy_retention", "events"),
    ("policy_compression", "kpi_points"),
    ("policy_refresh_continuous_aggregate", "kpi_points_hourly"),
    ("policy_refresh_continuous_aggregate", "kpi_points_daily"),
}


@pytest.fixture
def grafana(schema: str, database_url: str) -> Iterator[Conn]:
    with connect_as_grafana(database_url, schema) as conn:
        yield conn


def test_the_database_runs_the_built_extension_preloaded(db: Conn) -> None:
    version = db.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    assert version == (TIMESCALEDB_VERSION,)
    # Preloaded, the extension runs a scheduler per database: it runs the policies.
    schedulers = db.execute(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE application_name = 'TimescaleDB Background Worker Scheduler'"
        " AND datname = current_database()"
    ).fetchone()
    assert schedulers == (1,)


def test_migrations_build_hypertables_aggregates_and_policies(db: Conn, schema: str) -> None:
    hypertables = {
        (r[0], r[1])
        for r in db.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = %s",
            (schema,),
        )
    }
    assert {("events", True), ("kpi_points", True)} <= hypertables
    assert {"kpi_distinct", "kpi_funnel_steps", "kpi_retention_returns"} <= {
        name for name, _ in hypertables
    }
    aggregates = {
        r[0]
        for r in db.execute(
            "SELECT view_name FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = %s AND materialized_only",
            (schema,),
        )
    }
    assert aggregates == {"kpi_points_hourly", "kpi_points_daily"}
    assert jobs(db, schema) == EXPECTED_JOBS


def test_per_event_hypertables_keep_only_the_indexes_their_queries_use(
    db: Conn, schema: str
) -> None:
    # The aggregator writes these rows for nearly every event: each index is an insert more.
    # The time indexes create_hypertable adds are dropped (0011); every query of these
    # tables filters on kpi first, or on events' time through the primary key.
    rows = db.execute(
        "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = %s AND tablename = ANY(%s)",
        (schema, ["events", "kpi_distinct", "kpi_funnel_steps", "kpi_retention_returns"]),
    )
    assert {(r[0], r[1]) for r in rows} == {
        ("events", "events_pkey"),
        ("kpi_distinct", "kpi_distinct_pkey"),
        ("kpi_funnel_steps", "kpi_funnel_steps_pkey"),
        ("kpi_funnel_steps", "kpi_funnel_steps_start"),
        ("kpi_retention_returns", "kpi_retention_returns_pkey"),
    }
    # A backfill's read of a time range still takes an index, not a scan of whole chunks.
    db.execute(
        "INSERT INTO events (time, source, id, type, received_at)"
        " VALUES (now() - interval '30 minutes', 's', '1', 'x', now())"
    )
    db.execute("SET enable_seqscan = off")  # a table of one row would be scanned anyway
    plan = " ".join(
        r[0]
        for r in db.execute(
            "EXPLAIN SELECT * FROM events WHERE type = 'x'"
            " AND time >= now() - interval '1 hour' AND time < now()"
        )
    )
    assert "Index" in plan, plan
    assert "Seq Scan" not in plan, plan


def test_downgrade_removes_every_job_and_upgrade_brings_them_back(
    database_url: str, unique: str
) -> None:
    from alembic import command

    from shared.db import make_sync_engine
    from shared.migrations import alembic_config

    settings = BaseServiceSettings(database_url=database_url, database_schema=unique)
    upgrade(settings)
    engine = make_sync_engine(settings, application_name="test")
    try:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            assert jobs(conn, unique) == EXPECTED_JOBS
            command.downgrade(alembic_config(engine), "base")
            assert jobs(conn, unique) == set()
            command.upgrade(alembic_config(engine), "heads")
            assert jobs(conn, unique) == EXPECTED_JOBS
    finally:
        engine.dispose()
        drop_schema(database_url, unique)


def test_downgrade_under_a_running_refresh_policy_keeps_the_server_up(
    database_url: str, unique: str
) -> None:
    """Dropping an aggregate while its refresh policy runs crashed TimescaleDB 2.28.3's
    worker (signal 11) and with it every connection. The downgrade retires the jobs first:
    it waits for the run in flight, and this connection, opened before, still works after."""
    from alembic import command

    from shared.db import make_sync_engine
    from shared.migrations import alembic_config

    settings = BaseServiceSettings(database_url=database_url, database_schema=unique)
    upgrade(settings)
    schedule_policies(database_url, unique, scheduled=False)
    engine = make_sync_engine(settings, application_name="test")
    try:
        with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(unique)))
            # 40 days of minutes for 8 KPIs: a refresh long enough to be caught running.
            conn.execute(
                "INSERT INTO kpi_points (kpi, bucket, count)"
                " SELECT 'k' || k, date_trunc('day', now()) - m * interval '1 minute', 1"
                " FROM generate_series(1, 8) k, generate_series(1, 40 * 1440) m"
            )
            backend = conn.info.backend_pid
            schedule_policies(database_url, unique, scheduled=True)
            names = [
                name
                for (name,) in conn.execute(
                    "SELECT application_name FROM timescaledb_information.jobs"
                    " WHERE hypertable_schema = %s"
                    " AND proc_name = 'policy_refresh_continuous_aggregate'",
                    (unique,),
                )
            ]
            deadline = datetime.now(UTC) + timedelta(seconds=30)
            while conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(%s)", (names,)
            ).fetchone() == (0,):
                assert datetime.now(UTC) < deadline, "no refresh policy run started"
                time.sleep(0.02)
            command.downgrade(alembic_config(engine), "base")
            assert jobs(conn, unique) == set()
            assert conn.execute("SELECT pg_backend_pid()").fetchone() == (backend,)
    finally:
        engine.dispose()
        drop_schema(database_url, unique)


def test_old_data_reads_through_the_aggregates_for_kpi_functions_and_dashboards(
    db: Conn, grafana: Conn
) -> None:
    """Old hours and days come from the continuous aggregates, recent minutes from
    kpi_points; both give what the raw per-minute points say, and every dashboard query
    runs as the read-only role over a window that reads the aggregates."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = (now - timedelta(days=30)).replace(minute=0)
    # (minute, source, orders): a month back and just now.
    points = [(old + timedelta(minutes=m), s, c) for m, s, c in [(5, "web", 3), (70, "app", 4)]]
    points += [(now - timedelta(minutes=m), s, c) for m, s, c in [(3, "web", 2), (1, "app", 1)]]
    spec = {"name": "orders", "kind": "count", "event": "order_completed", "dimensions": ["source"]}
    db.execute(
        "INSERT INTO kpis (name, spec) VALUES ('orders', %s::jsonb)", (orjson.dumps(spec).decode(),)
    )
    for bucket, source, count in points:
        db.execute(
            "INSERT INTO kpi_points (kpi, dims, bucket, count) VALUES ('orders', %s, %s, %s)",
            (orjson.dumps({"source": source}).decode(), bucket, count),
        )
    # What the aggregates' refresh policies do by themselves (test_timescaledb_policies).
    refresh_aggregate(db, "kpi_points_hourly")
    refresh_aggregate(db, "kpi_points_daily")
    hours = db.execute(
        "SELECT count(*) FROM kpi_points_hourly WHERE kpi = 'orders' AND bucket < %s",
        (old + timedelta(days=1),),
    ).fetchone()
    assert hours == (2,)

    def value(lo: datetime, hi: datetime, dims: dict[str, str] | None = None) -> float:
        row = grafana.execute(
            "SELECT kpi_value('orders', %s, %s, %s::jsonb)",
            (lo, hi, None if dims is None else orjson.dumps(dims).decode()),
        ).fetchone()
        assert row is not None
        return float(row[0])

    month = (now - timedelta(days=31), now + timedelta(minutes=1))
    assert value(*month) == 10
    assert value(*month, {"source": "app"}) == 5
    assert value(old, old + timedelta(hours=1)) == 3  # one materialized hour
    # The minutes of that hour are gone: only the aggregate still knows them.
    db.execute("DELETE FROM kpi_points WHERE bucket < %s", (now - timedelta(days=9),))
    assert value(*month) == 10
    days = grafana.execute(
        "SELECT sum(value), count(*) FROM kpi_series('orders', %s, %s, interval '1 day')",
        month,
    ).fetchone()
    assert days is not None
    assert days[0] == 10
    assert days[1] >= 31

    queries = [q for n, d in load_dashboards().items() for q in sql_queries(n, d)]
    assert queries, "the dashboards must have SQL panels"
    for query in queries:
        rendered = render(
            query.sql,
            time_from=month[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
            time_to=month[1].strftime("%Y-%m-%dT%H:%M:%SZ"),
            interval="1d",
            variables={"kpi": ["orders"], "dims": [""], "goal": ["none-yet"]},
        )
        cursor = grafana.execute(rendered)
        assert cursor.description, query.where


def test_a_plain_postgresql_database_is_converted_in_place_with_its_data(
    database_url: str, unique: str
) -> None:
    """A database the previous release migrated without the extension: once the extension
    exists, `pacekeeper migrate` (revision 0009) gives it hypertables, aggregates over all of
    its history and the policies, and every KPI answers as before."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    minutes = [now - timedelta(minutes=10 * i + 3) for i in range(40 * 144)]  # 40 days
    windows = [
        (now - timedelta(days=39, minutes=-7), now),
        (now - timedelta(days=30, hours=5), now - timedelta(days=9, minutes=13)),
        (now - timedelta(days=20), now - timedelta(days=19)),
    ]
    url = make_url(database_url).set(database=unique).render_as_string(hide_password=False)
    settings = BaseServiceSettings(database_url=url)
    with psycopg.connect(libpq_url(database_url), autocommit=True) as admin:
        # template0: a database without the extension, as before TimescaleDB was installed.
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(unique))
        )
        try:
            upgrade(settings, "0008")
            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                assert conn.execute(
                    "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
                ).fetchone() == (0,)
                spec = {"name": "orders", "kind": "count", "event": "o", "dimensions": ["source"]}
                conn.execute(
                    "INSERT INTO kpis (name, spec) VALUES ('orders', %s::jsonb)",
                    (orjson.dumps(spec).decode(),),
                )
                with conn.cursor().copy(
                    "COPY kpi_points (kpi, dims, bucket, count) FROM STDIN"
                ) as copy:
                    for i, minute in enumerate(minutes):
                        copy.write_row(("orders", '{"source": "web"}', minute, i % 4 + 1))
                conn.execute(
                    "INSERT INTO events (time, source, id, type, received_at)"
                    " SELECT t, 'web', 'e' || n, 'o', t"
                    " FROM unnest(%s::timestamptz[]) WITH ORDINALITY AS u(t, n)",
                    (minutes,),
                )
                before = [
                    conn.execute("SELECT kpi_value('orders', %s, %s)", w).fetchone()
                    for w in windows
                ]
                assert before == [
                    (float(sum(i % 4 + 1 for i, m in enumerate(minutes) if lo <= m < hi)),)
                    for lo, hi in windows
                ]
                # What deploy/local/postgres.sh does (the extension is trusted: the owner may).
                conn.execute("CREATE EXTENSION timescaledb")

            upgrade(settings)

            with psycopg.connect(libpq_url(url), autocommit=True) as conn:
                assert jobs(conn, "public") == EXPECTED_JOBS
                hypertables = {
                    r[0]
                    for r in conn.execute(
                        "SELECT hypertable_name FROM timescaledb_information.hypertables"
                    )
                }
                assert {"events", "kpi_points", "kpi_distinct"} <= hypertables
                counts = conn.execute(
                    "SELECT (SELECT count(*) FROM kpi_points), (SELECT count(*) FROM events)"
                ).fetchone()
                assert counts == (len(minutes), len(minutes))
                old_hours = conn.execute(
                    "SELECT count(*) FROM kpi_points_hourly WHERE bucket < %s",
                    (now - timedelta(days=11),),
                ).fetchone()
                assert old_hours is not None
                assert old_hours[0] >= 28 * 24, (
                    "history older than the policy's window must be materialized"
                )
                days = conn.execute("SELECT count(*) FROM kpi_points_daily").fetchone()
                assert days is not None
                assert days[0] >= 38
                after = [
                    conn.execute("SELECT kpi_value('orders', %s, %s)", w).fetchone()
                    for w in windows
                ]
                assert after == before
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(unique))
            )


def test_db_status_waits_until_every_policy_has_succeeded(
    schema: str, database_url: str, settings: BaseServiceSettings
) -> None:
    """What `make infra-up` runs: every policy job of the schema has succeeded at least once."""
    from typer.testing import CliRunner

    from services.cli import app

    paused = CliRunner().invoke(app, ["db-status"])
    assert paused.exit_code == 0, paused.output
    assert f"TimescaleDB {TIMESCALEDB_VERSION}" in paused.output
    schedule_policies(database_url, schema, scheduled=True)
    proven = CliRunner().invoke(app, ["db-status", "--wait", "60"])
    assert proven.exit_code == 0, proven.output
    for label in (
        "compression events",
        "retention events",
        "compression kpi_points",
        "refresh kpi_points_hourly",
        "refresh kpi_points_daily",
    ):
        assert label in proven.output
