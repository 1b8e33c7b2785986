"""Goal readings: `goal_status` (a row per evaluation whose status differs from the previous
one, for the API's history), `goal_readings` (every goal's latest reading) and
`goal_reading_history` (one reading per goal and 5 minutes), the last two for dashboards."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
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


# --- readings for dashboards ---------------------------------------------------------------

HISTORY_STEP = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class GoalReadingRow:
    """One goal's full reading at one evaluation, as dashboards read it."""

    goal: str
    kpi: str
    direction: str
    period_start: datetime
    period_end: datetime
    elapsed: float
    status: str
    value: float | None
    target: float | None
    expected: float | None
    projection: float | None
    gap: float | None
    attainment: float | None
    projected_attainment: float | None
    evaluated_at: datetime
    contributors: list[dict[str, Any]] = field(default_factory=list)

    def status_record(self) -> GoalStatusRecord:
        """The same reading as `goal_status` keeps it."""
        return GoalStatusRecord(
            period_start=self.period_start,
            period_end=self.period_end,
            status=self.status,
            value=self.value,
            target=self.target,
            expected=self.expected,
            projection=self.projection,
            evaluated_at=self.evaluated_at,
        )

    @property
    def bucket(self) -> datetime:
        """The history step this reading belongs to."""
        step = int(HISTORY_STEP.total_seconds())
        epoch = int(self.evaluated_at.timestamp()) // step * step
        return datetime.fromtimestamp(epoch, UTC)


_READING_COLUMNS = (
    "kpi, direction, period_start, period_end, elapsed, status, value, target, expected,"
    " projection, gap, attainment, projected_attainment, contributors, evaluated_at"
)
_HISTORY_COLUMNS = (
    "period_start, status, value, target, expected, projection, attainment, evaluated_at"
)


def _upsert(table: str, key: str, columns: str) -> Any:
    names = [c.strip() for c in columns.split(",")]
    values = ", ".join(
        "CAST(:contributors AS jsonb)" if c == "contributors" else f":{c}" for c in names
    )
    updates = ", ".join(f"{c} = excluded.{c}" for c in names)
    # Never replace a reading with an older one (a cycle that committed late).
    return text(
        f"INSERT INTO {table} AS t ({key}, {columns}) VALUES (:{key.replace(', ', ', :')},"
        f" {values}) ON CONFLICT ({key}) DO UPDATE SET {updates}"
        " WHERE excluded.evaluated_at >= t.evaluated_at"
    )


_UPSERT_READING = _upsert("goal_readings", "goal", _READING_COLUMNS)
_UPSERT_HISTORY = _upsert("goal_reading_history", "goal, bucket", _HISTORY_COLUMNS)
_FORGET_READINGS = text("DELETE FROM goal_readings WHERE goal <> ALL(CAST(:goals AS text[]))")
_PRUNE_HISTORY = text("DELETE FROM goal_reading_history WHERE bucket < :before")


async def store_readings(
    session: AsyncSession,
    rows: Sequence[GoalReadingRow],
    *,
    declared: Collection[str],
    keep: timedelta,
    now: datetime,
) -> None:
    """The latest reading of each goal evaluated (a goal no longer `declared` loses its row;
    one not evaluated now, its period not begun, keeps its last), the history's row of
    this 5-minute step, and the history older than `keep` pruned."""
    await session.execute(_FORGET_READINGS, {"goals": sorted(declared)})
    if rows:
        params = [
            {**asdict(r), "contributors": orjson.dumps(r.contributors).decode(), "bucket": r.bucket}
            for r in rows
        ]
        await session.execute(_UPSERT_READING, params)
        await session.execute(_UPSERT_HISTORY, params)
    await session.execute(_PRUNE_HISTORY, {"before": now - keep})
