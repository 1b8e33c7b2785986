"""Alembic migrations: the only way the schema changes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from shared.db import make_sync_engine
from shared.settings import BaseServiceSettings

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic config that needs no alembic.ini, so the installed package can migrate."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(settings: BaseServiceSettings, revision: str = "heads") -> None:
    """Migrate the configured database (and schema, if any) to `revision`."""
    engine = make_sync_engine(settings, application_name="pacekeeper-migrate")
    try:
        if settings.database_schema:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{settings.database_schema}"')
        command.upgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()
