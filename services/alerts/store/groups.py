"""`alert_groups`: per channel and group key, what the last notification showed firing."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.dispatch import GroupState
from services.alerts.store._json import jsonb

_LOAD = text(
    "SELECT channel, group_key, group_labels, created_at, last_flush_at, notified, seq"
    " FROM alert_groups"
)
_SAVE = text(
    "INSERT INTO alert_groups (channel, group_key, group_labels, created_at,"
    " last_flush_at, notified, seq) VALUES (:channel, :group_key,"
    " CAST(:group_labels AS jsonb), :created_at, :last_flush_at,"
    " CAST(:notified AS jsonb), :seq)"
    " ON CONFLICT (channel, group_key) DO UPDATE SET"
    " last_flush_at = EXCLUDED.last_flush_at, notified = EXCLUDED.notified,"
    " seq = EXCLUDED.seq"
)
_DELETE = text("DELETE FROM alert_groups WHERE channel = :channel AND group_key = :group_key")


async def load_groups(session: AsyncSession) -> list[GroupState]:
    return [
        GroupState(
            channel=r.channel,
            group_key=r.group_key,
            group_labels=r.group_labels,
            created_at=r.created_at,
            last_flush_at=r.last_flush_at,
            # Stored as [fingerprint, episode] pairs: JSON has no tuples.
            notified=frozenset((fp, int(ep)) for fp, ep in r.notified),
            seq=r.seq,
        )
        for r in await session.execute(_LOAD)
    ]


async def save_group(session: AsyncSession, group: GroupState) -> None:
    await session.execute(
        _SAVE,
        {
            "channel": group.channel,
            "group_key": group.group_key,
            "group_labels": jsonb(dict(group.group_labels)),
            "created_at": group.created_at,
            "last_flush_at": group.last_flush_at,
            "notified": jsonb(sorted([fp, ep] for fp, ep in group.notified)),
            "seq": group.seq,
        },
    )


async def delete_group(session: AsyncSession, channel: str, group_key: str) -> None:
    await session.execute(_DELETE, {"channel": channel, "group_key": group_key})
