"""Restated goal periods: which closed periods late events can still change, a closed
period's result (met or missed), and when a change is worth telling people about.

A period is closed once the aggregator's watermark has passed its end (the evaluator's
judgement time `at`); it stays open for restatement while late events can still land in
it. The aggregator drops an event older than its watermark minus the allowed lateness, so
a period that ended before `at - lateness` cannot change any more. `GRACE` keeps looking a
little longer: the batch holding the last late event may also be the one that moves the
watermark past the period's window.

Notifications compare with what readers were last told (the result as reported, then as
last notified), not with the previous reading: a drift of many small restatements still
notifies once it adds up past the threshold, and a flip met → missed → met between two
evaluations tells nobody anything.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from services.alerts.evaluation import goals as pacing
from services.alerts.evaluation.windows import add_periods, period_start
from shared.config.alerting import Direction, GoalSpec

GRACE = timedelta(hours=1)
# Two readings of the same minutes may sum in a different order (parallel aggregation):
# differences this small are the same number, not a restatement.
REL_TOLERANCE = 1e-9
# A day goal with 7 days of lateness has 8 open periods; nothing sane needs more.
MAX_OPEN = 64


class ResultStatus(StrEnum):
    met = "met"
    missed = "missed"


@dataclass(frozen=True, slots=True)
class Standing:
    """A closed period's result: no status when there is no value or no target."""

    value: float | None
    target: float | None
    status: ResultStatus | None


def open_periods(
    goal: GoalSpec, at: datetime, zone: ZoneInfo, lateness: timedelta
) -> Iterator[pacing.GoalPeriod]:
    """The goal's periods that have closed by `at` and that late events can still change,
    newest first."""
    horizon = at - lateness - GRACE
    if goal.period is None:
        period = pacing.goal_period(goal, at, zone)
        if horizon < period.end <= at:
            yield period
        return
    end = period_start(goal.period, at, zone)
    for _ in range(MAX_OPEN):
        if end <= horizon:
            return
        start = add_periods(goal.period, end, -1, zone)
        yield pacing.GoalPeriod(start, end, add_periods(goal.period, start, -1, zone), start)
        end = start


def target_follows_data(goal: GoalSpec) -> bool:
    """A growth goal without a fixed baseline takes its target from the previous period's
    value, which late events restate too; any other target is the goal's own number and
    stays as it was when the period closed."""
    return goal.growth is not None and goal.baseline is None


def standing(direction: Direction, value: float | None, target: float | None) -> Standing:
    if value is None or target is None:
        return Standing(value, target, None)
    met = value >= target if direction is Direction.at_least else value <= target
    return Standing(value, target, ResultStatus.met if met else ResultStatus.missed)


def same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=1e-12)


def differs(before: Standing, after: Standing) -> bool:
    return not (same(before.value, after.value) and same(before.target, after.target))


def relative_change(before: float | None, after: float | None) -> float | None:
    """(after - before) / |before|; infinite from zero to anything else; None without both."""
    if before is None or after is None:
        return None
    if before == 0:
        return 0.0 if same(before, after) else math.copysign(math.inf, after)
    return (after - before) / abs(before)


def notify_due(told: Standing, now: Standing, threshold: float) -> bool:
    """Whether readers must hear about `now`, having last been told `told`: the verdict
    crossed (met ↔ missed, or a verdict appeared or went away), or the value moved by at
    least `threshold` of what they were told."""
    if told.status != now.status:
        return True
    change = relative_change(told.value, now.value)
    return change is not None and abs(change) >= threshold


def notice_key(goal: str, start: datetime, number: int, channel: str) -> str:
    """The idempotency key of restatement `number` of one period on one channel: derived,
    not random, so a leader that lost the transaction and records the same restatement
    again enqueues the same key, and a receiver that keeps keys drops a resend."""
    raw = "\x00".join(("restated", goal, start.isoformat(), str(number), channel))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]
