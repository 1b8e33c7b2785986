"""The Kafka side: a consumer whose positions and watermarks come from the database.

Offsets are never committed to Kafka: the batch transaction stores them. On every
assignment the rebalance listener reads them back and seeks there (partitions never seen
start at the beginning), so a restart or a partition moving to another process resumes
exactly after the last committed batch. `lock` is held while a batch is written (never
while fetching: getmany itself waits for a rebalance to finish); the listener takes it,
so a rebalance waits for the write in flight. Records fetched before a seek (a rebalance,
or going back after lost commits) may not continue the positions: `in_order` catches them
and `rewind` refetches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.aggregator import metrics
from services.aggregator.repository import StoredOffset
from services.aggregator.settings import AggregatorSettings
from services.aggregator.watermark import Watermark
from shared.kafka import make_consumer

log = logging.getLogger(__name__)

LoadOffsets = Callable[[Sequence[int]], Awaitable[dict[int, StoredOffset]]]


class EventConsumer:
    def __init__(self, settings: AggregatorSettings, load_offsets: LoadOffsets) -> None:
        self.topic = settings.events_topic
        self.lock = asyncio.Lock()
        self.marks: dict[int, Watermark] = {}
        # Next offset per partition after the last committed batch (from the database on
        # assignment); unknown for a partition never committed, which starts at the beginning.
        self.positions: dict[int, int] = {}
        # Counts the seeks (assignment, lost commits, rewind): records collected before one
        # may continue positions that no longer hold, and `in_order` refuses them.
        self.seeks = 0
        self._settings = settings
        self._load_offsets = load_offsets
        self._consumer = make_consumer(
            settings,
            group_id=settings.aggregator_group_id,
            client_id="pacekeeper-aggregator",
            max_poll_records=settings.aggregator_batch_max_events,
            group_instance_id=settings.aggregator_instance_id,
            session_timeout_ms=settings.aggregator_session_timeout_ms,
            heartbeat_interval_ms=settings.aggregator_heartbeat_interval_ms,
            max_poll_interval_ms=settings.aggregator_max_poll_interval_ms,
        )

    async def start(self) -> None:
        self._consumer.subscribe([self.topic], listener=_Listener(self))
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    @property
    def assigned(self) -> bool:
        return bool(self._consumer.assignment())

    async def collect(self, max_events: int, max_wait: float) -> list[ConsumerRecord]:
        """Up to `max_events` records, waiting at most `max_wait` s for the batch to fill.

        Records stay in offset order within each partition. The service reads ahead while
        a batch is written; `seeks` and `in_order` tell it when a rebalance or a rewind
        made that read stale.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        records: list[ConsumerRecord] = []
        while len(records) < max_events:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            fetched = await self._consumer.getmany(
                timeout_ms=max(1, int(remaining * 1000)), max_records=max_events - len(records)
            )
            for batch in fetched.values():
                records.extend(batch)
        return records

    def in_order(self, records: Sequence[ConsumerRecord], seeks: int) -> bool:
        """Call with `lock` held: no seek since the batch's collection began (`seeks` as it
        was then), every partition of the batch is still ours and its records start exactly
        at the committed position (nothing skipped, nothing repeated)."""
        if seeks != self.seeks:
            return False
        assigned = {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}
        first: dict[int, int] = {}
        for record in records:
            first.setdefault(record.partition, record.offset)
        return all(
            p in assigned and self.positions.get(p, offset) == offset for p, offset in first.items()
        )

    async def rewind(self, records: Sequence[ConsumerRecord]) -> None:
        """Call with `lock` held: drop a batch that is not `in_order` and fetch again from
        the committed positions of the partitions still assigned."""
        self.seeks += 1
        assigned = {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}
        for partition in {r.partition for r in records} & assigned:
            position = self.positions.get(partition)
            tp = TopicPartition(self.topic, partition)
            if position is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, position)
        log.info(
            "batch fetched across a rebalance dropped; refetching", extra={"records": len(records)}
        )

    async def resume_from(self, stored: dict[int, StoredOffset | None]) -> None:
        """Call with `lock` held: go back to offsets the database holds (None: it holds none,
        start over) but this process had moved past, because its later commits were lost;
        the batches after them are read again."""
        assigned = {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}
        for partition, offset in stored.items():
            if partition in assigned:
                await self._seek_to_stored(partition, offset)
        log.warning(
            "the database lost commits; reading again from its offsets",
            extra={"offsets": {p: o and o.next_offset for p, o in stored.items()}},
        )

    def committed(self, next_offsets: dict[int, int], marks: dict[int, Watermark]) -> None:
        """Record what a batch committed; refresh the lag and watermark gauges."""
        self.positions.update(next_offsets)
        self.marks.update(marks)
        delay = self._settings.watermark_delay_us
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            position = self.positions.get(tp.partition)
            if highwater is not None and position is not None:
                metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - position, 0)
                )
            mark = self.marks.get(tp.partition)
            complete = None if mark is None else mark.complete_before(delay)
            if complete is not None:
                metrics.watermark_seconds.labels(tp.topic, str(tp.partition)).set(complete / 1e6)

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        partitions = sorted(tp.partition for tp in assigned if tp.topic == self.topic)
        stored = await self._load_offsets(partitions)
        async with self.lock:
            for partition in partitions:
                await self._seek_to_stored(partition, stored.get(partition))
        log.info(
            "partitions assigned",
            extra={"partitions": partitions, "from_db": sorted(stored)},
        )

    async def _seek_to_stored(self, partition: int, offset: StoredOffset | None) -> None:
        """Continue a partition after its stored offset, or from the beginning without one."""
        self.seeks += 1
        tp = TopicPartition(self.topic, partition)
        if offset is None:
            await self._consumer.seek_to_beginning(tp)
            self.marks[partition] = Watermark()
            self.positions.pop(partition, None)
        else:
            self._consumer.seek(tp, offset.next_offset)
            self.marks[partition] = offset.mark
            self.positions[partition] = offset.next_offset

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Waits for the batch in flight to commit: it may hold records of these partitions.
        async with self.lock:
            for tp in revoked:
                self.marks.pop(tp.partition, None)
                self.positions.pop(tp.partition, None)
                for gauge in (metrics.consumer_lag, metrics.watermark_seconds):
                    with contextlib.suppress(KeyError):  # never set for this partition
                        gauge.remove(tp.topic, str(tp.partition))
        if revoked:
            log.info(
                "partitions revoked", extra={"partitions": sorted(tp.partition for tp in revoked)}
            )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._owner._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._owner._on_assigned(assigned)
