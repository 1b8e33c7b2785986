"""Rows in PostgreSQL's COPY text format, built as strings: one write per batch instead of
per-row adaptation (4x cheaper in Python). Tabs, newlines and backslashes in text are
escaped; NULL is `\\N`."""

from __future__ import annotations

from services.aggregator.records import US_PER_MINUTE, from_us

NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def text_field(value: str | None) -> str:
    """A text field of COPY's text format."""
    if value is None:
        return NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def float_field(value: float | None) -> str:
    return NULL if value is None else repr(value)


class CopyTimes:
    """Epoch µs → timestamptz text; the minute prefix is shared by most rows of a batch."""

    def __init__(self) -> None:
        self._minutes: dict[int, str] = {}

    def minute(self, minute: int) -> str:
        text_ = self._minutes.get(minute)
        if text_ is None:
            text_ = self._minutes[minute] = from_us(minute * US_PER_MINUTE).strftime(
                "%Y-%m-%d %H:%M:"
            )
        return text_

    def __call__(self, ts: int) -> str:
        minute, rest = divmod(ts, US_PER_MINUTE)
        seconds, micros = divmod(rest, 1_000_000)
        return f"{self.minute(minute)}{seconds:02d}.{micros:06d}+00"

    def bucket(self, minute: int) -> str:
        return f"{self.minute(minute)}00+00"
