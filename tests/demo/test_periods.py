from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.demo.periods import (
    Period,
    PeriodError,
    PeriodKind,
    parse_period,
    period_containing,
    periods_overlapping,
)

pytestmark = pytest.mark.unit

TODAY = date(2026, 11, 27)  # a Friday in ISO week 48


@pytest.mark.parametrize(
    ("text", "kind", "start", "end", "label"),
    [
        ("2026-Q4", PeriodKind.quarter, date(2026, 10, 1), date(2027, 1, 1), "2026-Q4"),
        ("2026-q1", PeriodKind.quarter, date(2026, 1, 1), date(2026, 4, 1), "2026-Q1"),
        ("2026-11", PeriodKind.month, date(2026, 11, 1), date(2026, 12, 1), "2026-11"),
        ("2026-12", PeriodKind.month, date(2026, 12, 1), date(2027, 1, 1), "2026-12"),
        ("2026-W48", PeriodKind.week, date(2026, 11, 23), date(2026, 11, 30), "2026-W48"),
        ("2026-W01", PeriodKind.week, date(2025, 12, 29), date(2026, 1, 5), "2026-W01"),
        ("2026", PeriodKind.year, date(2026, 1, 1), date(2027, 1, 1), "2026"),
        ("2026-11-27", PeriodKind.day, date(2026, 11, 27), date(2026, 11, 28), "2026-11-27"),
        ("today", PeriodKind.day, TODAY, date(2026, 11, 28), "2026-11-27"),
        ("yesterday", PeriodKind.day, date(2026, 11, 26), TODAY, "2026-11-26"),
        ("this-month", PeriodKind.month, date(2026, 11, 1), date(2026, 12, 1), "2026-11"),
        ("last-month", PeriodKind.month, date(2026, 10, 1), date(2026, 11, 1), "2026-10"),
        ("last-quarter", PeriodKind.quarter, date(2026, 7, 1), date(2026, 10, 1), "2026-Q3"),
        ("this-week", PeriodKind.week, date(2026, 11, 23), date(2026, 11, 30), "2026-W48"),
    ],
)
def test_parse_period(text: str, kind: PeriodKind, start: date, end: date, label: str) -> None:
    period = parse_period(text, TODAY)
    assert (period.kind, period.start, period.end, period.label) == (kind, start, end, label)
    assert parse_period(period.label, TODAY) == period


@pytest.mark.parametrize("text", ["2026-13", "2026-W54", "2026-Q5", "Q4", "soon", ""])
def test_bad_periods_say_what_is_accepted(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text, TODAY)


def test_previous_and_titles() -> None:
    q = parse_period("2026-Q1", TODAY)
    assert q.previous() == Period(PeriodKind.quarter, date(2025, 10, 1))
    assert q.title == "Q1 2026"
    assert parse_period("2026-03", TODAY).previous().title == "February 2026"
    assert parse_period("2026-W01", TODAY).previous().label == "2025-W52"
    assert parse_period("2026-11", TODAY).span == "1\u201330 Nov 2026"
    assert parse_period("2026-W01", TODAY).span == "29 Dec 2025 \u2013 4 Jan 2026"


def test_bounds_are_local_midnights() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    start, end = parse_period("2026-11", TODAY).bounds(zone)
    assert start == datetime(2026, 11, 1, tzinfo=zone)
    assert end == datetime(2026, 12, 1, tzinfo=zone)
    assert start.utcoffset() is not None


def test_periods_overlapping_a_quarter() -> None:
    months = periods_overlapping(PeriodKind.month, date(2026, 10, 1), date(2027, 1, 1))
    assert [m.label for m in months] == ["2026-10", "2026-11", "2026-12"]
    weeks = periods_overlapping(PeriodKind.week, date(2026, 11, 1), date(2026, 12, 1))
    assert weeks[0].label == "2026-W44"  # the week that holds 1 November
    assert weeks[-1].label == "2026-W49"
    assert period_containing(PeriodKind.year, TODAY).label == "2026"
