"""One active evaluator: a PostgreSQL advisory lock held on a dedicated connection.

The lock lives exactly as long as the connection: a leader that exits or is killed loses
it at once (the server sees the socket close), one whose host vanishes loses it when the
server's TCP keepalives give up (~11 s, set on the lock connection). Standbys try the lock
every few seconds, so one takes over within 15 s. Every leader write goes through the lock
connection, so a leader that lost it cannot write on: its next statement fails.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.alerts.store.lease import current_schema, try_lock

log = logging.getLogger("pacekeeper.alerts.leader")


def lock_key(scope: str) -> int:
    """A stable signed 64-bit key per schema: advisory locks are database-wide, and tests
    (or tenants) in their own schemas must not fight over one evaluator lock."""
    digest = hashlib.sha256(f"pacekeeper.alerts.evaluator:{scope}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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
            if await try_lock(conn, lock_key(await current_schema(conn))):
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
