"""KPI values as the scorecard shows them, in the viewer's locale: shares as percentages,
ISO currency units as money, seconds as durations, counts grouped."""

from __future__ import annotations

import math

from shared.i18n import Locale, format_currency, format_number, format_percent

NONE = "—"
RATIO_UNITS = frozenset({"ratio", "%", "percent"})
SECOND_UNITS = frozenset({"s", "seconds"})
COUNT_UNITS = frozenset({"", "count", "points"})


def format_kpi(value: float | None, unit: str, locale: Locale) -> str:
    if value is None or not math.isfinite(value):
        return NONE
    if unit in RATIO_UNITS:
        return format_percent(value, locale, decimals=1 if abs(value) < 10 else 0)
    if len(unit) == 3 and unit.isalpha() and unit.isupper():  # an ISO 4217 code
        return format_currency(value, unit, locale, decimals=0 if abs(value) >= 1000 else 2)
    if unit in SECOND_UNITS:
        return _duration(value, locale)
    digits = 0 if abs(value) >= 100 or float(value).is_integer() else 2
    text = format_number(value, locale, decimals=digits)
    return text if unit in COUNT_UNITS else f"{text} {unit}"


def _duration(seconds: float, locale: Locale) -> str:
    for limit, size, unit in ((90, 1, "s"), (90 * 60, 60, "min"), (48 * 3600, 3600, "h")):
        if abs(seconds) < limit:
            return f"{format_number(seconds / size, locale, decimals=0 if size == 1 else 1)} {unit}"
    return f"{format_number(seconds / 86400, locale, decimals=1)} d"


def format_change(delta: float | None, locale: Locale) -> str:
    """A relative change with its direction: ▲ +12.5%, ▼ -3.0%, ■ for flat."""
    if delta is None or not math.isfinite(delta):
        return NONE
    arrow = "▲" if delta > 0.0005 else "▼" if delta < -0.0005 else "■"
    sign = "+" if delta >= 0 else ""
    return f"{arrow} {sign}{format_percent(delta, locale, decimals=1)}"
