"""Alembic environment: online migrations against the configured database."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from shared.db import make_sync_engine
from shared.settings import BaseServiceSettings


def _engine() -> tuple[Engine, bool]:
    engine = context.config.attributes.get("engine")
    if engine is not None:
        return engine, False
    return make_sync_engine(BaseServiceSettings(), application_name="pacekeeper-migrate"), True


def run_migrations_online() -> None:
    engine, owned = _engine()
    try:
        with engine.connect() as connection:
            schema = connection.exec_driver_sql("select current_schema()").scalar_one()
            # End the transaction that query opened: Alembic must own every transaction,
            # or a migration's autocommit block (CALL refresh_…) cannot commit around it.
            connection.commit()
            context.configure(
                connection=connection,
                target_metadata=None,
                version_table_schema=schema,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        if owned:
            engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run against a database")
run_migrations_online()
