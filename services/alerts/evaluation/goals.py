"""SMART goal pacing: the period, the target, the expected value by now, a projection to the
deadline, and the status `achieved | on_track | at_risk | off_track`.

Two kinds of KPI behave differently over a period:
- cumulative (count, sum, distinct count): the period-to-date value only grows, so "on pace"
  means having collected the right share of the target by now. The share follows last
  period's shape when there is one (revenue is not earned evenly across a month), else a
  straight line;
- levels (ratios, averages, percentiles, gauges): the period-to-date value is the current
  level; the expected path runs straight from the baseline to the target, and the projection
  is the current level (persistence).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from services.alerts.evaluation.windows import add_periods, local_midnight, period_start
from shared.config.alerting import Direction, GoalSpec
from shared.config.kpis import KpiKind

CUMULATIVE_KINDS = frozenset({KpiKind.count, KpiKind.sum, KpiKind.count_distinct})
# Before 5% of the period has passed a projection extrapolates from almost nothing, so a
# goal is never called off_track that early (at most at_risk).
EARLY_FRACTION = 0.05


class GoalStatus(StrEnum):
    achieved = "achieved"
    on_track = "on_track"
    at_risk = "at_risk"
    off_track = "off_track"


@dataclass(frozen=True, slots=True)
class GoalPeriod:
    start: datetime
    end: datetime
    previous_start: datetime
    previous_end: datetime

    def elapsed(self, at: datetime) -> float:
        total = (self.end - self.start).total_seconds()
        done = (min(max(at, self.start), self.end) - self.start).total_seconds()
        return done / total if total > 0 else 1.0

    def previous_at(self, fraction: float) -> datetime:
        """The instant of the previous period at the same elapsed fraction."""
        return self.previous_start + (self.previous_end - self.previous_start) * fraction


@dataclass(frozen=True, slots=True)
class Pace:
    status: GoalStatus
    value: float | None
    target: float | None
    expected: float | None
    projection: float | None
    gap: float | None  # value - expected: negative is behind for at_least, ahead for at_most
    elapsed: float


def goal_period(goal: GoalSpec, at: datetime, zone: ZoneInfo) -> GoalPeriod:
    if goal.period is None:
        assert goal.start is not None
        assert goal.deadline is not None
        start = local_midnight(goal.start, zone)
        end = local_midnight(goal.deadline + timedelta(days=1), zone)  # deadline day included
        return GoalPeriod(start, end, start - (end - start), start)
    start = period_start(goal.period, at, zone)
    return GoalPeriod(
        start,
        add_periods(goal.period, start, 1, zone),
        add_periods(goal.period, start, -1, zone),
        start,
    )


def resolve_target(goal: GoalSpec, baseline: float | None) -> float | None:
    """The target value; a growth goal needs a baseline (given, or last period's value)."""
    if goal.target is not None:
        return goal.target
    assert goal.growth is not None
    if baseline is None or baseline <= 0:
        return None  # growth over nothing (an empty previous period) has no target
    return baseline * (1 + goal.growth)


def expected_now(
    target: float,
    elapsed: float,
    *,
    cumulative: bool,
    baseline: float | None,
    shape: float | None = None,
) -> float:
    if cumulative:
        return target * (shape if shape is not None else elapsed)
    if baseline is None:
        return target
    return baseline + (target - baseline) * elapsed


def project(
    value: float | None, elapsed: float, *, cumulative: bool, shape: float | None = None
) -> float | None:
    if value is None:
        return None
    if not cumulative:
        return value
    fraction = shape if shape is not None else elapsed
    return value / fraction if fraction > 0 else None


def _meets(direction: Direction, value: float, goal: float) -> bool:
    return value >= goal if direction is Direction.at_least else value <= goal


def _shortfall(direction: Direction, value: float, target: float) -> float:
    """How far `value` misses `target`, relative to |target| (0 when it meets it)."""
    miss = target - value if direction is Direction.at_least else value - target
    if miss <= 0:
        return 0.0
    return miss / abs(target) if target != 0 else float("inf")


def classify(
    direction: Direction,
    *,
    value: float | None,
    target: float,
    expected: float,
    projection: float | None,
    elapsed: float,
    cumulative: bool,
    margin: float,
) -> GoalStatus:
    if value is None:
        return GoalStatus.on_track if elapsed < EARLY_FRACTION else GoalStatus.at_risk
    if elapsed >= 1.0:
        return GoalStatus.achieved if _meets(direction, value, target) else GoalStatus.off_track
    if cumulative and direction is Direction.at_least and value >= target:
        return GoalStatus.achieved  # a running total cannot fall back below the target
    if cumulative and direction is Direction.at_most and value > target:
        return GoalStatus.off_track  # ... nor back under a cap it already passed
    outlook = projection if projection is not None else value
    if _meets(direction, outlook, target) and _meets(direction, value, expected):
        return GoalStatus.on_track
    status = (
        GoalStatus.at_risk
        if _shortfall(direction, outlook, target) <= margin
        else GoalStatus.off_track
    )
    if status is GoalStatus.off_track and elapsed < EARLY_FRACTION:
        return GoalStatus.at_risk
    return status


def pace(
    goal: GoalSpec,
    *,
    kind: KpiKind,
    value: float | None,
    elapsed: float,
    previous_total: float | None,
    previous_to_date: float | None,
) -> Pace:
    """Everything `GET /v1/goals` shows, from the KPI values the evaluator read:
    `value` over the period so far, the previous period's total (or level) and, for the
    shape of cumulative KPIs, the previous period's value at the same elapsed fraction."""
    cumulative = kind in CUMULATIVE_KINDS
    baseline = goal.baseline if goal.baseline is not None else previous_total
    target = resolve_target(goal, baseline)
    if target is None:
        return Pace(GoalStatus.at_risk, value, None, None, None, None, elapsed)
    shape = None
    if cumulative and previous_total and previous_to_date is not None and previous_total > 0:
        shape = min(max(previous_to_date / previous_total, 0.0), 1.0)
    expected = expected_now(target, elapsed, cumulative=cumulative, baseline=baseline, shape=shape)
    projection = project(value, elapsed, cumulative=cumulative, shape=shape)
    status = classify(
        goal.direction,
        value=value,
        target=target,
        expected=expected,
        projection=projection,
        elapsed=elapsed,
        cumulative=cumulative,
        margin=goal.at_risk_margin,
    )
    gap = None if value is None else value - expected
    return Pace(status, value, target, expected, projection, gap, elapsed)


def attainment(value: float | None, target: float | None, direction: Direction) -> float | None:
    """How much of the target the value reaches: value/target, or target/value for a cap."""
    if value is None or target is None:
        return None
    if direction is Direction.at_least:
        return value / target if target else None
    # A zero (perfect) value of an at-most KPI has no meaningful ratio; the status says it.
    return target / value if value > 0 else None


def top_contributors(
    current: Mapping[str, float],
    previous: Mapping[str, float],
    direction: Direction,
    *,
    limit: int = 3,
) -> list[tuple[str, float]]:
    """Dimension values that pull the KPI the wrong way the most, vs the previous period at
    the same point: for `at_least` the biggest drops, for `at_most` the biggest rises."""
    deltas = {
        key: current.get(key, 0.0) - previous.get(key, 0.0) for key in set(current) | set(previous)
    }
    sign = 1.0 if direction is Direction.at_least else -1.0
    worst = sorted(
        ((k, d) for k, d in deltas.items() if sign * d < 0), key=lambda kv: (sign * kv[1], kv[0])
    )
    return worst[:limit]
