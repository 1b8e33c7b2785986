"""Time windows in the business time zone: rule windows, goal periods, judgement time."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from shared.calendar import first_day, shift
from shared.config.alerting import Period
from shared.durations import parse_duration

_PTD = re.compile(r"^ptd:(day|week|month|quarter|year)$")
MINUTE = timedelta(minutes=1)


def floor_minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def period_start(period: Period, at: datetime, zone: ZoneInfo) -> datetime:
    """Start of the calendar period containing `at`, at local midnight in `zone`."""
    return local_midnight(first_day(period, at.astimezone(zone).date()), zone)


def add_periods(period: Period, start: datetime, count: int, zone: ZoneInfo) -> datetime:
    """`start` (a period start) moved by `count` whole periods, in local calendar terms."""
    return local_midnight(shift(period, start.astimezone(zone).date(), count), zone)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def rule_window(window: str, at: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """`[t_from, t_to)` of a rule window ending at `at`: a duration or period-to-date."""
    match = _PTD.match(window)
    if match:
        return period_start(Period(match.group(1)), at, zone), at
    return at - _length(window), at


@lru_cache(maxsize=1024)
def _length(window: str) -> timedelta:
    return parse_duration(window)


def judgement_time(now: datetime, watermark: datetime | None) -> datetime:
    """Windows end here: never past the aggregator's watermark, the point up to which every
    partition's data is complete; a window judged beyond it would see missing data."""
    return now if watermark is None else min(now, watermark)
