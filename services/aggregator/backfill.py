"""Recompute one KPI from the `events` table (a new or changed definition), while the
consumer keeps running, without double counting.

Protocol, chunk by chunk (minute-aligned, 15-minute aligned so retention slots never
straddle a chunk edge): take the KPI's exclusive lock, delete its state for the chunk,
re-derive it from the events stored for the chunk, commit. A batch transaction takes
the KPI's shared lock before it writes state and holds it to its commit, so each batch
is either fully visible to the chunk's read (and its state is replaced) or applies its
delta after the chunk commits (its events were not visible to the read). Before the first
chunk, the definitions barrier waits out batches that started before the definition was
stored; every later batch applies the new definition itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator import repository
from services.aggregator.catalog import Catalog, compile_catalog
from services.aggregator.definitions import Definitions
from services.aggregator.guard import CardinalityGuard, Pending
from services.aggregator.rollup import fold, rollup
from shared.config.kpis import DERIVED_KINDS
from shared.db import make_engine, make_sessionmaker, transaction
from shared.settings import BaseServiceSettings
from shared.timescaledb import rematerialize

log = logging.getLogger(__name__)
ALIGN = timedelta(minutes=15)


class BackfillError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Result:
    kpi: str
    t_from: datetime
    t_to: datetime
    events: int
    chunks: int


def align_down(moment: datetime) -> datetime:
    moment = moment.astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return moment - (moment - epoch) % ALIGN


def align_up(moment: datetime) -> datetime:
    down = align_down(moment)
    return down if down == moment.astimezone(UTC) else down + ALIGN


async def recompute_chunk(
    session: AsyncSession,
    catalog: Catalog,
    guard: CardinalityGuard,
    key: str,
    lo: datetime,
    hi: datetime,
) -> tuple[int, Pending]:
    """Inside the caller's transaction: replace the state under storage key `key` (the one
    KPI of `catalog`) for events in [lo, hi) by what the stored events give; returns how
    many events were read, and what the guard learned (for `guard.commit` after the
    commit)."""
    await repository.lock_kpi_exclusive(session, key)
    await repository.delete_state(session, key, lo, hi)
    events = await repository.read_events(session, sorted(catalog.by_event), lo, hi)
    state = rollup(events, catalog)
    admitted, pending = await guard.resolve(session, state, catalog)
    state, _folds = fold(state, admitted)
    await repository.write_state(session, repository.state_lines(state, catalog))
    return len(events), pending


def chunks(t_from: datetime, t_to: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    size = max(ALIGN, size - size % ALIGN)
    lo, end = align_down(t_from), align_up(t_to)
    out = []
    while lo < end:
        out.append((lo, min(lo + size, end)))
        lo += size
    return out


async def backfill(
    settings: BaseServiceSettings,
    kpi: str,
    t_from: datetime,
    t_to: datetime,
    *,
    chunk: timedelta = timedelta(hours=1),
    progress: Callable[[int, int, int], None] | None = None,
) -> Result:
    """Recompute `kpi` for events in [t_from, t_to) (widened to 15-minute boundaries)."""
    if t_from >= t_to:
        raise BackfillError("--from must be before --to")
    engine = make_engine(settings, application_name="pacekeeper-backfill")
    sessions = make_sessionmaker(engine)
    try:
        async with transaction(sessions) as session:
            await repository.wait_for_running_batches(session)
        definitions = Definitions()
        async with transaction(sessions) as session:
            await definitions.load(session)
        if kpi in definitions.pending:
            raise BackfillError(
                f"a new version of {kpi} is recomputing its history; see"
                f" `pacekeeper kpis history {kpi}`"
            )
        key = definitions.active.get(kpi)
        spec = None if key is None else definitions.catalog.specs.get(key)
        if key is None or spec is None:
            raise BackfillError(f"unknown KPI {kpi!r} (apply it first)")
        if spec.kind in DERIVED_KINDS:
            raise BackfillError(
                f"{kpi} is a {spec.kind.value}: it is computed at query time from other KPIs;"
                " backfill those instead"
            )
        catalog = compile_catalog({key: spec})
        guard = CardinalityGuard()
        plan = chunks(t_from, t_to, chunk)
        total = 0
        for done, (lo, hi) in enumerate(plan, start=1):
            async with transaction(sessions) as session:
                events, pending = await recompute_chunk(session, catalog, guard, key, lo, hi)
            guard.commit(pending, catalog)
            total += events
            if progress is not None:
                progress(done, len(plan), events)
        await rematerialize(engine, plan[0][0], plan[-1][1])
        return Result(kpi, plan[0][0], plan[-1][1], total, len(plan))
    finally:
        await engine.dispose()
