"""Our cached partitioner must place every key exactly where Kafka's default one does: the
aggregator relies on one actor's events sharing a partition, whoever produced them."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.kafka import partition_for

pytestmark = pytest.mark.unit


@given(
    keys=st.lists(st.binary(max_size=40), min_size=1, max_size=20),
    count=st.integers(1, 64),
)
def test_same_partition_as_the_default_partitioner(keys: list[bytes], count: int) -> None:
    partitions = list(range(count))
    default = DefaultPartitioner()
    for key in keys + keys:  # the second round is answered from the cache
        assert partition_for(key, partitions, partitions) == default(key, partitions, partitions)


def test_no_key_goes_to_an_available_partition() -> None:
    picks = {partition_for(None, [0, 1, 2, 3], [1, 3]) for _ in range(200)}
    assert picks == {1, 3}
