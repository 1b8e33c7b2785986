"""What the review reads from the database — all of its SQL, through the shared KPI functions.

Numbers come only from `kpi_value` / `kpi_series`, the one definition of KPI math that
Grafana, the alerts service and this report share; definitions from the config tables.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config.alerting import GoalSpec
from shared.config.kpis import KpiSpec
from shared.config.store import definitions_changed, get_setting, load_goals, load_kpis


def _dims(dims: dict[str, str] | None) -> str | None:
    return orjson.dumps(dims).decode() if dims else None


class ReportRepository:
    """Read-only queries; each call runs in a short transaction of its own."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def kpi_value(
        self, kpi: str, start: datetime, end: datetime, dims: dict[str, str] | None = None
    ) -> float | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    text("SELECT kpi_value(:kpi, :t_from, :t_to, CAST(:dims AS jsonb))"),
                    {"kpi": kpi, "t_from": start, "t_to": end, "dims": _dims(dims)},
                )
            ).first()
        return None if row is None or row[0] is None else float(row[0])

    async def kpi_series(
        self,
        kpi: str,
        start: datetime,
        end: datetime,
        step: timedelta,
        dims: dict[str, str] | None = None,
    ) -> list[tuple[datetime, float | None]]:
        async with self._sessions() as session:
            rows = await session.execute(
                text(
                    'SELECT "time", value FROM kpi_series('
                    ":kpi, :t_from, :t_to, :step, CAST(:dims AS jsonb)) ORDER BY 1"
                ),
                {"kpi": kpi, "t_from": start, "t_to": end, "step": step, "dims": _dims(dims)},
            )
            return [(t, None if v is None else float(v)) for t, v in rows]

    async def kpis(self) -> dict[str, KpiSpec]:
        async with self._sessions() as session:
            return await load_kpis(session)

    async def goals(self) -> dict[str, GoalSpec]:
        async with self._sessions() as session:
            return await load_goals(session)

    async def definitions_changed(self, start: datetime, end: datetime) -> dict[str, datetime]:
        """KPIs whose definition changed in [start, end), with when (the last change)."""
        async with self._sessions() as session:
            return await definitions_changed(session, start, end)

    async def timezone(self) -> str | None:
        """The business time zone the config stored (what the KPI functions count days in)."""
        async with self._sessions() as session:
            return await get_setting(session, "timezone")
