"""Recompute a new KPI version's history in the background, then switch to it atomically.

`apply` of a definition that changes a KPI's state stores a version `recomputing` under a
storage key of its own (shared.config.store.record_kpi_version). From the next batch on,
the consumer writes every new event's state for both the active version and the new one
(services.aggregator.definitions). This task fills the new key from `events`:

1. Once: the definitions barrier (every batch that began before the new version was
   stored has committed, every later batch writes the new key too), then the range to
   recompute — every event stored by then lies in it — is stored with the version.
2. Chunk by chunk, with backfill's protocol against the new key only (exclusive lock on
   the key; batches hold the shared one while they write it): delete the chunk's state,
   re-derive it from the stored events, and store the progress — in one transaction, so a
   crash at any point resumes after the last chunk that committed, nothing done twice.
   Reads are paced to `aggregator_recompute_events_per_second`.
3. When the range is done: refresh the continuous aggregates over it, then one transaction
   retires the active version and activates the new one. `kpi_value` resolves a name to
   its active version within its snapshot, so a reader sees the old history or the new,
   never a mix; the range is announced on kpi-updates.
4. Afterwards: once the barrier has waited out the batches still writing it, the retired
   version's state is deleted.

Several aggregator processes may run it: a version's row is locked (SKIP LOCKED) by the
one working on it, so a chunk is worked on by one process at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.aggregator import repository
from services.aggregator.backfill import align_down, align_up, chunks, recompute_chunk
from services.aggregator.catalog import compile_catalog
from services.aggregator.guard import CardinalityGuard
from services.aggregator.records import to_us
from services.aggregator.settings import AggregatorSettings
from shared.config.kpis import KpiSpec
from shared.db import transaction
from shared.timescaledb import rematerialize

log = logging.getLogger(__name__)
_SPEC: TypeAdapter[KpiSpec] = TypeAdapter(KpiSpec)


class Pacer:
    """At most `rate` events per second on average since it started: how long to wait
    after the work done so far."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._clock = clock
        self._started = clock()
        self._events = 0

    def delay(self, events: int) -> float:
        self._events += events
        return max(0.0, self._started + self._events / self._rate - self._clock())


def recompute_range(
    first: datetime | None, last: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """15-minute aligned [from, to) holding every stored event (empty when there is none)."""
    if first is None or last is None:
        return align_down(now), align_down(now)
    return align_down(first), align_up(last + timedelta(microseconds=1))


class Recompute:
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        settings: AggregatorSettings,
        dependents: Callable[[str], frozenset[str]],
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._settings = settings
        self._dependents = dependents  # KPI -> the derived KPIs reading it, to announce
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stopping: asyncio.Event) -> None:
        """Until stopped: work on whatever there is, then wait for an `apply` or the poll."""
        while not stopping.is_set():
            self._wake.clear()
            try:
                await self.run_once(stopping)
            except Exception as exc:  # noqa: BLE001  # resumed from its progress next round
                log.warning("KPI recompute round failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.aggregator_recompute_poll)

    async def run_once(self, stopping: asyncio.Event) -> None:
        async with transaction(self._sessions) as session:
            work = await repository.recomputing_versions(session)
        for version in work:
            if stopping.is_set():
                return
            await self._recompute(version, stopping)
        await self._drop_retired()

    async def _recompute(self, work: repository.VersionWork, stopping: asyncio.Event) -> None:
        catalog = compile_catalog(
            {work.storage: _SPEC.validate_python(work.spec)}, {work.storage: None}
        )
        if work.recompute_from is None:
            async with transaction(self._sessions) as session:
                await repository.wait_for_running_batches(session)
            async with transaction(self._sessions) as session:
                lo, hi = recompute_range(*await repository.events_span(session), datetime.now(UTC))
                await repository.set_recompute_range(session, work.kpi, work.version, lo, hi)
            log.info(
                "recomputing KPI history for a new version",
                extra={"kpi": work.kpi, "version": work.version, "from": str(lo), "to": str(hi)},
            )
        guard = CardinalityGuard()
        pacer = Pacer(self._settings.aggregator_recompute_events_per_second)
        while not stopping.is_set():
            async with transaction(self._sessions) as session:
                current = await repository.claim_version(session, work.kpi, work.version)
                if current is None:
                    return  # switched, superseded, or another process works on it
                assert current.recompute_to is not None
                assert current.recomputed_until is not None
                lo = current.recomputed_until
                if lo >= current.recompute_to:
                    break
                hi = chunks(lo, current.recompute_to, self._settings.aggregator_recompute_chunk)[0][
                    1
                ]
                events, pending = await recompute_chunk(
                    session, catalog, guard, work.storage, lo, hi
                )
                await repository.store_progress(session, work.kpi, work.version, hi, events)
            guard.commit(pending, catalog)
            delay = pacer.delay(events)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
        if not stopping.is_set():
            await self._switch(work)

    async def _switch(self, work: repository.VersionWork) -> None:
        async with transaction(self._sessions) as session:
            current = await repository.claim_version(session, work.kpi, work.version)
        if current is None or current.recompute_from is None or current.recompute_to is None:
            return
        # The aggregates answer for old hours and days: they must hold the new version's
        # state before anyone reads it through them.
        await rematerialize(self._engine, current.recompute_from, current.recompute_to)
        span = (to_us(current.recompute_from), to_us(current.recompute_to))
        async with transaction(self._sessions) as session:
            if await repository.claim_version(session, work.kpi, work.version) is None:
                return
            await repository.activate_version(session, work.kpi, work.version)
            ranges = dict.fromkeys({work.kpi, *self._dependents(work.kpi)}, span)
            await repository.store_updates(session, ranges)
        log.info("KPI version active", extra={"kpi": work.kpi, "version": work.version})

    async def _drop_retired(self) -> None:
        async with transaction(self._sessions) as session:
            storages = await repository.storages_to_drop(session)
        if not storages:
            return
        # Batches that loaded definitions before the switch may still write the old key.
        async with transaction(self._sessions) as session:
            await repository.wait_for_running_batches(session)
        for storage in storages:
            async with transaction(self._sessions) as session:
                span = await repository.drop_storage(session, storage)
            if span is not None:
                await rematerialize(self._engine, *span)
            log.info("dropped a retired KPI version's state", extra={"storage": storage})
