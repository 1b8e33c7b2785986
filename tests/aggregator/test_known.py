"""The known-rows cache may forget rows, but must never claim a row it was not told of."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.aggregator.known import KnownRows

pytestmark = pytest.mark.unit

batches = st.lists(st.lists(st.integers(0, 60), max_size=12), max_size=30)


@given(batches=batches, capacity=st.integers(2, 40), probe=st.integers(0, 60))
def test_known_rows_are_always_rows_remembered_since_the_last_clear(
    batches: list[list[int]], capacity: int, probe: int
) -> None:
    known: KnownRows[int] = KnownRows(capacity)
    told: set[int] = set()
    largest = max((len(b) for b in batches), default=0)
    for i, batch in enumerate(batches):
        if i % 7 == 6:
            known.clear()
            told.clear()
        known.remember(batch)
        told.update(batch)
        assert set(known.unknown(range(61))) >= set(range(61)) - told
        # Each generation holds at most half the capacity plus the batch that filled it.
        assert len(known) <= capacity + 2 * largest
    assert (probe in known.unknown([probe])) or (probe in told)


@given(batch=st.lists(st.integers(), max_size=50, unique=True), capacity=st.integers(2, 100))
def test_the_latest_batch_is_known_when_it_fits(batch: list[int], capacity: int) -> None:
    known: KnownRows[int] = KnownRows(capacity)
    known.remember(range(-1000, -1000 + capacity))  # older rows, maybe evicted
    known.remember(batch)
    if len(batch) <= capacity // 2:
        assert known.unknown(batch) == []
    assert known.unknown([10**9]) == [10**9]
