"""The aggregator as a component: `start()`, `run()` until asked to stop, `stop()`.

Pipeline per batch: collect records -> assemble (decode, lateness, in-batch dedupe) ->
DLQ the rejected ones (acked) -> one transaction (events, KPI state, changed KPI ranges,
offsets) -> after the commit, the relay announces those ranges on kpi-updates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.aggregator import dlq, metrics, repository
from services.aggregator.batch import Batch, Policy, Rejected, assemble
from services.aggregator.consumer import EventConsumer
from services.aggregator.definitions import Definitions, listen
from services.aggregator.guard import CardinalityGuard
from services.aggregator.recompute import Recompute
from services.aggregator.repository import StoredOffset
from services.aggregator.settings import AggregatorSettings
from services.aggregator.updates import RELAY_ERRORS, UpdateRelay
from services.aggregator.watermark import Watermark
from services.aggregator.writer import (
    BadData,
    BatchWriter,
    OffsetGap,
    Prepared,
    Written,
)
from shared.db import make_engine, make_sessionmaker, transaction
from shared.kafka import ensure_topics, make_producer
from shared.retry import Abandoned, until_stopped

log = logging.getLogger(__name__)
T = TypeVar("T")


class Aggregator:
    def __init__(self, settings: AggregatorSettings) -> None:
        self.settings = settings
        self.stopping = asyncio.Event()
        self.definitions = Definitions()
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._producer = make_producer(settings, client_id="pacekeeper-aggregator")
        self._consumer = EventConsumer(settings, self._load_offsets)
        self._writer: BatchWriter | None = None
        self._relay: UpdateRelay | None = None
        self._recompute: Recompute | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._db_ok = False
        self._policy = Policy(settings.watermark_delay_us, settings.allowed_lateness_us)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._engine = make_engine(s, application_name="pacekeeper-aggregator")
        self._sessions = make_sessionmaker(self._engine)
        self._writer = BatchWriter(
            self._sessions,
            self.definitions,
            CardinalityGuard(),
            group_id=s.aggregator_group_id,
            topic=s.events_topic,
            watermark_delay_us=s.watermark_delay_us,
            retry_max_delay=s.aggregator_retry_max_delay,
            known_rows=s.aggregator_known_rows,
        )
        writer = self._writer
        event.listen(self._engine.sync_engine, "connect", lambda *_: writer.forget())
        partitions = s.aggregator_topic_partitions
        await ensure_topics(
            s, {s.events_topic: partitions, s.dlq_topic: 1, s.kpi_updates_topic: partitions}
        )
        await self._producer.start()
        await self._retrying("load KPI definitions", self._reload)
        self._tasks.append(
            asyncio.create_task(listen(s.database_url.get_secret_value(), self._reload_quietly))
        )
        self._tasks.append(asyncio.create_task(self._purge_dedupe()))
        self._relay = UpdateRelay(self._sessions, self._producer, s.kpi_updates_topic)
        self._relay.wake()  # what a previous process committed but did not send
        self._tasks.append(asyncio.create_task(self._relay.run(self.stopping)))
        self._recompute = Recompute(
            self._engine,
            self._sessions,
            s,
            lambda kpi: self.definitions.catalog.dependents.get(kpi, frozenset()),
        )
        self._tasks.append(asyncio.create_task(self._recompute.run(self.stopping)))
        await self._consumer.start()
        log.info(
            "aggregator started",
            extra={"topic": s.events_topic, "group": s.aggregator_group_id},
        )

    async def stop(self) -> None:
        self.stopping.set()
        for task in self._tasks:
            task.cancel()
        # A background task that died must not cut the shutdown short.
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("background task had failed", exc_info=outcome)
        await self._consumer.stop()
        if self._relay is not None:
            # The last batches' updates; whatever does not make it stays queued for the
            # next relay round of any aggregator process.
            try:
                await asyncio.wait_for(self._relay.drain(), timeout=5)
            except RELAY_ERRORS as exc:
                log.warning("kpi updates left queued at shutdown", extra={"error": repr(exc)})
        await self._producer.stop()
        if self._engine is not None:
            await self._engine.dispose()
        log.info("aggregator stopped")

    async def ready(self) -> bool:
        return self._db_ok and self._consumer.assigned and not self.stopping.is_set()

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        """Collect and decode batch N+1 while batch N is written (on two cores that CPU work
        fits in the database waits).

        Only the write holds `consumer.lock`. Collecting must not: aiokafka's getmany waits
        for a rebalance to finish, and the rebalance listener waits for the lock — holding
        it across getmany deadlocks the rebalance. A batch collected across a seek (a
        rebalance, or going back after lost commits) is dropped and fetched again.
        """
        ahead: asyncio.Task[tuple[int, Prepared]] | None = None
        loop = asyncio.get_running_loop()
        check_positions_at = loop.time() + self.settings.aggregator_position_check_interval
        try:
            while not self.stopping.is_set():
                if loop.time() >= check_positions_at:
                    # If it seeks, in_order drops the batch being read ahead.
                    await self._check_positions()
                    check_positions_at = (
                        loop.time() + self.settings.aggregator_position_check_interval
                    )
                if ahead is None:
                    ahead = asyncio.create_task(self._prepare(self._consumer.marks))
                seeks, ready = await ahead
                ahead = None
                if not ready.records:
                    continue
                async with self._consumer.lock:
                    if not self._consumer.in_order(ready.records, seeks):
                        await self._consumer.rewind(ready.records)
                        continue
                    ahead = asyncio.create_task(self._prepare(ready.batch.marks))
                    metrics.batch_size.observe(len(ready.records))
                    try:
                        await self._process(ready.records, ready.batch, set(), ready)
                    except Abandoned:
                        log.info("shutting down: batch abandoned, it will be read again")
                        return
                    except OffsetGap as gap:
                        # The batch read ahead was collected before this seek: in_order
                        # drops it.
                        await self._consumer.resume_from(gap.stored)
                        continue
                if self._relay is not None:
                    self._relay.wake()
        finally:
            if ahead is not None:
                await _discard(ahead)

    async def _check_positions(self) -> None:
        """Go back where the database lost commits that no batch will reveal.

        A batch finds lost commits of its own partitions (`OffsetGap`); a partition that
        receives nothing after them (a quiet stream, a producer that has finished) never
        gets such a batch, and its lost events would wait for the next restart. So the
        positions are compared with the stored offsets every
        `aggregator_position_check_interval` seconds.
        """
        assert self._sessions is not None
        assert self._writer is not None
        seeks, positions = self._consumer.seeks, dict(self._consumer.positions)
        if not positions:
            return
        try:
            async with transaction(self._sessions) as session:
                stored = await repository.load_offsets(
                    session,
                    self.settings.aggregator_group_id,
                    self.settings.events_topic,
                    sorted(positions),
                )
        except Exception as exc:  # noqa: BLE001  # the next check, or the next batch, sees it
            log.debug("position check failed", extra={"error": str(exc)})
            return
        behind: dict[int, StoredOffset | None] = {
            p: stored.get(p)
            for p, position in positions.items()
            if p not in stored or stored[p].next_offset < position
        }
        if not behind:
            return
        async with self._consumer.lock:
            # A seek since the read (a rebalance, a gap a batch found) loaded the stored
            # offsets itself; batches are written only by this loop, so nothing else moved.
            if self._consumer.seeks != seeks:
                return
            self._writer.forget()  # what it cached of those commits is gone too
            await self._consumer.resume_from(behind)

    async def _prepare(self, marks: Mapping[int, Watermark]) -> tuple[int, Prepared]:
        """The next batch, and the consumer's seek count from before it was collected."""
        s = self.settings
        seeks = self._consumer.seeks
        records = await self._consumer.collect(
            s.aggregator_batch_max_events, s.aggregator_batch_max_wait
        )
        # Decoding and pre-aggregating are pure Python: on a worker thread they run while the
        # event loop waits on the database for the batch being written (the GIL is free
        # during those waits), instead of delaying its next statement.
        return seeks, await asyncio.to_thread(self._assemble, records, dict(marks))

    def _assemble(self, records: list[ConsumerRecord], marks: Mapping[int, Watermark]) -> Prepared:
        assert self._writer is not None
        return self._writer.prepare(records, assemble(records, marks, self._policy))

    async def _process(
        self,
        records: Sequence[ConsumerRecord],
        batch: Batch,
        sent: set[tuple[int, int]],
        prepared: Prepared | None = None,
    ) -> Written:
        """Write one batch; on data the database refuses, split it until the culprit is one
        record, which goes to the DLQ — the stream never stops on one bad message."""
        assert self._writer is not None
        positions = self._consumer.positions
        batch.resumes = frozenset(p for p in batch.first_offsets if p in positions)
        await self._dead_letter(
            [r for r in batch.rejected if (r.partition, r.offset) not in sent], sent
        )
        try:
            written = await self._writer.write_retrying(batch, self.stopping, prepared)
        except BadData as exc:
            if len(records) == 1:
                record = records[0]
                log.error(
                    "record refused by the database, sent to the DLQ",
                    extra={"partition": record.partition, "offset": record.offset},
                )
                reason = f"refused by the database: {exc}"
                await self._dead_letter(
                    [Rejected(record.partition, record.offset, record.key, record.value, reason)],
                    sent,
                )
                batch.events.clear()
                written = await self._writer.write_retrying(batch, self.stopping)
            else:
                middle = len(records) // 2
                first_half = assemble(records[:middle], self._consumer.marks, self._policy)
                first = await self._process(records[:middle], first_half, sent)
                second_half = assemble(records[middle:], self._consumer.marks, self._policy)
                second = await self._process(records[middle:], second_half, sent)
                return _combine(first, second)
        self._consumer.committed(batch.next_offsets, batch.marks)
        self._db_ok = True
        metrics.events_applied.inc(written.applied)
        metrics.duplicates_dropped.inc(written.duplicates)
        metrics.late_events.inc(batch.late)
        metrics.too_late_events.inc(batch.too_late)
        for (kpi, dimension), count in written.folds.items():
            metrics.cardinality_folds.labels(kpi, dimension).inc(count)
        return written

    async def _dead_letter(self, rejected: list[Rejected], sent: set[tuple[int, int]]) -> None:
        if not rejected:
            return
        # Any send failure is retried, never skipped.
        await until_stopped(
            lambda: dlq.publish(
                self._producer, self.settings.dlq_topic, self.settings.events_topic, rejected
            ),
            what="DLQ publish failed",
            stopping=self.stopping,
            log=log,
            cap=self.settings.aggregator_retry_max_delay,
        )
        sent.update((r.partition, r.offset) for r in rejected)

    # --- database helpers ---------------------------------------------------------------

    async def _load_offsets(self, partitions: Sequence[int]) -> dict[int, StoredOffset]:
        async def load() -> dict[int, StoredOffset]:
            assert self._sessions is not None
            async with transaction(self._sessions) as session:
                return await repository.load_offsets(
                    session,
                    self.settings.aggregator_group_id,
                    self.settings.events_topic,
                    partitions,
                )

        return await self._retrying("load offsets", load)

    async def _reload(self) -> None:
        assert self._sessions is not None
        async with transaction(self._sessions) as session:
            await self.definitions.load(session)
        self._db_ok = True

    async def _reload_quietly(self) -> None:
        if self._recompute is not None:
            self._recompute.wake()  # a new version may wait for its history
        try:
            await self._reload()
        except Exception as exc:  # noqa: BLE001  # the next batch reloads anyway
            log.warning("KPI definitions reload failed", extra={"error": str(exc)})

    async def _retrying(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        """`action`, retried while the database may be restarting."""

        def unhealthy(_: BaseException) -> None:
            self._db_ok = False

        return await until_stopped(
            action,
            what=f"{what} failed",
            stopping=self.stopping,
            log=log,
            cap=self.settings.aggregator_retry_max_delay,
            on_failure=unhealthy,
        )

    async def _purge_dedupe(self) -> None:
        """Forget (source, id) pairs older than the dedupe window, a slice at a time."""
        assert self._sessions is not None
        window = self.settings.dedupe_window
        while True:
            await asyncio.sleep(self.settings.aggregator_dedupe_purge_interval)
            try:
                deleted = 1
                while deleted:
                    async with transaction(self._sessions) as session:
                        deleted = await repository.purge_dedupe(session, window)
            except Exception as exc:  # noqa: BLE001  # retried at the next interval
                log.warning("dedupe purge failed", extra={"error": str(exc)})


async def _discard(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _combine(first: Written, second: Written) -> Written:
    out = Written(first.applied + second.applied, first.duplicates + second.duplicates)
    out.folds = first.folds + second.folds
    return out
