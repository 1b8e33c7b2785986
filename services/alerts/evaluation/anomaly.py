"""Seasonal baselines of anomaly rules, as pure functions of KPI values.

What a window usually looks like is the same window 1..N weeks earlier (same weekday, same
time of day in the business time zone): the median of those weeks, and a band of `k` robust
deviations around it (the median absolute deviation, scaled by 1.4826 so that it estimates a
standard deviation for normal data). Median and MAD, not mean and standard deviation: one
past incident in the history (a week with a broken checkout) moves a mean and widens a
standard deviation enough to hide the next one, and moves a median and a MAD hardly at all.

Past weeks are read for a window whose end is aligned down to a baseline step (at most 5
minutes, with a phase of its own per KPI, group and window length), so consecutive ticks
ask for the same past windows; `FinalValues` keeps the answers for windows that can no
longer change, and the staggered phases spread the moment the windows move over the step.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Generic, NamedTuple, TypeVar
from zoneinfo import ZoneInfo

from shared.config.alerting import AnomalySpec, Deviation

# MAD x 1.4826 estimates the standard deviation of normally distributed data.
MAD_SCALE = 1.4826
# How far back the past weeks' windows may lag the current one: the usual value of the
# window ending at 10:04 is read for 10:00 (same length). A daily rhythm moves little in 5
# minutes; the reads of consecutive ticks (30 s apart) become the same ones, cacheable.
BASELINE_STEP = timedelta(minutes=5)
# A window that ended this long before (watermark - allowed lateness) is final: the
# aggregator refuses the events that could still change it. The hour covers a partition
# whose own watermark is a little ahead of the least one the evaluator reads.
FINAL_MARGIN = timedelta(hours=1)
_MINUTE = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
V = TypeVar("V")


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


# Rules of one window length share a few aligned ends per tick (one per phase), read for
# the complete and the live window alike: 1,000 rules x 5 groups ask for ~250 of these.
@functools.lru_cache(maxsize=4096)
def past_windows(
    t_from: datetime, t_to: datetime, weeks: int, zone: ZoneInfo
) -> tuple[tuple[datetime, datetime], ...]:
    """The window `[t_from, t_to)` one, two, ... `weeks` weeks earlier: its end on the same
    weekday and wall-clock time, its length unchanged. Moving both ends on the wall clock
    would make the hour that a daylight-saving change skips two hours long a week earlier,
    and a count over it look halved."""
    length = t_to - t_from
    ends = (weeks_back(t_to, n, zone) for n in range(1, weeks + 1))
    return tuple((end - length, end) for end in ends)


def baseline_step(length: timedelta) -> timedelta:
    """The alignment step of a window of `length`: 5 minutes, at most half the window (in
    whole minutes, at least one), so the lagging past window still shares most of its
    minutes with an exact one."""
    half = length // 2
    return max(_MINUTE, min(BASELINE_STEP, half - half % _MINUTE))


def phase(key: str, step: timedelta) -> timedelta:
    """A whole-minute offset in `[0, step)` fixed by `key`: instances move their past
    windows at different minutes, so no tick re-reads every baseline at once."""
    return _MINUTE * (zlib.crc32(key.encode()) % (step // _MINUTE))


def aligned_end(t_to: datetime, step: timedelta, offset: timedelta) -> datetime:
    """The latest `epoch + offset + n x step` at or before `t_to`: constant for `step`
    while `t_to` advances, then one step later."""
    return t_to - (t_to - _EPOCH - offset) % step


def baseline_anchor(
    t_from: datetime, t_to: datetime, key: str, *, align: bool = True
) -> tuple[datetime, datetime]:
    """The window whose past weeks are read for `[t_from, t_to)`: the same length ending at
    `t_to` aligned down to its step (phase from `key`). Not aligned (`align=False`):
    the window itself, for period-to-date windows, whose length grows with `t_to`."""
    if not align:
        return t_from, t_to
    length = t_to - t_from
    step = baseline_step(length)
    end = aligned_end(t_to, step, phase(key, step))
    return end - length, end


def final_before(watermark: datetime | None, allowed_lateness: timedelta) -> datetime | None:
    """Windows ending at or before this can no longer change (None: nothing is known final,
    before the aggregator has a watermark)."""
    return None if watermark is None else watermark - allowed_lateness - FINAL_MARGIN


class _Miss(Enum):
    MISS = "miss"


# What `FinalValues.get` answers for a key it does not hold (None is a value: NULL).
MISS = _Miss.MISS


class FinalValues(Generic[V]):
    """A bounded LRU of answers over final windows: `kpi_value` answers keyed by the query
    and the storage keys of the KPI's active definition (and of the KPIs it is built from),
    or the minutes of whole final hours keyed by storage key, group and hour. A changed
    definition switching over reads under new keys, and the old answers age out.

    The caller puts only windows ending at or before `final_before`."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._values: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._values)

    def get(self, key: Hashable) -> V | _Miss:
        """The stored answer, or `MISS`."""
        found = self._values.get(key, MISS)
        if found is MISS:
            self.misses += 1
        else:
            self.hits += 1
            self._values.move_to_end(key)
        return found

    def put(self, key: Hashable, value: V) -> None:
        self._values[key] = value
        self._values.move_to_end(key)
        while len(self._values) > self.capacity:
            self._values.popitem(last=False)

    def clear(self) -> None:
        self._values.clear()
