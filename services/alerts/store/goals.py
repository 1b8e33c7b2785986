"""`goal_status`: one row per goal evaluation whose status differs from the previous one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True, slots=True)
class GoalStatusRecord:
    """One goal's status at one evaluation (the goal's name is the key it is stored under)."""

    period_start: datetime
    period_end: datetime
    status: str
    value: float | None
    target: float | None
    expected: float | None
    projection: float | None
    evaluated_at: datetime


@dataclass(frozen=True, slots=True)
class LastStatus:
    """What a goal's newest row says: a new row is due when either part changes."""

    status: str
    period_start: datetime


_COLUMNS = "period_start, period_end, status, value, target, expected, projection, evaluated_at"
_LATEST = text(
    "SELECT DISTINCT ON (goal) goal, status, period_start FROM goal_status"
    " ORDER BY goal, evaluated_at DESC, id DESC"
)
_INSERT = text(
    f"INSERT INTO goal_status (goal, {_COLUMNS}) VALUES (:goal, :period_start, :period_end,"
    " :status, :value, :target, :expected, :projection, :evaluated_at)"
)
_HISTORY = text(
    f"SELECT {_COLUMNS} FROM goal_status WHERE goal = :goal"
    " ORDER BY evaluated_at DESC, id DESC LIMIT :limit"
)


async def last_goal_statuses(session: AsyncSession) -> dict[str, LastStatus]:
    rows = await session.execute(_LATEST)
    return {goal: LastStatus(status, start) for goal, status, start in rows}


async def insert_goal_status(
    session: AsyncSession, records: Mapping[str, GoalStatusRecord]
) -> None:
    """One row per goal name."""
    if records:
        await session.execute(_INSERT, [{"goal": g, **asdict(r)} for g, r in records.items()])


async def goal_history(session: AsyncSession, goal: str, limit: int) -> list[GoalStatusRecord]:
    """Newest first."""
    rows = await session.execute(_HISTORY, {"goal": goal, "limit": limit})
    return [GoalStatusRecord(*r) for r in rows]
