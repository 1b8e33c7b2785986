"""Which KPI minutes a committed batch changed, and their announcement on kpi-updates.

The message itself is `shared.kpi_updates` (key = KPI name). Derived KPIs
(ratio, formula) get their own message when an input changed. The batch's transaction
queues its ranges in an outbox; `UpdateRelay` sends them after the commit, so a consumer
that reads a range always sees the new state, and a crash in between only delays them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import psycopg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.aggregator import metrics, repository
from services.aggregator.catalog import Catalog
from services.aggregator.records import US_PER_MINUTE, from_us, to_us
from services.aggregator.rollup import SLOT_US, Rollup
from shared.db import transaction
from shared.kpi_updates import encode_update
from shared.retry import Abandoned, until_stopped

log = logging.getLogger(__name__)
_DAY_US = 86_400_000_000
Ranges = dict[str, tuple[int, int]]  # kpi -> [from, to) in epoch µs, minute-aligned
# What a relay round may meet that a later round can get past (OSError includes TimeoutError).
RELAY_ERRORS = (SQLAlchemyError, psycopg.Error, OSError, KafkaError)


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
    for key in lows:
        name = catalog.announced(key)  # a version's key as its KPI; a pending one not at all
        if name is not None:
            _widen(ranges, name, lows[key], highs[key])
    for kpi, (lo, hi) in list(ranges.items()):
        for dependent in catalog.dependents.get(kpi, ()):
            _widen(ranges, dependent, lo, hi)
    return ranges


class UpdateRelay:
    """Publishes the outbox (`kpi_update_outbox`): the batch transaction queued the ranges,
    this sends them and deletes them in one transaction once the broker acknowledged them.
    A crash anywhere leaves them queued, and they go out after the restart — at least once;
    readers treat a message as "look again", so a repeat costs one evaluation."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        topic: str,
        *,
        limit: int = 1000,
        interval: float = 5.0,
        timeout: float = 10.0,
    ) -> None:
        self._sessions = sessions
        self._producer = producer
        self._topic = topic
        self._limit = limit
        self._interval = interval  # also picks up what another process left behind
        # A round holds its rows locked, in an open transaction, while the broker
        # acknowledges (aiokafka acks in milliseconds); a producer that cannot reach the
        # broker must not keep that transaction open for long.
        self._timeout = timeout
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A batch committed: relay now rather than at the next interval."""
        self._wake.set()

    async def flush(self) -> int:
        """Send and delete one chunk of the queue; returns how many rows it took."""
        async with asyncio.timeout(self._timeout), transaction(self._sessions) as session:
            pending = await repository.take_updates(session, self._limit)
            if not pending:
                return 0
            ranges: Ranges = {}
            for row in pending:
                _widen(ranges, row.kpi, to_us(row.t_from), to_us(row.t_to))
            acks = [
                await self._producer.send(self._topic, value=message(kpi, lo, hi), key=kpi.encode())
                for kpi, (lo, hi) in sorted(ranges.items())
            ]
            await asyncio.gather(*acks)  # a failure rolls back: the rows stay queued
            await repository.delete_updates(session, [row.id for row in pending])
        metrics.kpi_updates_published.inc(len(ranges))
        return len(pending)

    async def drain(self) -> None:
        while await self.flush() == self._limit:
            pass

    async def run(self, stopping: asyncio.Event) -> None:
        """Relay whenever woken, and every `interval` for rows another process left behind;
        a failed round is retried with backoff until it works or shutdown begins."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            with contextlib.suppress(Abandoned):
                await until_stopped(
                    self.drain,
                    what="kpi updates not relayed",
                    stopping=stopping,
                    log=log,
                    base=0.5,
                    cap=self._interval,
                    on_failure=_relay_failed,
                )


def _relay_failed(error: BaseException) -> None:
    metrics.kpi_update_relay_failures.inc()
    # Every error is retried, since a dead relay would queue updates for ever; one that is
    # not a known transient failure gets its traceback logged.
    if not isinstance(error, RELAY_ERRORS):
        log.error("kpi updates relay failed unexpectedly", exc_info=error)


def message(kpi: str, lo: int, hi: int) -> bytes:
    return encode_update(kpi, from_us(lo), from_us(hi))
