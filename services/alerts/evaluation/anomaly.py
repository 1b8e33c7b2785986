"""Seasonal baselines of anomaly rules, as pure functions of KPI values.

What a window usually looks like is the same window 1..N weeks earlier (same weekday, same
time of day in the business time zone): the median of those weeks, and a band of `k` robust
deviations around it (the median absolute deviation, scaled by 1.4826 so that it estimates a
standard deviation for normal data). Median and MAD, not mean and standard deviation: one
past incident in the history (a week with a broken checkout) moves a mean and widens a
standard deviation enough to hide the next one, and moves a median and a MAD hardly at all.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from shared.config.alerting import AnomalySpec, Deviation

# MAD x 1.4826 estimates the standard deviation of normally distributed data.
MAD_SCALE = 1.4826


class Band(NamedTuple):
    """The usual value of a window (median of past weeks) and the band around it."""

    usual: float
    low: float
    high: float
    spread: float  # one deviation: the scaled MAD, or the floor when that is wider
    weeks: int  # past weeks that had a value


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def band(
    history: Iterable[float | None], spec: AnomalySpec, *, counts: bool = False
) -> Band | None:
    """The band from the past weeks' values (None or NaN: that week had no value); None when
    fewer than `spec.min_weeks` weeks had one.

    `counts`: the KPI counts independent events, whose count over a window varies by at
    least sqrt(mean) (Poisson) from one week to the next. Eight weeks' MAD often says less
    (it is itself an estimate from eight values): on the simulated shop in
    tests/alerts/test_anomaly_seasonal.py, 9 of 1,512 normal windows fell under a band of
    three MADs and none under one floored at sqrt(median)."""
    values = [v for v in history if v is not None and math.isfinite(v)]
    if not values or len(values) < spec.min_weeks:
        return None
    usual = median(values)
    mad = median([abs(v - usual) for v in values]) * MAD_SCALE
    spread = max(mad, spec.min_spread * abs(usual), spec.min_spread_abs)
    if counts:
        spread = max(spread, math.sqrt(abs(usual)))
    width = spec.k * spread
    return Band(usual, usual - width, usual + width, spread, len(values))


def outside(value: float | None, usual: Band | None, direction: Deviation) -> bool | None:
    """Whether the value leaves the band on the side the rule watches; None without a value
    or a band (no judgement)."""
    if value is None or usual is None or not math.isfinite(value):
        return None
    if direction is Deviation.below:
        return value < usual.low
    if direction is Deviation.above:
        return value > usual.high
    return value < usual.low or value > usual.high


def weeks_back(at: datetime, weeks: int, zone: ZoneInfo) -> datetime:
    """`at` moved back by whole weeks on the wall clock of `zone`: 10:00 on a Tuesday stays
    10:00 on a Tuesday across a daylight-saving change (168 hours would land at 9:00 or
    11:00)."""
    local = at.astimezone(zone) - timedelta(weeks=weeks)
    return local.astimezone(UTC)


def past_windows(
    t_from: datetime, t_to: datetime, weeks: int, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """The window `[t_from, t_to)` one, two, ... `weeks` weeks earlier: its end on the same
    weekday and wall-clock time, its length unchanged. Moving both ends on the wall clock
    would make the hour that a daylight-saving change skips two hours long a week earlier,
    and a count over it look halved."""
    length = t_to - t_from
    ends = (weeks_back(t_to, n, zone) for n in range(1, weeks + 1))
    return [(end - length, end) for end in ends]
