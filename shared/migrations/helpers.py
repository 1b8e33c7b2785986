"""Small helpers the migrations share: TimescaleDB detection and read-only grants."""

from __future__ import annotations

from types import ModuleType

from alembic import op
from alembic.script import ScriptDirectory

from shared.timescaledb import retire_jobs

# Continuous aggregates answer only for data this far back: later minutes can still change
# (late events are accepted for 7 days) and are read from kpi_points directly, so a stale
# materialization never shows.
CAGG_HORIZON = "8 days"


def has_timescaledb() -> bool:
    """True when the extension is installed in this database (created by the DBA/infra script)."""
    bind = op.get_bind()
    return bool(
        bind.exec_driver_sql("select 1 from pg_extension where extname = 'timescaledb'").scalar()
    )


def retire_policies(*relations: str) -> None:
    """Before a downgrade drops `relations` (none named: every hypertable and aggregate of
    this schema), delete their policy jobs once no run of theirs is in flight: dropping a
    continuous aggregate under a running refresh can crash the server (see
    shared.timescaledb.retire_jobs). Commits the migration so far, like any autocommit
    block."""
    if not has_timescaledb():
        return
    with op.get_context().autocommit_block():
        bind = op.get_bind()
        schema = bind.exec_driver_sql("select current_schema()").scalar_one()
        retire_jobs(bind, schema, relations or None)


def grant_read_only(*tables: str, role: str = "grafana") -> None:
    """Let the read-only role (Grafana) read these tables, when that role exists here."""
    names = ", ".join(tables)
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema());
                EXECUTE 'GRANT SELECT ON {names} TO {role}';
            END IF;
        END $$;
        """
    )


def grant_execute(signature: str, role: str = "grafana") -> None:
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
                EXECUTE 'GRANT EXECUTE ON FUNCTION {signature} TO {role}';
            END IF;
        END $$;
        """
    )


def revision_module(revision: str) -> ModuleType:
    """An earlier revision's module, so that a later one can run the same DDL (0009 builds
    on TimescaleDB what 0001, 0004 and 0007 build there) instead of a copy of it."""
    config = op.get_context().config
    assert config is not None
    script = ScriptDirectory.from_config(config).get_revision(revision)
    assert script is not None
    return script.module
