"""Numbers as people read them: units, currencies, durations and changes, for the report,
the terminal scorecard and anything else that shows a KPI."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from shared.config.kpis import KpiKind, KpiSpec

_CURRENCY = {"USD": "$", "EUR": "€", "GBP": "£", "CNY": "¥", "JPY": "¥"}
RATIO_UNITS = {"ratio", "%", "percent"}


def display_unit(spec: KpiSpec) -> str:
    """The unit to format a KPI in: its own, or `ratio` for the kinds that are shares."""
    if spec.unit:
        return spec.unit
    if spec.kind in {KpiKind.ratio, KpiKind.funnel, KpiKind.retention}:
        return "ratio"
    return ""


def format_value(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if unit in RATIO_UNITS:
        return f"{value * 100:.1f}%" if abs(value) < 10 else f"{value * 100:,.0f}%"
    if unit in _CURRENCY or unit == "$":
        symbol = _CURRENCY.get(unit, "$")
        sign = "-" if value < 0 else ""
        digits = 0 if abs(value) >= 1000 else 2
        return f"{sign}{symbol}{abs(value):,.{digits}f}"
    if unit in {"s", "seconds"}:
        return format_seconds(value)
    if len(unit) == 3 and unit.isupper():  # another ISO currency code
        return f"{value:,.2f} {unit}"
    if abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip() if unit and unit not in {"points", "count"} else text


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def format_change(delta: float | None) -> str:
    if delta is None:
        return "—"
    arrow = "▲" if delta > 0.0005 else "▼" if delta < -0.0005 else "■"
    return f"{arrow} {delta * 100:+.1f}%"


def format_timedelta(value: timedelta | None) -> str:
    if value is None:
        return "—"
    seconds = value.total_seconds()
    return format_seconds(seconds) if seconds >= 60 else f"{seconds:.0f} s"


def format_moment(t: datetime | None, zone: ZoneInfo) -> str:
    """`3 Nov 14:05` in the business time zone; `—` for none."""
    if t is None:
        return "—"
    local = t.astimezone(zone)
    return f"{local.day} {local:%b %H:%M}"
