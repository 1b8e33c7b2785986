from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.calendar import first_day, shift
from shared.config.alerting import Period

pytestmark = pytest.mark.unit


def oracle_same_period(period: Period, a: date, b: date) -> bool:
    """Naive: two days share a period when their calendar coordinates agree."""
    if period is Period.day:
        return a == b
    if period is Period.week:
        return a.isocalendar()[:2] == b.isocalendar()[:2]
    if period is Period.month:
        return (a.year, a.month) == (b.year, b.month)
    if period is Period.quarter:
        return (a.year, (a.month - 1) // 3) == (b.year, (b.month - 1) // 3)
    return a.year == b.year


days = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31))


@given(st.sampled_from(list(Period)), days)
def test_a_period_is_exactly_the_days_that_share_it(period: Period, day: date) -> None:
    start = first_day(period, day)
    end = shift(period, start, 1)
    assert start <= day < end
    assert oracle_same_period(period, start, day)
    assert oracle_same_period(period, end - timedelta(days=1), day)
    assert not oracle_same_period(period, start - timedelta(days=1), day)
    assert not oracle_same_period(period, end, day)


@given(st.sampled_from(list(Period)), days, st.integers(min_value=-40, max_value=40))
def test_shifting_moves_whole_periods(period: Period, day: date, count: int) -> None:
    start = first_day(period, day)
    moved = shift(period, start, count)
    assert first_day(period, moved) == moved
    assert shift(period, moved, -count) == start
