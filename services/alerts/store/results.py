"""Closed goal periods: `goal_results` (each period's result as reported when it closed and
as it stands now, with the last restatement and what was last notified) and
`goal_restatements` (every change, for the audit trail)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class ResultRow:
    goal: str
    period_start: datetime
    period_end: datetime
    kpi: str
    direction: str
    reported_value: float | None
    reported_target: float | None
    reported_status: str | None
    reported_at: datetime
    value: float | None
    target: float | None
    status: str | None
    checked_at: datetime
    restatements: int = 0
    restated_at: datetime | None = None
    restated_delta: float | None = None
    restated_relative: float | None = None
    notified_value: float | None = None
    notified_status: str | None = None
    notified_restatement: int | None = None
    notified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RestatementRow:
    goal: str
    period_start: datetime
    number: int
    restated_at: datetime
    before_value: float | None
    value: float | None
    target: float | None
    status: str | None
    delta: float | None
    relative: float | None
    notified: bool


_COLUMNS = list(ResultRow.__dataclass_fields__)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM goal_results"
_OPEN = text(f"{_SELECT} WHERE goal = ANY(CAST(:goals AS text[])) AND period_end > :since")
_ONE = text(f"{_SELECT} WHERE goal = :goal AND period_start = :start")
_OF_GOAL = text(f"{_SELECT} WHERE goal = :goal ORDER BY period_start DESC LIMIT :limit")
# A period is recorded once: a second writer (a leader that lost the lock mid-cycle) keeps
# the first report.
_INSERT = text(
    f"INSERT INTO goal_results ({', '.join(_COLUMNS)})"
    f" VALUES ({', '.join(':' + c for c in _COLUMNS)})"
    " ON CONFLICT (goal, period_start) DO NOTHING"
)
_UPDATE = text(
    "UPDATE goal_results SET value = :value, target = :target, status = :status,"
    " checked_at = :checked_at, restatements = :restatements, restated_at = :restated_at,"
    " restated_delta = :restated_delta, restated_relative = :restated_relative,"
    " notified_value = :notified_value, notified_status = :notified_status,"
    " notified_restatement = :notified_restatement, notified_at = :notified_at"
    " WHERE goal = :goal AND period_start = :period_start"
)
_RESTATEMENT_COLUMNS = list(RestatementRow.__dataclass_fields__)
_INSERT_RESTATEMENT = text(
    f"INSERT INTO goal_restatements ({', '.join(_RESTATEMENT_COLUMNS)})"
    f" VALUES ({', '.join(':' + c for c in _RESTATEMENT_COLUMNS)})"
)
_RESTATEMENTS_OF = text(
    f"SELECT {', '.join(_RESTATEMENT_COLUMNS)} FROM goal_restatements"
    " WHERE goal = :goal AND period_start = ANY(CAST(:starts AS timestamptz[]))"
    " ORDER BY period_start DESC, number"
)


async def open_results(
    session: AsyncSession, goals: Collection[str], since: datetime
) -> dict[tuple[str, datetime], ResultRow]:
    """The recorded periods of `goals` that ended after `since`."""
    rows = await session.execute(_OPEN, {"goals": sorted(goals), "since": since})
    return {(r.goal, r.period_start): r for r in (ResultRow(*row) for row in rows)}


async def insert_results(session: AsyncSession, rows: Sequence[ResultRow]) -> None:
    if rows:
        await session.execute(_INSERT, [asdict(r) for r in rows])


async def restate(
    session: AsyncSession, rows: Sequence[ResultRow], restatements: Sequence[RestatementRow]
) -> None:
    """The periods' new standing and the restatements that led to it."""
    if rows:
        await session.execute(_UPDATE, [asdict(r) for r in rows])
    if restatements:
        await session.execute(_INSERT_RESTATEMENT, [asdict(r) for r in restatements])


async def goal_result(session: AsyncSession, goal: str, start: datetime) -> ResultRow | None:
    row = (await session.execute(_ONE, {"goal": goal, "start": start})).first()
    return None if row is None else ResultRow(*row)


async def goal_results(session: AsyncSession, goal: str, limit: int) -> list[ResultRow]:
    """Newest period first."""
    rows = await session.execute(_OF_GOAL, {"goal": goal, "limit": limit})
    return [ResultRow(*row) for row in rows]


async def restatements_of(
    session: AsyncSession, goal: str, starts: Sequence[datetime]
) -> list[RestatementRow]:
    if not starts:
        return []
    rows = await session.execute(_RESTATEMENTS_OF, {"goal": goal, "starts": list(starts)})
    return [RestatementRow(*row) for row in rows]
