"""Calendar periods as dates: where a day, ISO week, month, quarter or year begins, and
moving by whole periods. Goal periods, period-to-date rule windows and the review report
share these, so "this month" is the same span everywhere."""

from __future__ import annotations

from datetime import date, timedelta

from shared.config.alerting import Period

_MONTHS = {Period.month: 1, Period.quarter: 3, Period.year: 12}


def first_day(period: Period, day: date) -> date:
    """The first day of the `period` that contains `day` (ISO weeks start on Monday)."""
    if period is Period.day:
        return day
    if period is Period.week:
        return day - timedelta(days=day.weekday())
    if period is Period.month:
        return day.replace(day=1)
    if period is Period.quarter:
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def shift(period: Period, first: date, count: int) -> date:
    """`first` (a period's first day) moved by `count` whole periods."""
    if period is Period.day:
        return first + timedelta(days=count)
    if period is Period.week:
        return first + timedelta(weeks=count)
    index = first.year * 12 + (first.month - 1) + _MONTHS[period] * count
    return date(index // 12, index % 12 + 1, 1)
