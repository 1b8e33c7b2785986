"""`silences`: label matchers and an expiry, kept after they end (as Alertmanager does)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.silence import Matcher, Silence
from services.alerts.store._json import jsonb


@dataclass(frozen=True, slots=True)
class SilenceRecord:
    """A silence as the API shows it."""

    id: int
    matchers: list[dict[str, Any]]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str
    created_at: datetime


_COLUMNS = "id, matchers, starts_at, ends_at, created_by, comment, created_at"
_ACTIVE = text(
    "SELECT id, matchers, starts_at, ends_at FROM silences"
    " WHERE starts_at <= :now AND ends_at > :now"
)
_LIST = text(f"SELECT {_COLUMNS} FROM silences WHERE :all OR ends_at > now() ORDER BY id")
_CREATE = text(
    "INSERT INTO silences (matchers, starts_at, ends_at, created_by, comment)"
    " VALUES (CAST(:matchers AS jsonb), :starts_at, :ends_at, :by, :comment)"
    f" RETURNING {_COLUMNS}"
)
# An expired silence must still satisfy ends_at > starts_at, even one not yet started.
_EXPIRE = text(
    "UPDATE silences SET ends_at = greatest(now(), starts_at + interval '1 ms')"
    " WHERE id = :id AND ends_at > now() RETURNING id"
)


async def active_silences(session: AsyncSession, now: datetime) -> list[Silence]:
    rows = await session.execute(_ACTIVE, {"now": now})
    return [
        Silence(
            id=r.id,
            matchers=tuple(Matcher.model_validate(m) for m in r.matchers),
            starts_at=r.starts_at,
            ends_at=r.ends_at,
        )
        for r in rows
    ]


async def list_silences(session: AsyncSession, *, include_expired: bool) -> list[SilenceRecord]:
    rows = await session.execute(_LIST, {"all": include_expired})
    return [SilenceRecord(*r) for r in rows]


async def create_silence(
    session: AsyncSession,
    matchers: Sequence[Matcher],
    starts_at: datetime,
    ends_at: datetime,
    created_by: str,
    comment: str,
) -> SilenceRecord:
    row = (
        await session.execute(
            _CREATE,
            {
                "matchers": jsonb([m.model_dump(mode="json") for m in matchers]),
                "starts_at": starts_at,
                "ends_at": ends_at,
                "by": created_by,
                "comment": comment,
            },
        )
    ).one()
    return SilenceRecord(*row)


async def expire_silence(session: AsyncSession, silence_id: int) -> bool:
    """Ends a silence now; False when there is no such silence still running."""
    return (await session.execute(_EXPIRE, {"id": silence_id})).first() is not None
