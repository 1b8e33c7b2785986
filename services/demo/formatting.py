"""Numbers as people read them: units, currencies, durations and changes, for the report,
the terminal scorecard and anything else that shows a KPI — in the locale's words and
number, currency and date formats (`shared.i18n`). English keeps the house style
(`3 Nov 14:05`, `1-30 Nov 2026` with an en dash); other locales take their dates from CLDR."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.demo.pacing import ReviewStatus
from services.demo.periods import NDASH, Period, PeriodKind
from shared.config.kpis import KpiKind, KpiSpec
from shared.i18n import (
    Locale,
    format_currency,
    format_date,
    format_datetime,
    format_interval,
    format_number,
    format_percent,
    term,
    translations,
)

RATIO_UNITS = {"ratio", "%", "percent"}
_CURRENCY_SYMBOLS = {"$": "USD", "€": "EUR", "£": "GBP"}
EN = Locale.en
NONE = "—"


def display_unit(spec: KpiSpec) -> str:
    """The unit to format a KPI in: its own, or `ratio` for the kinds that are shares."""
    if spec.unit:
        return spec.unit
    if spec.kind in {KpiKind.ratio, KpiKind.funnel, KpiKind.retention}:
        return "ratio"
    return ""


def currency_code(unit: str) -> str | None:
    """The ISO 4217 code a unit names (`USD`, `CNY`, or the symbols `$`, `€`, `£`)."""
    if unit in _CURRENCY_SYMBOLS:
        return _CURRENCY_SYMBOLS[unit]
    if len(unit) == 3 and unit.isascii() and unit.isalpha() and unit.isupper():
        return unit
    return None


def format_value(value: float | None, unit: str = "", locale: Locale = EN) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    if unit in RATIO_UNITS:
        return format_percent(value, locale, decimals=1 if abs(value) < 10 else 0)
    if unit in {"s", "seconds"}:
        return format_seconds(value, locale)
    code = currency_code(unit)
    if code is not None:
        # Whole units from a thousand up: cents on a six-figure revenue are noise.
        return format_currency(value, code, locale, decimals=0 if abs(value) >= 1000 else None)
    decimals = 0 if abs(value) >= 100 or float(value).is_integer() else 2
    text = format_number(value, locale, decimals=decimals)
    return f"{text} {unit}".strip() if unit and unit not in {"points", "count"} else text


def format_seconds(seconds: float, locale: Locale = EN) -> str:
    _ = translations(locale).gettext
    if seconds < 90:
        return _("%(n)s s") % {"n": format_number(seconds, locale, decimals=0)}
    if seconds < 90 * 60:
        return _("%(n)s min") % {"n": format_number(seconds / 60, locale, decimals=1)}
    if seconds < 48 * 3600:
        return _("%(n)s h") % {"n": format_number(seconds / 3600, locale, decimals=1)}
    return _("%(n)s d") % {"n": format_number(seconds / 86400, locale, decimals=1)}


def signed_percent(delta: float, locale: Locale = EN, decimals: int = 1) -> str:
    """`+12.3%` / `-5.0%`: a change always shows its sign."""
    text = format_percent(abs(delta), locale, decimals=decimals)
    return ("-" if delta < 0 else "+") + text


def format_change(delta: float | None, locale: Locale = EN) -> str:
    if delta is None:
        return NONE
    arrow = "▲" if delta > 0.0005 else "▼" if delta < -0.0005 else "■"
    return f"{arrow} {signed_percent(delta, locale)}"


def format_timedelta(value: timedelta | None, locale: Locale = EN) -> str:
    if value is None:
        return NONE
    return format_seconds(value.total_seconds(), locale)


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
