"""`pacekeeper keys create|revoke|list`: manage ingest API keys."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from shared.events import SOURCE_PATTERN, valid_source
from shared.settings import BaseServiceSettings

# The key store pulls in SQLAlchemy; imported inside each command so `pacekeeper --help`
# and unrelated commands start fast.
if TYPE_CHECKING:
    from services.ingest import keys

app = typer.Typer(help="Ingest API keys: create (shown once), revoke, list.", no_args_is_help=True)


async def _create(settings: BaseServiceSettings, source: str) -> tuple[keys.StoredKey, str]:
    from services.ingest import keys
    from shared.db import make_engine

    engine = make_engine(settings, application_name="pacekeeper-keys", pool_size=1)
    try:
        async with engine.begin() as conn:
            stored, new = await keys.create(conn, source)
        return stored, new.key
    finally:
        await engine.dispose()


async def _revoke(settings: BaseServiceSettings, key_or_prefix: str) -> keys.StoredKey | None:
    from services.ingest import keys
    from shared.db import make_engine

    engine = make_engine(settings, application_name="pacekeeper-keys", pool_size=1)
    try:
        async with engine.begin() as conn:
            return await keys.revoke(conn, key_or_prefix)
    finally:
        await engine.dispose()


async def _list(settings: BaseServiceSettings, source: str | None) -> list[keys.StoredKey]:
    from services.ingest import keys
    from shared.db import make_engine

    engine = make_engine(settings, application_name="pacekeeper-keys", pool_size=1)
    try:
        async with engine.connect() as conn:
            return await keys.list_keys(conn, source)
    finally:
        await engine.dispose()


@app.command()
def create(
    source: str = typer.Option(..., "--source", help="the product this key sends for"),
) -> None:
    """Create a key for SOURCE; the key is printed once, alone on the last line."""
    if not valid_source(source):
        raise typer.BadParameter(f"must match {SOURCE_PATTERN}", param_hint="--source")
    stored, key = asyncio.run(_create(BaseServiceSettings(), source))
    typer.echo(f"created key {stored.prefix}… for source {stored.source}; store it now:", err=True)
    typer.echo(key)


@app.command()
def revoke(
    key: str = typer.Argument(..., help="the key's prefix (as `keys list` shows) or the key"),
) -> None:
    """Revoke a key; ingest refuses it within 10 seconds."""
    stored = asyncio.run(_revoke(BaseServiceSettings(), key))
    if stored is None:
        typer.echo("no active key with that prefix", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {stored.prefix} (source {stored.source})")


@app.command("list")
def list_(source: str | None = typer.Option(None, help="only this source's keys")) -> None:
    """List keys by prefix; the keys themselves are never stored."""
    for stored in asyncio.run(_list(BaseServiceSettings(), source)):
        state = "active" if stored.active else f"revoked {stored.revoked_at:%Y-%m-%d %H:%M}"
        typer.echo(f"{stored.prefix}\t{stored.source}\t{stored.created_at:%Y-%m-%d %H:%M}\t{state}")
