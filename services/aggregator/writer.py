"""One database transaction per batch: the exactly-once core.

In one transaction: the definitions barrier, the events not seen before (dedupe on
(source, id)), the KPI state those — and only those — produce, the changed KPI ranges for
kpi-updates (an outbox), and the partitions' next offsets with their watermarks. Either
all of it commits or none of it does; on start and on every assignment the consumer
resumes from the stored offsets. A batch replayed after a crash therefore finds its events
already deduplicated and its offsets already past it, or finds nothing of it at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.aggregator import metrics, repository
from services.aggregator.batch import Batch
from services.aggregator.catalog import Catalog
from services.aggregator.definitions import Definitions
from services.aggregator.guard import CardinalityGuard
from services.aggregator.known import KnownRows
from services.aggregator.rollup import ComebackRow, DistinctRow, Rollup, fold, rollup
from services.aggregator.updates import changed_ranges
from shared.db import transaction
from shared.retry import until_stopped

log = logging.getLogger(__name__)


class BadData(Exception):
    """The database refused something in this batch's data (SQLSTATE class 22)."""


_TRANSIENT = (SQLAlchemyError, psycopg.Error, OSError)


class OffsetGap(Exception):
    """The database's offsets are behind where the batch starts: the consumer must go back
    to them, or the events in between would never be counted."""

    def __init__(self, stored: dict[int, repository.StoredOffset | None]) -> None:
        super().__init__(f"stored offsets behind the batch: {sorted(stored)}")
        self.stored = stored


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch collected and worked on ahead of its transaction."""

    records: list[Any]  # the Kafka records (aiokafka ConsumerRecord)
    batch: Batch
    catalog: Catalog
    state: Rollup  # rollup of every event, valid if all turn out new and definitions hold


@dataclass(slots=True)
class Written:
    applied: int = 0
    duplicates: int = 0
    folds: Counter[tuple[str, str]] = field(default_factory=Counter)


def _is_data_error(exc: BaseException) -> bool:
    original = exc.orig if isinstance(exc, DBAPIError) else exc
    return isinstance(original, psycopg.errors.DataError)


class BatchWriter:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        definitions: Definitions,
        guard: CardinalityGuard,
        *,
        group_id: str,
        topic: str,
        watermark_delay_us: int,
        retry_max_delay: float = 5.0,
        known_rows: int = 500_000,
    ) -> None:
        self._sessions = sessions
        self._definitions = definitions
        self._guard = guard
        self._group_id = group_id
        self._topic = topic
        self._delay_us = watermark_delay_us
        self._retry_max_delay = retry_max_delay
        self._known_distinct: KnownRows[DistinctRow] = KnownRows(known_rows)
        self._known_comebacks: KnownRows[ComebackRow] = KnownRows(known_rows)

    def forget(self) -> None:
        """Drop every cache of stored state (new definitions, or a new database connection:
        a restored or failed-over database may not hold what this process saw committed)."""
        self._guard.clear()
        self._known_distinct.clear()
        self._known_comebacks.clear()

    def prepare(self, records: list[Any], batch: Batch) -> Prepared:
        """CPU work done before the transaction, while the previous batch is being written:
        the rollup, assuming every event is new (as it nearly always is)."""
        catalog = self._definitions.catalog
        return Prepared(records, batch, catalog, rollup(batch.events, catalog))

    async def write(self, batch: Batch, prepared: Prepared | None = None) -> Written:
        started = time.perf_counter()
        out = Written()
        async with transaction(self._sessions) as session:
            behind = await repository.offsets_behind(
                session, self._group_id, self._topic, batch.first_offsets, batch.resumes
            )
            if behind:
                self.forget()  # what it cached of those commits is gone too
                raise OffsetGap(behind)  # rolls the transaction back
            if await self._definitions.ensure_current(session):
                self.forget()
            catalog = self._definitions.catalog
            fresh = await repository.insert_events(session, batch.events)
            out.applied = len(fresh)
            out.duplicates = len(batch.events) - len(fresh) + batch.duplicates_in_batch
            if (
                prepared is not None
                and prepared.catalog is catalog
                and out.applied == len(batch.events)
            ):
                state = prepared.state
            else:  # duplicates, or definitions changed: derive from exactly the new events
                state = rollup(fresh, catalog)
            admitted, pending = await self._guard.resolve(session, state, catalog)
            state, folds = fold(state, admitted)
            await repository.lock_kpis_shared(session, state.kpis())
            state_text = repository.state_lines(
                state,
                catalog,
                distinct=self._known_distinct.unknown(state.distinct),
                comebacks=self._known_comebacks.unknown(state.comebacks),
            )
            await repository.write_state(session, state_text)
            await repository.store_updates(session, changed_ranges(state, catalog))
            await repository.store_offsets(
                session,
                self._group_id,
                self._topic,
                batch.next_offsets,
                batch.marks,
                self._delay_us,
            )
        # Committed: now (and only now) the caches may remember it (the world learns of it
        # through the outbox relay).
        self._guard.commit(pending, catalog)
        self._known_distinct.remember(state.distinct)
        self._known_comebacks.remember(state.comebacks)
        for (kpi, index), count in folds.items():
            out.folds[(kpi, catalog.dimensions(kpi)[index])] += count
        metrics.commit_seconds.observe(time.perf_counter() - started)
        return out

    async def write_retrying(
        self, batch: Batch, stopping: asyncio.Event, prepared: Prepared | None = None
    ) -> Written:
        """Write, retrying transient failures (database down, deadlock) with backoff until
        it works or shutdown begins (then `Abandoned`: nothing of the batch was committed).
        Raises BadData for data the database refuses."""

        async def attempt() -> Written:
            try:
                return await self.write(batch, prepared)
            except _TRANSIENT as exc:
                if _is_data_error(exc):
                    raise BadData(str(getattr(exc, "orig", exc))) from exc
                metrics.db_retries.inc()
                raise

        return await until_stopped(
            attempt,
            what="batch not written",
            stopping=stopping,
            log=log,
            retry_if=lambda exc: isinstance(exc, _TRANSIENT),
            cap=self._retry_max_delay,
        )
