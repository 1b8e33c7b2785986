"""The cardinality guard's cache under concurrency: a value it knew was admitted stays
admitted for the batch that relied on it, even when the cache is cleared meanwhile (the
engine clears it whenever any task opens a new database connection)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from services.aggregator import guard as guard_module
from services.aggregator.guard import CardinalityGuard, Pending
from services.aggregator.rollup import Rollup

pytestmark = pytest.mark.unit


class _Catalog:
    """What `resolve` and `commit` read of a catalog: two KPIs, one dimension each."""

    def __init__(self) -> None:
        self.max_cardinality = {"orders": 10, "visits": 10}

    def dimensions(self, kpi: str) -> tuple[str, ...]:
        return ("channel",)


def _state(*values: tuple[str, int, str]) -> Rollup:
    state = Rollup()
    state.dim_values = Counter(values)
    return state


async def test_a_known_value_stays_admitted_when_the_cache_is_cleared_mid_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = CardinalityGuard()
    catalog: Any = _Catalog()
    guard.commit(Pending({("orders", 0): {"web"}}), catalog)  # an earlier batch's commit

    async def admit_values(
        session: object, kpi: str, dimension: str, limit: int, candidates: Sequence[str]
    ) -> set[str]:
        # While this batch waits on the database, another task opens a connection.
        guard.clear()
        return set(candidates)

    monkeypatch.setattr(guard_module.repository, "admit_values", admit_values)
    state = _state(("orders", 0, "web"), ("visits", 0, "app"))
    admitted, pending = await guard.resolve(None, state, catalog)  # type: ignore[arg-type]
    assert admitted("orders", 0, "web")  # from the cache, as it stood when the batch began
    assert admitted("visits", 0, "app")  # learned from the database in this batch
    assert not admitted("orders", 0, "mobile")  # never seen: not admitted
    assert pending.admitted == {("visits", 0): {"app"}}


async def test_a_full_dimension_refuses_unknown_values_without_asking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = CardinalityGuard()
    catalog: Any = _Catalog()
    catalog.max_cardinality = {"orders": 1}
    guard.commit(Pending({("orders", 0): {"web"}}), catalog)  # full at one value

    async def admit_values(*args: object) -> set[str]:
        raise AssertionError("a full dimension needs no database round trip")

    monkeypatch.setattr(guard_module.repository, "admit_values", admit_values)
    admitted, pending = await guard.resolve(
        None,  # type: ignore[arg-type]
        _state(("orders", 0, "web"), ("orders", 0, "app")),
        catalog,
    )
    assert admitted("orders", 0, "web")
    assert not admitted("orders", 0, "app")
    assert pending.admitted == {}
