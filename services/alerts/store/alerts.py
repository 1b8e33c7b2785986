"""`alerts` (one row per fingerprint: its current episode) and `acknowledgements`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.evaluation.lifecycle import AlertState, State
from services.alerts.store._json import jsonb


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """One fingerprint's alert as the evaluator keeps it in memory and in `alerts`."""

    fingerprint: str
    origin: str  # rule | goal
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    dims: Mapping[str, str]
    channels: tuple[str, ...]
    state: AlertState
    value: float | None = None
    context: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert as the API lists it, with its current episode's acknowledgement."""

    id: int
    fingerprint: str
    origin: str
    name: str
    labels: dict[str, str]
    annotations: dict[str, str]
    dims: dict[str, str]
    channels: list[str]
    state: str
    episode: int
    active_at: datetime | None
    fired_at: datetime | None
    resolved_at: datetime | None
    value: float | None
    context: dict[str, Any]
    acked_by: str | None
    ack_comment: str | None
    acked_at: datetime | None


@dataclass(frozen=True, slots=True)
class Episode:
    fingerprint: str
    episode: int
    state: str


_COLUMNS = (
    "fingerprint, origin, name, labels, annotations, dims, channels, state, episode,"
    " active_at, fired_at, resolved_at, last_breach_at, value, context"
)
_LOAD = text(f"SELECT {_COLUMNS} FROM alerts")
_SAVE = text(
    f"INSERT INTO alerts ({_COLUMNS}) VALUES (:fingerprint, :origin, :name,"
    " CAST(:labels AS jsonb), CAST(:annotations AS jsonb), CAST(:dims AS jsonb),"
    " :channels, :state, :episode, :active_at, :fired_at, :resolved_at,"
    " :last_breach_at, :value, CAST(:context AS jsonb))"
    " ON CONFLICT (fingerprint) DO UPDATE SET labels = EXCLUDED.labels,"
    " annotations = EXCLUDED.annotations, dims = EXCLUDED.dims,"
    " channels = EXCLUDED.channels, state = EXCLUDED.state,"
    " episode = EXCLUDED.episode, active_at = EXCLUDED.active_at,"
    " fired_at = EXCLUDED.fired_at, resolved_at = EXCLUDED.resolved_at,"
    " last_breach_at = EXCLUDED.last_breach_at, value = EXCLUDED.value,"
    " context = EXCLUDED.context, updated_at = now()"
)
_PURGE = text(
    "DELETE FROM alerts WHERE (state = 'resolved' AND resolved_at < :before)"
    " OR (state = 'inactive' AND updated_at < :before) RETURNING fingerprint"
)
# Acknowledgements name an episode; once that episode is gone, so is its acknowledgement.
_PURGE_ACKS = text(
    "DELETE FROM acknowledgements k WHERE NOT EXISTS (SELECT 1 FROM alerts a"
    " WHERE a.fingerprint = k.fingerprint AND a.episode = k.episode)"
)
_LIST = text(
    "SELECT a.id, a.fingerprint, a.origin, a.name, a.labels, a.annotations, a.dims,"
    " a.channels, a.state, a.episode, a.active_at, a.fired_at, a.resolved_at,"
    " a.value, a.context, k.acked_by, k.comment AS ack_comment,"
    " k.created_at AS acked_at"
    " FROM alerts a LEFT JOIN acknowledgements k"
    " ON k.fingerprint = a.fingerprint AND k.episode = a.episode"
    " WHERE a.state <> 'inactive'"
    " AND (CAST(:states AS text[]) IS NULL OR a.state = ANY(CAST(:states AS text[])))"
    " ORDER BY (a.state = 'firing') DESC, a.updated_at DESC LIMIT :limit"
)
_EPISODE = text("SELECT fingerprint, episode, state FROM alerts WHERE id = :id")
_ACKNOWLEDGE = text(
    "INSERT INTO acknowledgements (fingerprint, episode, acked_by, comment)"
    " VALUES (:fp, :ep, :by, :comment) ON CONFLICT (fingerprint, episode) DO UPDATE"
    " SET acked_by = EXCLUDED.acked_by, comment = EXCLUDED.comment"
)
_ACKED = text(
    "SELECT a.fingerprint FROM alerts a JOIN acknowledgements k"
    " ON k.fingerprint = a.fingerprint AND k.episode = a.episode"
    " WHERE a.state IN ('pending', 'firing')"
)


def _record(row: Row[Any]) -> AlertRecord:
    return AlertRecord(
        fingerprint=row.fingerprint,
        origin=row.origin,
        name=row.name,
        labels=row.labels,
        annotations=row.annotations,
        dims=row.dims,
        channels=tuple(row.channels),
        state=AlertState(
            state=State(row.state),
            episode=row.episode,
            active_at=row.active_at,
            fired_at=row.fired_at,
            resolved_at=row.resolved_at,
            last_breach_at=row.last_breach_at,
        ),
        value=row.value,
        context=row.context,
    )


async def load_alerts(session: AsyncSession) -> list[AlertRecord]:
    """Every alert still on record: live ones, and resolved ones whose episode numbers must
    carry on if they break again (old rows are purged after the retention)."""
    return [_record(r) for r in await session.execute(_LOAD)]


async def save_alerts(session: AsyncSession, records: Iterable[AlertRecord]) -> int:
    params = [
        {
            "fingerprint": r.fingerprint,
            "origin": r.origin,
            "name": r.name,
            "labels": jsonb(r.labels),
            "annotations": jsonb(r.annotations),
            "dims": jsonb(r.dims),
            "channels": list(r.channels),
            "state": r.state.state.value,
            "episode": r.state.episode,
            "active_at": r.state.active_at,
            "fired_at": r.state.fired_at,
            "resolved_at": r.state.resolved_at,
            "last_breach_at": r.state.last_breach_at,
            "value": r.value,
            "context": jsonb(r.context or {}),
        }
        for r in records
    ]
    if params:
        await session.execute(_SAVE, params)
    return len(params)


async def purge_resolved(session: AsyncSession, before: datetime) -> list[str]:
    """Forget alerts resolved (or cleared) before `before`, with their acknowledgements."""
    gone = [fingerprint for (fingerprint,) in await session.execute(_PURGE, {"before": before})]
    await session.execute(_PURGE_ACKS)
    return gone


async def list_alerts(
    session: AsyncSession, *, states: Sequence[str] | None, limit: int
) -> list[AlertView]:
    rows = await session.execute(
        _LIST, {"states": list(states) if states else None, "limit": limit}
    )
    return [AlertView(**r._mapping) for r in rows]


async def alert_episode(session: AsyncSession, alert_id: int) -> Episode | None:
    row = (await session.execute(_EPISODE, {"id": alert_id})).first()
    return None if row is None else Episode(*row)


async def acknowledge(
    session: AsyncSession, fingerprint: str, episode: int, by: str, comment: str
) -> None:
    await session.execute(
        _ACKNOWLEDGE, {"fp": fingerprint, "ep": episode, "by": by, "comment": comment}
    )


async def acked_fingerprints(session: AsyncSession) -> frozenset[str]:
    """Fingerprints whose current episode is acknowledged."""
    return frozenset(fingerprint for (fingerprint,) in await session.execute(_ACKED))
