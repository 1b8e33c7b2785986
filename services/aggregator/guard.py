"""Cardinality guard: each KPI dimension keeps at most `max_cardinality` distinct values.

The admitted values live in `kpi_dimension_values` (so every process and restart agrees);
this class caches them. Admitted values are never withdrawn and a full dimension stays
full until its limit changes, so cached answers stay true — only values the cache does
not know go to the database, inside the batch's transaction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator import repository
from services.aggregator.catalog import Catalog
from services.aggregator.rollup import Admitted, Rollup


@dataclass(slots=True)
class Pending:
    """What a transaction learned; applied to the cache only after it commits."""

    admitted: dict[tuple[str, int], set[str]] = field(default_factory=dict)


class CardinalityGuard:
    def __init__(self) -> None:
        self._admitted: dict[tuple[str, int], set[str]] = defaultdict(set)
        self._full: set[tuple[str, int]] = set()

    def clear(self) -> None:
        """Definitions changed (a limit may have grown): forget everything."""
        self._admitted.clear()
        self._full.clear()

    async def resolve(
        self, session: AsyncSession, state: Rollup, catalog: Catalog
    ) -> tuple[Admitted, Pending]:
        unknown: dict[tuple[str, int], list[str]] = defaultdict(list)
        # The cached answers this batch relies on, taken before the first await: `clear()`
        # may run while the batch waits on the database (the engine forgets every cache
        # when any task opens a new connection), and a value read from the cache after that
        # would look refused, and fold into __other__, though it was admitted long ago.
        known: dict[tuple[str, int], set[str]] = {}
        for kpi, index, value in state.dim_values:
            slot = (kpi, index)
            cached = known.get(slot)
            if cached is None:
                cached = known[slot] = self._admitted[slot]
            if value not in cached and slot not in self._full:
                unknown[slot].append(value)
        pending = Pending()
        for slot in sorted(unknown):  # fixed lock order across processes
            kpi, index = slot
            pending.admitted[slot] = await repository.admit_values(
                session,
                kpi,
                catalog.dimensions(kpi)[index],
                catalog.max_cardinality[kpi],
                unknown[slot],
            )

        def admitted(kpi: str, index: int, value: str) -> bool:
            learned = pending.admitted.get((kpi, index))
            if learned is not None:
                return value in learned
            return value in known.get((kpi, index), ())

        return admitted, pending

    def commit(self, pending: Pending, catalog: Catalog) -> None:
        for slot, values in pending.admitted.items():
            self._admitted[slot] = set(values)
            if len(values) >= catalog.max_cardinality.get(slot[0], 0):
                self._full.add(slot)
