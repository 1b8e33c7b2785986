"""An in-memory stand-in for the report's repository: KPI values from closed-form rates.

Only for unit tests of the review's logic and rendering; the integration test reads the
real `kpi_value` from PostgreSQL.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from services.demo.api import AlertState
from services.demo.periods import parse_period
from services.demo.report import ReportData, build_report
from shared.config import PacekeeperConfig, load_config_text
from shared.config.alerting import GoalSpec
from shared.config.kpis import KpiSpec

Window = Callable[[datetime, datetime], float | None]
ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def hours(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds() / 3600)


def growing_total(per_hour: float, growth_per_day: float) -> Window:
    """A count or sum whose hourly rate grows steadily: the exact integral over a window."""

    def value(start: datetime, end: datetime) -> float:
        k = growth_per_day / 24

        def integral(t: datetime) -> float:
            x = (t - ORIGIN).total_seconds() / 3600
            return per_hour * (math.exp(k * x) - 1) / k if k else per_hour * x

        return max(0.0, integral(end) - integral(start))

    return value


def level(base: float, drift_per_day: float = 0.0, *, until: date | None = None) -> Window:
    """A ratio or average: its level at the window's midpoint (None for an empty window)."""

    def value(start: datetime, end: datetime) -> float | None:
        if end <= start or (until and start.date() >= until):
            return None
        mid = start + (end - start) / 2
        return base + drift_per_day * (mid - ORIGIN).total_seconds() / 86400

    return value


class FakeRepository:
    def __init__(self, config: PacekeeperConfig, values: dict[str, Window], tz: str = "UTC"):
        self.config = config
        self.values = values
        self.tz = tz
        self.changed: dict[str, datetime] = {}
        self.calls: list[tuple[str, datetime, datetime, dict[str, str] | None]] = []

    async def kpi_value(
        self, kpi: str, start: datetime, end: datetime, dims: dict[str, str] | None = None
    ) -> float | None:
        self.calls.append((kpi, start, end, dims))
        fn = self.values.get(kpi)
        return None if fn is None else fn(start, end)

    async def kpi_series(
        self,
        kpi: str,
        start: datetime,
        end: datetime,
        step: timedelta,
        dims: dict[str, str] | None = None,
    ) -> list[tuple[datetime, float | None]]:
        out = []
        t = start
        while t < end:
            out.append((t, await self.kpi_value(kpi, t, min(t + step, end), dims)))
            t += step
        return out

    async def kpis(self) -> dict[str, KpiSpec]:
        return {k.name: k for k in self.config.kpis}

    async def goals(self) -> dict[str, GoalSpec]:
        return {g.name: g for g in self.config.goals}

    async def definitions_changed(self, start: datetime, end: datetime) -> dict[str, datetime]:
        return {k: at for k, at in self.changed.items() if start <= at < end}

    async def timezone(self) -> str | None:
        return self.tz


# A small catalogue and closed-form numbers for it: the review's unit tests and the browser
# render test use the same report.
CONFIG = load_config_text(
    """
kpis:
  - {name: orders, kind: count, event: order_completed, description: Orders paid}
  - {name: revenue, kind: sum, event: order_completed, field: properties.revenue, unit: USD}
  - {name: visitors, kind: count_distinct, event: session_started}
  - {name: csat_happy, kind: count, event: survey_answered}
  - {name: csat_answers, kind: count, event: survey_answered}
  - {name: csat, kind: ratio, numerator: csat_happy, denominator: csat_answers}
  - {name: conversion, kind: ratio, numerator: orders, denominator: visitors}
  - {name: first_response_p90, kind: percentile, event: ticket_replied,
     field: properties.response_seconds, q: 0.9, unit: s}
goals:
  - {name: monthly-revenue-growth, kpi: revenue, growth: 0.2, period: month}
  - {name: csat-quarterly, kpi: csat, target: 0.9, period: quarter}
  - {name: conversion-3pct, kpi: conversion, target: 0.03, period: month}
  - {name: first-response-30m, kpi: first_response_p90, target: 1800, direction: at_most,
     period: week}
  - {name: launch-orders, kpi: orders, target: 50000, start: 2026-11-10, deadline: 2026-11-30}
""",
    env={},
)
VALUES = {
    "orders": growing_total(60, 0.004),
    "revenue": growing_total(3000, 0.005),
    "visitors": growing_total(1900, 0.002),
    "csat_happy": growing_total(9, 0),
    "csat_answers": growing_total(10, 0),
    "csat": level(0.86, 0.0001),
    "conversion": level(0.031, -0.00001),
    "first_response_p90": level(1500, 1.5),
}
NOW = datetime(2026, 11, 20, 15, tzinfo=UTC)


class FakeAlerts:
    async def alerts(self) -> list[AlertState]:
        return [
            AlertState(
                "checkout-conversion-collapse", "resolved", "page",
                datetime(2026, 11, 12, 14, 3, tzinfo=UTC),
                datetime(2026, 11, 12, 14, 41, tzinfo=UTC),
                "Conversion 0.4% over 10m",
            ),
            AlertState(
                "csat-low", "firing", "ticket",
                datetime(2026, 11, 19, 9, tzinfo=UTC), None, "CSAT 76%",
            ),
            AlertState(  # October: not in a November review
                "old", "resolved", "page", datetime(2026, 10, 3, tzinfo=UTC),
                datetime(2026, 10, 3, 1, tzinfo=UTC), "",
            ),
        ]  # fmt: skip


async def november(repo: FakeRepository | None = None, now: datetime = NOW) -> ReportData:
    return await build_report(
        repo or FakeRepository(CONFIG, VALUES),
        parse_period("2026-11", now.date()),
        now=now,
        alerts_api=FakeAlerts(),  # type: ignore[arg-type]  # the one method the report calls
    )
