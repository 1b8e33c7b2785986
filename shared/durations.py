"""Durations as people write them in config: `30s`, `15m`, `1h`, `7d`, `2w`, or `1h30m`."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer

_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# Ten years: longer than any window, offset, `for` or interval a KPI tool needs, and far
# inside what dates and timestamps can hold, so no arithmetic on one can overflow.
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """`1h30m` → 1:30:00. Raises ValueError with the accepted form on anything else."""
    cleaned = text.strip().replace(" ", "")
    if cleaned in {"0", "0s"}:
        return timedelta(0)
    parts = _PART.findall(cleaned)
    if not parts or "".join(n + u for n, u in parts) != cleaned:
        raise ValueError(f"{text!r} is not a duration like 30s, 15m, 1h, 7d, 2w or 1h30m")
    try:
        return sum((int(n) * _UNITS[u] for n, u in parts), timedelta(0))
    except OverflowError:
        raise ValueError(f"{text!r} is longer than {format_duration(MAX_DURATION)}") from None


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling, e.g. 5400 s → `1h30m`."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    out = ""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out += f"{count}{unit}"
    return out


def _coerce(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > MAX_DURATION.total_seconds():
            raise ValueError(f"{value!r} seconds is not a duration up to {MAX_DURATION.days}d")
        return timedelta(seconds=value)
    return value


def _in_range(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("a duration cannot be negative")
    if value > MAX_DURATION:
        raise ValueError(f"a duration cannot be longer than {format_duration(MAX_DURATION)}")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    AfterValidator(_in_range),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
]
