"""Which KPI minutes a committed batch changed, and their announcement on kpi-updates.

The message itself is `shared.kpi_updates` (key = KPI name). Derived KPIs
(ratio, formula) get their own message when an input changed. Sent after the commit, so
a consumer that reads the range always sees the new state; a crash in between loses the
message (evaluators also run on their own schedule).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta

from aiokafka import AIOKafkaProducer

from services.aggregator.catalog import Catalog
from services.aggregator.records import US_PER_MINUTE, from_us
from services.aggregator.rollup import SLOT_US, Rollup
from shared.kpi_updates import encode_update

log = logging.getLogger(__name__)
_DAY_US = 86_400_000_000
Ranges = dict[str, tuple[int, int]]  # kpi -> [from, to) in epoch µs, minute-aligned


def _widen(ranges: Ranges, kpi: str, lo: int, hi: int) -> None:
    lo -= lo % US_PER_MINUTE
    hi += -hi % US_PER_MINUTE
    current = ranges.get(kpi)
    ranges[kpi] = (lo, hi) if current is None else (min(current[0], lo), max(current[1], hi))


def changed_ranges(state: Rollup, catalog: Catalog) -> Ranges:
    # One pass per kind keeping min/max per KPI; the batch can hold tens of thousands of rows.
    lows: dict[str, int] = {}
    highs: dict[str, int] = {}

    def widen(kpi: str, lo: int, hi: int) -> None:
        if kpi not in lows or lo < lows[kpi]:
            lows[kpi] = lo
        if kpi not in highs or hi > highs[kpi]:
            highs[kpi] = hi

    minutes: dict[str, set[int]] = {}
    for kpi, _dims, minute in state.points:
        minutes.setdefault(kpi, set()).add(minute)
    for kpi, _dims, minute, _value in state.distinct:
        minutes.setdefault(kpi, set()).add(minute)
    for kpi, seen in minutes.items():
        widen(kpi, min(seen) * US_PER_MINUTE, (max(seen) + 1) * US_PER_MINUTE)
    for kpi, _actor, step, ts, _dims in state.funnel:
        # A later step can convert any start up to `within` before it.
        back = 0 if step == 0 else catalog.funnel_within[kpi] // timedelta(microseconds=1)
        widen(kpi, ts - back, ts + 1)
    for (kpi, _actor), cohort in state.cohorts.items():
        widen(kpi, cohort.ts, cohort.ts + 1)
    for kpi, _actor, slot in state.comebacks:
        # A return on day D matters to cohorts of day D - N, in whatever time zone.
        day = catalog.retention_day[kpi]
        start = slot * SLOT_US
        widen(kpi, start - (day + 1) * _DAY_US, start + SLOT_US - (day - 1) * _DAY_US)
    ranges: Ranges = {}
    for kpi in lows:
        _widen(ranges, kpi, lows[kpi], highs[kpi])
    for kpi, (lo, hi) in list(ranges.items()):
        for dependent in catalog.dependents.get(kpi, ()):
            _widen(ranges, dependent, lo, hi)
    return ranges


def message(kpi: str, lo: int, hi: int) -> bytes:
    return encode_update(kpi, from_us(lo), from_us(hi))


async def publish(
    producer: AIOKafkaProducer, topic: str, ranges: Mapping[str, tuple[int, int]]
) -> None:
    """Hand the messages to the producer without waiting for acks (they must not slow the
    stream); failures are logged."""
    for kpi in sorted(ranges):
        lo, hi = ranges[kpi]
        future = await producer.send(topic, value=message(kpi, lo, hi), key=kpi.encode())
        future.add_done_callback(_log_failure)


def _log_failure(future: object) -> None:
    exc = future.exception() if not future.cancelled() else None  # type: ignore[attr-defined]
    if exc is not None:
        log.warning("kpi update not delivered", extra={"error": str(exc)})
