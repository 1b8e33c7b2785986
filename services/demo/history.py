"""The demo's history: weeks of simulated events written by the aggregator's own batch writer.

Ingest takes events up to the allowed lateness (at most 7 days) behind its clock, so a past
of eight weeks cannot go through it. The history goes straight to `BatchWriter.write`
instead, the transaction the consumer runs for every Kafka batch: the same dedupe on
(source, id), the same `events` rows, the same KPI state and cardinality guard, under the
same locks (a second writer is what a scaled-out aggregator is). Then the continuous
aggregates are refreshed over the history, as `pacekeeper backfill` does, because
`kpi_value` reads minutes older than their horizon from them. `kpi_value` answers for these
events exactly what it would had they come through ingest.

Generating a batch (Python) overlaps writing the previous one (PostgreSQL): on 2 cores the
two halves of the work run side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.aggregator.batch import Batch
from services.aggregator.definitions import Definitions
from services.aggregator.guard import CardinalityGuard
from services.aggregator.records import Event, make_event
from services.aggregator.writer import BatchWriter, Prepared, Written
from services.demo.simulator import EventStream, SimEvent, Simulator
from shared.db import make_engine, make_sessionmaker, transaction
from shared.settings import BaseServiceSettings
from shared.timescaledb import rematerialize

# 5,000 events a transaction, as the aggregator's own batches: per-batch costs are a small
# share, and progress moves every second or so (4,000-5,000 events/s on 2 shared cores).
BATCH = 5000
# Simulated time generated between two yields to the event loop, so the write in flight
# gets its turn: an hour of the demo's shop is a couple of hundred events.
STEP = timedelta(hours=1)
GROUP = "pacekeeper-demo-history"


@dataclass(slots=True)
class Progress:
    """Where the load stands, for the progress line."""

    start: datetime
    end: datetime
    position: datetime
    written: int = 0
    duplicates: int = 0
    phase: str = "events"  # events, then aggregates

    @property
    def share(self) -> float:
        span = (self.end - self.start).total_seconds()
        return 1.0 if span <= 0 else (self.position - self.start).total_seconds() / span


@dataclass(frozen=True, slots=True)
class Loaded:
    events: int
    duplicates: int
    seconds: float  # generating and writing the events
    aggregates_seconds: float  # refreshing the continuous aggregates over them


def to_event(event: SimEvent, received_at: datetime) -> Event:
    body = event.body
    return make_event(
        source=event.source,
        id=body["id"],
        type=body["type"],
        time=event.time,
        received_at=received_at,
        user_id=body.get("user_id"),
        anonymous_id=body.get("anonymous_id"),
        properties=body["properties"],
    )


async def load_history(
    settings: BaseServiceSettings,
    simulator: Simulator,
    start: datetime,
    end: datetime,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    stop: asyncio.Event | None = None,
    batch_size: int = BATCH,
) -> Loaded:
    """Write every simulated event with a time in [start, end) and refresh the aggregates.

    Stops early (between batches, nothing half written) when `stop` is set."""
    progress = Progress(start, end, start)
    engine = make_engine(settings, application_name="pacekeeper-demo-history", pool_size=2)
    sessions = make_sessionmaker(engine)
    began = time.monotonic()
    writing: asyncio.Task[Written] | None = None
    try:
        definitions = Definitions()
        async with transaction(sessions) as session:
            await definitions.load(session)
        writer = BatchWriter(
            sessions,
            definitions,
            CardinalityGuard(),
            group_id=GROUP,
            topic=settings.events_topic,
            watermark_delay_us=0,
        )
        stream = EventStream(simulator, start)
        received = datetime.now(UTC)
        pending: list[Event] = []

        async def settle() -> None:
            nonlocal writing
            if writing is not None:
                written = await writing
                writing = None
                progress.written += written.applied
                progress.duplicates += written.duplicates
                if on_progress is not None:
                    on_progress(progress)

        async def launch(events: list[Event]) -> None:
            nonlocal writing
            batch = Batch(events=events, records=len(events))
            prepared: Prepared = writer.prepare([], batch)  # CPU, while the last one writes
            await settle()
            writing = asyncio.create_task(writer.write(batch, prepared))

        while stream.position < end and not (stop is not None and stop.is_set()):
            step_end = min(end, stream.position + STEP)
            pending.extend(to_event(e, received) for e in stream.until(step_end))
            progress.position = step_end
            while len(pending) >= batch_size:
                await launch(pending[:batch_size])
                pending = pending[batch_size:]
            await asyncio.sleep(0)  # let the write in flight send and receive
        if pending and not (stop is not None and stop.is_set()):
            await launch(pending)
        await settle()
        loaded = time.monotonic()
        progress.phase = "aggregates"
        if on_progress is not None:
            on_progress(progress)
        if progress.written:
            # Over what was written, even when stopped early: the schema stays for `report`.
            await rematerialize(engine, start, progress.position)
        return Loaded(
            progress.written,
            progress.duplicates,
            loaded - began,
            time.monotonic() - loaded,
        )
    finally:
        if writing is not None:  # an error above: nothing may outlive the engine
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await engine.dispose()
