"""One active evaluator: a PostgreSQL advisory lock held on a dedicated connection.

The lock lives exactly as long as the connection: a leader that exits or is killed loses
it at once (the server sees the socket close), one whose host vanishes loses it when the
server's TCP keepalives give up (~11 s, set per session below). Standbys try the lock
every few seconds, so one takes over within 15 s. Every leader write goes through the lock
connection, so a leader that lost it cannot write on: its next statement fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("pacekeeper.alerts.leader")

# Server-side keepalives for the lock connection: idle 5 s, then 3 probes 2 s apart.
_KEEPALIVES = (
    "SET tcp_keepalives_idle = 5",
    "SET tcp_keepalives_interval = 2",
    "SET tcp_keepalives_count = 3",
)


def lock_key(scope: str) -> int:
    """A stable signed 64-bit key per schema: advisory locks are database-wide, and tests
    (or tenants) in their own schemas must not fight over one evaluator lock."""
    digest = hashlib.sha256(f"pacekeeper.alerts.evaluator:{scope}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def _try_lock(conn: AsyncConnection, key: int) -> bool:
    for statement in _KEEPALIVES:
        await conn.execute(text(statement))
    got = (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})).scalar()
    await conn.commit()
    return bool(got)


@asynccontextmanager
async def leadership(engine: AsyncEngine, *, poll_seconds: float) -> AsyncIterator[AsyncConnection]:
    """Wait (as a standby) until this process holds the lock; yield the lock connection.

    On exit the connection is closed, which releases the lock."""
    while True:
        try:
            conn = await engine.connect()
        except (DBAPIError, OSError) as exc:
            log.warning("database unreachable; standing by", extra={"error": str(exc)[:200]})
            await asyncio.sleep(poll_seconds)
            continue
        try:
            scope = (await conn.execute(text("SELECT current_schema()"))).scalar_one()
            if await _try_lock(conn, lock_key(str(scope))):
                break
        except (DBAPIError, OSError) as exc:
            log.warning("lock attempt failed", extra={"error": str(exc)[:200]})
        await conn.close()
        await asyncio.sleep(poll_seconds)
    try:
        yield conn
    finally:
        # Invalidate rather than return to the pool: the lock must not outlive leadership.
        await conn.invalidate()
        await conn.close()
