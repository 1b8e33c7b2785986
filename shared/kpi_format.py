"""KPI values as people read them, in the viewer's locale: shares as percentages, ISO
currency units as money, seconds as durations, counts grouped, changes with their
direction. The report, both scorecards and anything else that shows a KPI use these."""

from __future__ import annotations

import math
from datetime import timedelta

from shared.config.kpis import KpiKind, KpiSpec
from shared.i18n import Locale, format_currency, format_number, format_percent, translations

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
