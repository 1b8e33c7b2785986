"""Numbers as people read them: units, currencies, durations and changes, for the report,
the terminal scorecard and anything else that shows a KPI — in the locale's words and
number, currency and date formats (`shared.i18n`). English keeps the house style
(`3 Nov 14:05`, `1-30 Nov 2026` with an en dash); other locales take their dates from CLDR."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from services.demo.pacing import ReviewStatus
from services.demo.periods import NDASH, Period, PeriodKind
from shared.i18n import (
    Locale,
    format_date,
    format_datetime,
    format_interval,
    term,
    translations,
)
from shared.kpi_format import (
    NONE,
    RATIO_UNITS,
    currency_code,
    display_unit,
    format_change,
    format_seconds,
    format_timedelta,
    format_value,
    signed_percent,
)

__all__ = [
    "NONE",
    "RATIO_UNITS",
    "currency_code",
    "day_span",
    "display_unit",
    "format_change",
    "format_moment",
    "format_seconds",
    "format_timedelta",
    "format_value",
    "period_span",
    "period_title",
    "signed_percent",
    "status_label",
]

EN = Locale.en


def format_moment(t: datetime | None, zone: ZoneInfo, locale: Locale = EN) -> str:
    """`3 Nov 14:05` (zh-CN `11月3日 14:05`) in the business time zone; `—` for none."""
    if t is None:
        return NONE
    local = t.astimezone(zone)
    if locale is EN:
        return f"{local.day} {local:%b %H:%M}"
    return format_datetime(local, locale, "MMMd Hm")


def status_label(status: ReviewStatus, locale: Locale = EN) -> str:
    return term(status.value, locale)


def period_title(period: Period, locale: Locale = EN) -> str:
    """How a person names a period: `November 2026`, `Q4 2026`, `Week 48, 2026`; zh-CN
    `2026年11月`, `2026年第4季度`, `2026年第48周`."""
    if locale is EN:
        return period.title
    first = period.start
    if period.kind is PeriodKind.day:
        return format_date(first, locale, "yMMMd")
    if period.kind is PeriodKind.week:
        year, week, _ = first.isocalendar()
        return translations(locale).gettext("Week %(week)d, %(year)d") % {
            "week": week,
            "year": year,
        }
    if period.kind is PeriodKind.month:
        return format_date(first, locale, "yMMMM")
    if period.kind is PeriodKind.quarter:
        return format_date(first, locale, "yQQQ")
    return format_date(first, locale, "y")


def day_span(first: date, last: date, locale: Locale = EN) -> str:
    """The days from `first` to `last`, both included: `1 Jan 2027 - 31 Mar 2027`
    (an en dash), or the locale's interval format."""
    if first == last:
        return period_title(Period(PeriodKind.day, first), locale)
    if locale is EN:
        return f"{first.day} {first:%b %Y} {NDASH} {last.day} {last:%b %Y}"
    return format_interval(first, last, locale)


def period_span(period: Period, locale: Locale = EN) -> str:
    return period.span if locale is EN else day_span(period.start, period.last_day, locale)
