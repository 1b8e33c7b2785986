"""Calendar periods for reviews and goals: `2026-Q4`, `2026-11`, `2026-W48`, `2026`, a day.

Periods are calendar spans in the business time zone; their bounds are half-open, like
every window `kpi_value` takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shared.calendar import first_day, shift
from shared.config.alerting import Period as CalendarPeriod

NDASH = "\u2013"  # typeset ranges: 1\u201330 Nov


# The same calendar periods goals and rules use.
PeriodKind = CalendarPeriod


_ORDER = [PeriodKind.day, PeriodKind.week, PeriodKind.month, PeriodKind.quarter, PeriodKind.year]


@dataclass(frozen=True, slots=True, order=True)
class Period:
    kind: PeriodKind
    start: date  # the first day

    @property
    def end(self) -> date:
        """The first day after the period."""
        return shift(self.kind, self.start, 1)

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    def previous(self) -> Period:
        return period_containing(self.kind, self.start - timedelta(days=1))

    def next(self) -> Period:
        return period_containing(self.kind, self.end)

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start, end) as aware datetimes at local midnight."""
        return (
            datetime.combine(self.start, time(), tzinfo=zone),
            datetime.combine(self.end, time(), tzinfo=zone),
        )

    @property
    def label(self) -> str:
        """The canonical spelling `parse_period` reads back."""
        if self.kind is PeriodKind.day:
            return self.start.isoformat()
        if self.kind is PeriodKind.week:
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        if self.kind is PeriodKind.month:
            return f"{self.start:%Y-%m}"
        if self.kind is PeriodKind.quarter:
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        return str(self.start.year)

    @property
    def title(self) -> str:
        """How a person names it: `November 2026`, `Q4 2026`, `Week 48, 2026`."""
        if self.kind is PeriodKind.day:
            return f"{self.start.day} {self.start:%B %Y}"
        if self.kind is PeriodKind.week:
            year, week, _ = self.start.isocalendar()
            return f"Week {week}, {year}"
        if self.kind is PeriodKind.month:
            return f"{self.start:%B %Y}"
        if self.kind is PeriodKind.quarter:
            return f"Q{(self.start.month - 1) // 3 + 1} {self.start.year}"
        return str(self.start.year)

    @property
    def span(self) -> str:
        """`1-30 Nov 2026` (with an en dash): the days it covers."""
        first, last = self.start, self.last_day
        if first == last:
            return f"{first.day} {first:%b %Y}"
        if first.year != last.year:
            return f"{first.day} {first:%b %Y} {NDASH} {last.day} {last:%b %Y}"
        if first.month != last.month:
            return f"{first.day} {first:%b} {NDASH} {last.day} {last:%b %Y}"
        return f"{first.day}{NDASH}{last.day} {last:%b %Y}"


def period_containing(kind: PeriodKind, day: date) -> Period:
    return Period(kind, first_day(kind, day))


def periods_overlapping(kind: PeriodKind, start: date, end: date) -> list[Period]:
    """Every period of `kind` that shares a day with [start, end)."""
    out: list[Period] = []
    current = period_containing(kind, start)
    while current.start < end:
        out.append(current)
        current = current.next()
    return out


def finer_or_equal(a: PeriodKind, b: PeriodKind) -> bool:
    return _ORDER.index(a) <= _ORDER.index(b)


_RELATIVE = re.compile(r"^(this|last|current|previous)-(day|week|month|quarter|year)$")
_QUARTER = re.compile(r"^(\d{4})-Q([1-4])$", re.IGNORECASE)
_WEEK = re.compile(r"^(\d{4})-W(\d{1,2})$", re.IGNORECASE)
_MONTH = re.compile(r"^(\d{4})-(\d{1,2})$")
_YEAR = re.compile(r"^(\d{4})$")


class PeriodError(ValueError):
    pass


def parse_period(text: str, today: date) -> Period:
    """`2026-Q4`, `2026-11`, `2026-W48`, `2026`, `2026-11-27`, `today`, `yesterday`,
    `this-month`, `last-quarter`, … (`today` anchors the relative forms)."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "today":
        return Period(PeriodKind.day, today)
    if lowered == "yesterday":
        return Period(PeriodKind.day, today - timedelta(days=1))
    if match := _RELATIVE.match(lowered):
        current = period_containing(PeriodKind(match.group(2)), today)
        return current.previous() if match.group(1) in {"last", "previous"} else current
    if match := _QUARTER.match(value):
        return Period(PeriodKind.quarter, date(int(match.group(1)), int(match.group(2)) * 3 - 2, 1))
    if match := _WEEK.match(value):
        year, week = int(match.group(1)), int(match.group(2))
        try:
            return Period(PeriodKind.week, date.fromisocalendar(year, week, 1))
        except ValueError:
            raise PeriodError(f"{year} has no ISO week {week}") from None
    if match := _MONTH.match(value):
        month = int(match.group(2))
        if not 1 <= month <= 12:
            raise PeriodError(f"{value!r}: month must be 01-12")
        return Period(PeriodKind.month, date(int(match.group(1)), month, 1))
    if match := _YEAR.match(value):
        return Period(PeriodKind.year, date(int(match.group(1)), 1, 1))
    try:
        return Period(PeriodKind.day, date.fromisoformat(value))
    except ValueError:
        pass
    raise PeriodError(
        f"{text!r} is not a period: use 2026-Q4, 2026-11, 2026-W48, 2026, 2026-11-27, "
        "today, yesterday, this-month, last-month, this-quarter, last-week, …"
    )
