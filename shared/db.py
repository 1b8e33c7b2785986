"""Async SQLAlchemy engine and session factory (psycopg 3), built at start-up, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from shared.settings import BaseServiceSettings


def _connect_args(
    settings: BaseServiceSettings, application_name: str, statement_timeout_ms: int | None = None
) -> dict[str, Any]:
    args: dict[str, Any] = {"application_name": application_name}
    options: list[str] = []
    if settings.database_schema:
        # Tests (and multi-tenant setups) live in their own schema; `public` stays visible
        # for extensions such as timescaledb.
        options.append(f"-c search_path={settings.database_schema},public")
    if statement_timeout_ms is not None:
        options.append(f"-c statement_timeout={statement_timeout_ms}")
    if options:
        args["options"] = " ".join(options)
    return args


def make_engine(
    settings: BaseServiceSettings,
    *,
    application_name: str,
    pool_size: int = 5,
    statement_timeout_ms: int | None = None,
) -> AsyncEngine:
    """`statement_timeout_ms` bounds every statement of the engine's sessions: a request
    that asks for too much is cancelled by the server instead of holding a connection."""
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        # Bound values hold webhook secrets, API key hashes and SMTP passwords: never put
        # them into an error message or a log line.
        hide_parameters=True,
        connect_args=_connect_args(settings, application_name, statement_timeout_ms),
    )


def make_sync_engine(settings: BaseServiceSettings, *, application_name: str) -> Engine:
    """For Alembic and CLI commands that run outside an event loop."""
    return create_engine(
        settings.database_url.get_secret_value(),
        pool_pre_ping=True,
        hide_parameters=True,  # as make_engine
        connect_args=_connect_args(settings, application_name),
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """The caller owns the transaction: commit on success, roll back on any error."""
    async with sessions() as session, session.begin():
        yield session
