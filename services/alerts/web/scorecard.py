"""What the scorecard pages show, read from the database with the evaluator's own
functions: goal readings and their pacing paths, KPI values against the previous period,
open alerts, and how fresh the aggregated numbers are.

Every open page refreshes itself, so the front page's reading is shared: `SnapshotCache`
reads at most once per `alerts_web_cache_seconds` for all viewers together."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import store
from services.alerts.config import Config
from services.alerts.evaluation import goals as pacing
from services.alerts.evaluation.readings import (
    GoalReading,
    PathPoint,
    goal_contributors,
    goal_paths,
    read_goals,
)
from services.alerts.evaluation.rules import Query, dims_key
from services.alerts.evaluation.windows import add_periods, judgement_time, period_start
from services.alerts.store.alerts import AlertView
from shared.config.alerting import Period
from shared.kpi_format import display_unit

log = logging.getLogger("pacekeeper.alerts.web")

MAX_TILES = 48  # KPIs on the front page; the rest are one click away
SPARK_POINTS = 48
# Aggregated numbers older than this are flagged on every page: nobody should read a
# stalled pipeline's figures as today's.
STALE_AFTER = timedelta(minutes=5)
LAGGING = frozenset({pacing.GoalStatus.at_risk, pacing.GoalStatus.off_track})


@dataclass(frozen=True, slots=True)
class Freshness:
    watermark: datetime | None
    age: timedelta | None

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > STALE_AFTER


@dataclass(frozen=True, slots=True)
class KpiTile:
    name: str
    description: str
    unit: str
    value: float | None
    previous: float | None  # the previous period up to the same point
    series: list[tuple[datetime, float | None]]

    @property
    def change(self) -> float | None:
        if self.value is None or not self.previous:
            return None
        return (self.value - self.previous) / abs(self.previous)


@dataclass(frozen=True, slots=True)
class GoalCard:
    reading: GoalReading
    unit: str
    attainment: float | None
    path: list[PathPoint]
    contributors: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.reading.goal.name

    @property
    def status(self) -> str:
        return self.reading.pace.status.value


# Worst first: an operations lead reads the page from the top.
_STATUS_ORDER = {"off_track": 0, "at_risk": 1, "on_track": 2, "achieved": 3}


@dataclass(frozen=True, slots=True)
class Scorecard:
    taken_at: datetime
    at: datetime  # numbers are complete up to here (the watermark)
    period: Period
    period_start: datetime
    freshness: Freshness
    goals: list[GoalCard] = field(default_factory=list)
    kpis: list[KpiTile] = field(default_factory=list)
    more_kpis: list[str] = field(default_factory=list)
    alerts: list[AlertView] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)  # each KPI's display unit
    problem: str | None = None  # the database failed this reading; shown, not raised


async def freshness(session: AsyncSession, topic: str, now: datetime) -> Freshness:
    mark = await store.kpis.watermark(session, topic)
    return Freshness(mark, None if mark is None else max(now - mark, timedelta(0)))


def _comparison(
    period: Period, at: datetime, config: Config
) -> tuple[datetime, datetime, datetime]:
    """This period's start, and the previous period's start and same point."""
    start = period_start(period, at, config.zone)
    previous = add_periods(period, start, -1, config.zone)
    length = (add_periods(period, start, 1, config.zone) - start).total_seconds()
    fraction = (at - start).total_seconds() / length if length else 0.0
    previous_length = (start - previous).total_seconds()
    return start, previous, previous + timedelta(seconds=previous_length * fraction)


async def kpi_tiles(
    session: AsyncSession, config: Config, names: list[str], period: Period, at: datetime
) -> list[KpiTile]:
    start, previous_start, previous_at = _comparison(period, at, config)
    current = {n: Query(n, start, at) for n in names}
    before = {n: Query(n, previous_start, previous_at) for n in names}
    values = await store.kpis.kpi_values(session, [*current.values(), *before.values()])
    # Two periods of history at a fixed number of steps, whole minutes (the KPIs' grain).
    step = max(timedelta(minutes=1), (at - previous_start) / SPARK_POINTS)
    step = timedelta(minutes=int(step.total_seconds() // 60))
    tiles = []
    for name in names:
        spec = config.kpis[name]
        series = await store.kpis.kpi_series(
            session, name, at - step * SPARK_POINTS, at, step, None
        )
        tiles.append(
            KpiTile(
                name,
                spec.description,
                display_unit(spec),
                values.get(current[name]),
                values.get(before[name]),
                series,
            )
        )
    return tiles


async def goal_cards(
    session: AsyncSession, config: Config, at: datetime, names: list[str] | None = None
) -> list[GoalCard]:
    readings = await read_goals(session, config, at)
    if names is not None:
        readings = {n: r for n, r in readings.items() if n in names}
    paths = await goal_paths(session, config, readings, at)
    cards = []
    for name, reading in readings.items():
        contributors: list[dict[str, Any]] = []
        if reading.pace.status in LAGGING:
            contributors = await goal_contributors(
                session, config, reading.goal, reading.period, at
            )
        pace = reading.pace
        cards.append(
            GoalCard(
                reading,
                display_unit(config.kpis[reading.goal.kpi]),
                pacing.attainment(pace.value, pace.target, reading.goal.direction),
                paths.get(name, []),
                contributors,
            )
        )
    cards.sort(key=lambda c: (_STATUS_ORDER.get(c.status, 9), c.name))
    return cards


async def read_scorecard(
    session: AsyncSession, config: Config, topic: str, period: Period, now: datetime | None = None
) -> Scorecard:
    now = now or datetime.now(UTC)
    fresh = await freshness(session, topic, now)
    at = judgement_time(now, fresh.watermark)
    start = period_start(period, at, config.zone)
    card = Scorecard(now, at, period, start, fresh)
    card.units.update({name: display_unit(spec) for name, spec in config.kpis.items()})
    try:
        names = list(config.kpis)
        card.goals.extend(await goal_cards(session, config, at))
        card.kpis.extend(await kpi_tiles(session, config, names[:MAX_TILES], period, at))
        card.more_kpis.extend(names[MAX_TILES:])
        alerts = await store.alerts.list_alerts(session, states=["firing", "pending"], limit=200)
        card.alerts.extend(sorted(alerts, key=lambda a: (a.state != "firing", a.name)))
    except DBAPIError as exc:
        log.warning("scorecard reading failed: %s", exc.orig or exc)
        return Scorecard(now, at, period, start, fresh, problem=str(exc.orig or exc)[:300])
    return card


@dataclass(frozen=True, slots=True)
class KpiDetail:
    name: str
    unit: str
    points: list[tuple[datetime, float | None]]
    total: float | None  # the KPI over the whole window
    dimensions: dict[str, list[str]]  # each declared dimension's values seen in the window
    goals: list[str]
    rules: list[str]


async def kpi_detail(
    session: AsyncSession,
    config: Config,
    name: str,
    t_from: datetime,
    t_to: datetime,
    step: timedelta,
    dims: Mapping[str, str],
) -> KpiDetail:
    spec = config.kpis[name]
    points = await store.kpis.kpi_series(session, name, t_from, t_to, step, dict(dims) or None)
    query = Query(name, t_from, t_to, dims_key(dims))
    total = (await store.kpis.kpi_values(session, [query])).get(query)
    declared = [str(d) for d in getattr(spec, "dimensions", []) or []]
    seen = await store.kpis.dimension_values(session, sorted(config.bases(name)), t_from, t_to)
    values = {d: sorted({s[d] for s in seen if d in s})[:100] for d in declared}
    return KpiDetail(
        name,
        display_unit(spec),
        points,
        total,
        values,
        sorted(g.name for g in config.goals.values() if g.kpi == name),
        sorted(r.name for r in config.rules.values() if r.kpi == name),
    )


class SnapshotCache:
    """One reading of the front page per key and `ttl` seconds, whoever asks: concurrent
    viewers wait for the same read instead of each starting their own."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[Any, tuple[float, Scorecard]] = {}
        self._locks: dict[Any, asyncio.Lock] = {}

    async def get(self, key: Any, read: Callable[[], Awaitable[Scorecard]]) -> Scorecard:
        entry = self._entries.get(key)
        if entry and time.monotonic() - entry[0] < self._ttl:
            return entry[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry and time.monotonic() - entry[0] < self._ttl:
                return entry[1]
            card = await read()
            self._entries[key] = (time.monotonic(), card)
            return card

    def clear(self) -> None:
        """Forget every reading: an admin's change shows on the next page at once."""
        self._entries.clear()
