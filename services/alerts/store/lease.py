"""Evaluator leadership: the advisory lock that decides it, and `evaluator_lease`, the
bookkeeping row that says who holds it, since when, and how many takeovers there were."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    epoch: int
    acquired_at: datetime
    heartbeat_at: datetime


# Server-side keepalives for the lock connection: idle 5 s, then 3 probes 2 s apart, so
# the server drops a vanished leader's connection (and its lock) within ~11 s.
_KEEPALIVES = (
    text("SET tcp_keepalives_idle = 5"),
    text("SET tcp_keepalives_interval = 2"),
    text("SET tcp_keepalives_count = 3"),
)
_TRY_LOCK = text("SELECT pg_try_advisory_lock(:key)")
_SCHEMA = text("SELECT current_schema()")
_TAKE = text(
    "INSERT INTO evaluator_lease (name, holder, epoch, acquired_at, heartbeat_at)"
    " VALUES (:name, :holder, 1, now(), now()) ON CONFLICT (name) DO UPDATE"
    " SET holder = EXCLUDED.holder, epoch = evaluator_lease.epoch + 1,"
    " acquired_at = now(), heartbeat_at = now() RETURNING epoch"
)
_HEARTBEAT = text(
    "UPDATE evaluator_lease SET heartbeat_at = now() WHERE name = :name AND holder = :holder"
)
_GET = text(
    "SELECT holder, epoch, acquired_at, heartbeat_at FROM evaluator_lease WHERE name = :name"
)


async def current_schema(conn: AsyncConnection) -> str:
    return str((await conn.execute(_SCHEMA)).scalar_one())


async def try_lock(conn: AsyncConnection, key: int) -> bool:
    """Take the session-level advisory lock `key` if free, on a connection with short
    keepalives; commits, so the lock is the only thing the connection holds."""
    for statement in _KEEPALIVES:
        await conn.execute(statement)
    got = (await conn.execute(_TRY_LOCK, {"key": key})).scalar()
    await conn.commit()
    return bool(got)


async def take_lease(session: AsyncSession, name: str, holder: str) -> int:
    """Record `holder` as the leader; returns the new epoch."""
    return int((await session.execute(_TAKE, {"name": name, "holder": holder})).scalar_one())


async def heartbeat_lease(session: AsyncSession, name: str, holder: str) -> None:
    await session.execute(_HEARTBEAT, {"name": name, "holder": holder})


async def get_lease(session: AsyncSession, name: str) -> Lease | None:
    row = (await session.execute(_GET, {"name": name})).first()
    return None if row is None else Lease(*row)
