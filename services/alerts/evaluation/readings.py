"""Goal readings: where each goal stands now (value, expected by now, projection, status)
and which dimension values pull it the wrong way. The evaluator judges goals from them;
`GET /v1/goals` shows them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import store
from services.alerts.config import Config
from services.alerts.evaluation import goals as pacing
from services.alerts.evaluation.rules import Query, dims_key, label_name
from shared.config.alerting import GoalSpec
from shared.config.kpis import KpiSpec


@dataclass(frozen=True, slots=True)
class GoalReading:
    goal: GoalSpec
    period: pacing.GoalPeriod
    pace: pacing.Pace

    def standing(self) -> dict[str, Any]:
        """Where the goal stands, as JSON: the same fields, rounding and time format in the
        API and in notifications."""
        pace = self.pace
        return {
            "status": pace.status.value,
            "value": pace.value,
            "target": pace.target,
            "expected": pace.expected,
            "projection": pace.projection,
            "gap": pace.gap,
            "elapsed": round(pace.elapsed, 6),
            "period_start": self.period.start.isoformat(),
            "period_end": self.period.end.isoformat(),
        }


def _goal_queries(
    goal: GoalSpec, kpi: KpiSpec, period: pacing.GoalPeriod, at: datetime
) -> tuple[Query, Query, Query | None]:
    dims = dims_key(goal.dims)
    elapsed = period.elapsed(at)
    to_date = Query(goal.kpi, period.start, min(max(at, period.start), period.end), dims)
    previous = Query(goal.kpi, period.previous_start, period.previous_end, dims)
    shape = None
    if kpi.kind in pacing.CUMULATIVE_KINDS:
        shape = Query(goal.kpi, period.previous_start, period.previous_at(elapsed), dims)
    return to_date, previous, shape


async def read_goals(session: AsyncSession, config: Config, at: datetime) -> dict[str, GoalReading]:
    """Pacing of every goal whose period has started and whose KPI exists, in one read."""
    plans: dict[str, tuple[GoalSpec, pacing.GoalPeriod, tuple[Query, Query, Query | None]]] = {}
    for name, goal in config.goals.items():
        kpi = config.kpis.get(goal.kpi)
        if kpi is None:
            continue
        period = pacing.goal_period(goal, at, config.zone)
        if at < period.start:
            continue
        plans[name] = (goal, period, _goal_queries(goal, kpi, period, at))
    queries = [q for _, _, qs in plans.values() for q in qs if q is not None]
    values = await store.kpis.kpi_values(session, list(dict.fromkeys(queries)))
    out = {}
    for name, (goal, period, (to_date, previous, shape)) in plans.items():
        pace = pacing.pace(
            goal,
            kind=config.kpis[goal.kpi].kind,
            value=values.get(to_date),
            elapsed=period.elapsed(at),
            previous_total=values.get(previous),
            previous_to_date=values.get(shape) if shape else None,
        )
        out[name] = GoalReading(goal, period, pace)
    return out


async def goal_contributors(
    session: AsyncSession, config: Config, goal: GoalSpec, period: pacing.GoalPeriod, at: datetime
) -> list[dict[str, Any]]:
    """The dimension values pulling the goal's KPI the wrong way the most, against the
    previous period at the same point (first declared dimension of the goal's KPI)."""
    kpi = config.kpis.get(goal.kpi)
    dimensions: list[str] = list(getattr(kpi, "dimensions", []) or [])
    dimensions = [d for d in dimensions if d not in goal.dims]
    if not dimensions:
        return []
    field_name = dimensions[0]
    elapsed = period.elapsed(at)
    t_to = min(at, period.end)
    prev_to = period.previous_at(elapsed)
    present = await store.kpis.dimension_values(
        session, sorted(config.bases(goal.kpi)), period.previous_start, t_to
    )
    values = sorted({d[field_name] for d in present if field_name in d})[:50]
    if not values:
        return []
    queries: dict[str, tuple[Query, Query]] = {}
    for value in values:
        dims = dims_key({**goal.dims, field_name: value})
        queries[value] = (
            Query(goal.kpi, period.start, t_to, dims),
            Query(goal.kpi, period.previous_start, prev_to, dims),
        )
    read = await store.kpis.kpi_values(session, [q for pair in queries.values() for q in pair])
    current = {v: read.get(q[0]) or 0.0 for v, q in queries.items()}
    previous = {v: read.get(q[1]) or 0.0 for v, q in queries.items()}
    top = pacing.top_contributors(current, previous, goal.direction)
    return [
        {
            "dims": {label_name(field_name): v},
            "value": current[v],
            "previous": previous[v],
            "delta": d,
        }
        for v, d in top
    ]


@dataclass(frozen=True, slots=True)
class PathPoint:
    """One instant of a goal's period: the value so far (None ahead of `at`) and where the
    pacing path says it should be by then."""

    time: datetime
    value: float | None
    expected: float | None


async def goal_paths(
    session: AsyncSession,
    config: Config,
    readings: Mapping[str, GoalReading],
    at: datetime,
    points: int = 24,
) -> dict[str, list[PathPoint]]:
    """Each goal's value so far at `points` steps of its period, next to its pacing path
    over the whole period, from the same pacing function the evaluator judges with: the
    last point is the reading itself. One round trip for every goal."""
    plans: dict[str, list[tuple[datetime, Query | None, Query | None]]] = {}
    previous: dict[str, Query] = {}
    for name, reading in readings.items():
        goal, period = reading.goal, reading.period
        kpi = config.kpis.get(goal.kpi)
        if kpi is None:
            continue
        dims = dims_key(goal.dims)
        now = min(max(at, period.start), period.end)
        steps = [period.start + (period.end - period.start) * i / points for i in range(points + 1)]
        times = sorted({t for t in steps if t != now} | {now})
        cumulative = kpi.kind in pacing.CUMULATIVE_KINDS
        previous[name] = Query(goal.kpi, period.previous_start, period.previous_end, dims)
        plans[name] = [
            (
                t,
                Query(goal.kpi, period.start, t, dims) if period.start < t <= now else None,
                Query(goal.kpi, period.previous_start, period.previous_at(period.elapsed(t)), dims)
                if cumulative
                else None,
            )
            for t in times
        ]
    queries = [q for plan in plans.values() for _, *qs in plan for q in qs if q is not None]
    values = await store.kpis.kpi_values(
        session, list(dict.fromkeys([*queries, *previous.values()]))
    )
    out: dict[str, list[PathPoint]] = {}
    for name, plan in plans.items():
        goal = readings[name].goal
        path = []
        for t, to_date, shape in plan:
            pace = pacing.pace(
                goal,
                kind=config.kpis[goal.kpi].kind,
                value=values.get(to_date) if to_date else None,
                elapsed=readings[name].period.elapsed(t),
                previous_total=values.get(previous[name]),
                previous_to_date=values.get(shape) if shape else None,
            )
            path.append(PathPoint(t, pace.value, pace.expected))
        out[name] = path
    return out
