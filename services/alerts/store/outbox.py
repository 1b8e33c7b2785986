"""The notification outbox: `deliveries` (written with the state change that caused them,
sent after commit) and `notifications` (one row per delivery attempt)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.store._json import jsonb


@dataclass(frozen=True, slots=True)
class Delivery:
    """A pending delivery as the deliverer picks it up."""

    id: int
    channel: str
    idempotency_key: str
    payload: Mapping[str, Any]
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery; `final` when no further attempt follows a failure."""

    delivery_id: int
    channel: str
    number: int
    ok: bool
    retryable: bool | None
    http_status: int | None
    error: str | None
    started_at: datetime
    duration_ms: float
    next_attempt_at: datetime | None
    final: bool

    @property
    def delivery_status(self) -> str:
        return "delivered" if self.ok else ("failed" if self.final else "pending")


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    """An attempt as the API's delivery log shows it."""

    id: int
    delivery_id: int
    channel: str
    attempt: int
    status: str
    retryable: bool | None
    http_status: int | None
    error: str | None
    started_at: datetime
    duration_ms: float
    idempotency_key: str
    delivery_status: str


_ENQUEUE = text(
    "INSERT INTO deliveries (channel, group_key, seq, idempotency_key, payload)"
    " VALUES (:channel, :group_key, :seq, :key, CAST(:payload AS jsonb)) RETURNING id"
)
_DUE = text(
    "SELECT id, channel, idempotency_key, payload, attempts, created_at FROM deliveries"
    " WHERE status = 'pending' AND next_attempt_at <= :now AND NOT (id = ANY(:exclude))"
    " ORDER BY next_attempt_at, id LIMIT :limit"
)
_NEXT_DUE = text("SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'")
_DEPTH = text("SELECT count(*) FROM deliveries WHERE status = 'pending'")
_RECORD_ATTEMPT = text(
    "INSERT INTO notifications (delivery_id, channel, attempt, status, retryable,"
    " http_status, error, started_at, duration_ms) VALUES (:id, :channel, :attempt,"
    " :status, :retryable, :http_status, :error, :started_at, :duration_ms)"
)
# A failed attempt with a retry ahead keeps the row pending until `next_attempt_at`.
_SET_STATUS = text(
    "UPDATE deliveries SET attempts = :attempt, status = :status,"
    " last_error = :error, next_attempt_at = coalesce(:next, next_attempt_at),"
    " delivered_at = CASE WHEN :ok THEN now() END WHERE id = :id"
)
_FAIL = text("UPDATE deliveries SET status = 'failed', last_error = :reason WHERE id = :id")
_LOG = text(
    "SELECT n.id, n.delivery_id, n.channel, n.attempt, n.status, n.retryable,"
    " n.http_status, n.error, n.started_at, n.duration_ms, d.idempotency_key,"
    " d.status AS delivery_status FROM notifications n"
    " JOIN deliveries d ON d.id = n.delivery_id ORDER BY n.id DESC LIMIT :limit"
)


async def enqueue_delivery(
    session: AsyncSession,
    *,
    channel: str,
    group_key: str,
    seq: int,
    idempotency_key: str,
    payload: Mapping[str, Any],
) -> int:
    params = {
        "channel": channel,
        "group_key": group_key,
        "seq": seq,
        "key": idempotency_key,
        "payload": jsonb(payload),
    }
    return int((await session.execute(_ENQUEUE, params)).scalar_one())


async def due_deliveries(
    session: AsyncSession, now: datetime, *, limit: int, exclude: Sequence[int]
) -> list[Delivery]:
    rows = await session.execute(_DUE, {"now": now, "limit": limit, "exclude": list(exclude)})
    return [Delivery(*r) for r in rows]


async def next_delivery_at(session: AsyncSession) -> datetime | None:
    value = (await session.execute(_NEXT_DUE)).scalar_one()
    return value if isinstance(value, datetime) else None


async def queue_depth(session: AsyncSession) -> int:
    return int((await session.execute(_DEPTH)).scalar_one())


async def record_attempt(session: AsyncSession, attempt: Attempt) -> None:
    """The attempt into `notifications` and the delivery's new status, in one transaction."""
    await session.execute(
        _RECORD_ATTEMPT,
        {
            "id": attempt.delivery_id,
            "channel": attempt.channel,
            "attempt": attempt.number,
            "status": "sent" if attempt.ok else "failed",
            "retryable": attempt.retryable,
            "http_status": attempt.http_status,
            "error": attempt.error,
            "started_at": attempt.started_at,
            "duration_ms": attempt.duration_ms,
        },
    )
    await session.execute(
        _SET_STATUS,
        {
            "id": attempt.delivery_id,
            "attempt": attempt.number,
            "status": attempt.delivery_status,
            "error": attempt.error,
            "next": attempt.next_attempt_at,
            "ok": attempt.ok,
        },
    )


async def fail_delivery(session: AsyncSession, delivery_id: int, reason: str) -> None:
    await session.execute(_FAIL, {"id": delivery_id, "reason": reason})


async def list_notifications(session: AsyncSession, *, limit: int) -> list[NotificationRecord]:
    rows = await session.execute(_LOG, {"limit": limit})
    return [NotificationRecord(*r) for r in rows]
