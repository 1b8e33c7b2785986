"""Migrations on the real PostgreSQL: a fresh schema, the tables, the read-only role."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from tests.conftest import drop_schema, libpq_url

pytestmark = pytest.mark.integration

GRAFANA_URL = "postgresql://grafana:grafana@127.0.0.1:5432/pacekeeper"


def connect(database_url: str, schema: str) -> psycopg.Connection:
    conn = psycopg.connect(libpq_url(database_url), autocommit=True)
    conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
    return conn


def test_fresh_schema_migrates_and_is_idempotent(database_url: str, schema: str) -> None:
    # Running head again is a no-op, not an error.
    upgrade(BaseServiceSettings(database_url=database_url, database_schema=schema))
    with connect(database_url, schema) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            )
        }
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"events", "event_dedupe", "kpi_points", "kpis", "app_settings"} <= tables
    assert version is not None


def test_events_and_kpi_points_round_trip(database_url: str, schema: str) -> None:
    t = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    with connect(database_url, schema) as conn:
        conn.execute(
            "INSERT INTO events (time, source, id, type, user_id, properties, received_at)"
            " VALUES (%s, 'web-shop', 'e-1', 'order_completed', 'u-1', %s, %s)",
            (t, Jsonb({"revenue": 59.9}), t),
        )
        conn.execute(
            "INSERT INTO kpi_points (kpi, dims, bucket, count, sum, min, max)"
            " VALUES ('revenue', %s, %s, 1, 59.9, 59.9, 59.9)",
            (Jsonb({"source": "web-shop"}), t),
        )
        row = conn.execute("SELECT properties->>'revenue' FROM events WHERE id = 'e-1'").fetchone()
        assert row == ("59.9",)
        point = conn.execute(
            "SELECT count, sum FROM kpi_points WHERE kpi = 'revenue' AND dims @> %s",
            (Jsonb({"source": "web-shop"}),),
        ).fetchone()
        assert point == (1, 59.9)
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO kpi_points (kpi, bucket) VALUES ('revenue', %s)",
                (t.replace(second=30),),
            )


def test_grafana_reads_kpis_but_never_writes_or_sees_raw_events(
    database_url: str, schema: str
) -> None:
    try:
        grafana = psycopg.connect(GRAFANA_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.fail(f"the read-only grafana login must exist (deploy/local/postgres.sh): {exc}")
    with grafana:
        grafana.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        assert grafana.execute("SELECT count(*) FROM kpi_points").fetchone() == (0,)
        # Every dashboard query is cut off after 30 s (deploy/local/postgres.sh, compose init).
        assert grafana.execute("SHOW statement_timeout").fetchone() == ("30s",)
        # Refused twice over: the role is read-only by default and has no INSERT grant.
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            grafana.execute("INSERT INTO kpi_points (kpi, bucket) VALUES ('x', now())")
        grafana.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            grafana.execute("INSERT INTO kpi_points (kpi, bucket) VALUES ('x', now())")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            grafana.execute("SELECT * FROM events")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            grafana.execute("SELECT * FROM channels")  # channel secrets stay private


def test_downgrade_to_base_and_back(database_url: str, unique: str) -> None:
    from alembic import command

    from shared.db import make_sync_engine
    from shared.migrations import alembic_config

    settings = BaseServiceSettings(database_url=database_url, database_schema=unique)
    upgrade(settings)
    engine = make_sync_engine(settings, application_name="test")

    def tables() -> set[str]:
        with connect(database_url, unique) as conn:
            return {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables"
                    " WHERE table_schema = %s AND table_name <> 'alembic_version'",
                    (unique,),
                )
            }

    try:
        migrated = tables()
        command.downgrade(alembic_config(engine), "base")
        assert tables() == set(), "downgrade to base must remove every table it created"
        command.upgrade(alembic_config(engine), "heads")
        assert tables() == migrated
    finally:
        engine.dispose()
        drop_schema(database_url, unique)
