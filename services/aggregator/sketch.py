"""A DDSketch-style log-bucketed histogram for percentiles that merge across windows.

A value v > 0 goes to bin i = ceil(log_gamma v) with gamma = (1 + alpha) / (1 - alpha);
every value in that bin is within alpha of the bin's representative 2 gamma^i / (gamma + 1).
Negative values use the same bins of |v| under an `n` prefix, and |v| below
`MIN_INDEXABLE` counts as zero (`z`). A sketch is `{bin key: count}`; two sketches merge
by adding counts per key, which SQL does with `pk_sketch_merge` — so minutes roll up into
any window without losing accuracy.

The representation is part of the stored data: the SQL functions carry the same gamma
(`pk_sketch_value` in shared/migrations/functions.sql); tests/aggregator/test_sql_math.py
keeps the two in step.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01  # the contract: <= 1 % relative error for every quantile
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA = 1 / math.log(GAMMA)
# Below a nanounit the relative guarantee gives way to an absolute error of 1e-9.
MIN_INDEXABLE = 1e-9
ZERO = "z"

Sketch = Counter[str]


def key(value: float) -> str:
    magnitude = abs(value)
    if magnitude < MIN_INDEXABLE:
        return ZERO
    index = math.ceil(math.log(magnitude) * _INV_LOG_GAMMA)
    return str(index) if value > 0 else f"n{index}"


def representative(bin_key: str) -> float:
    if bin_key == ZERO:
        return 0.0
    if bin_key[0] == "n":
        return -2 * GAMMA ** int(bin_key[1:]) / (GAMMA + 1)
    return 2 * GAMMA ** int(bin_key) / (GAMMA + 1)


def of(values: Iterable[float]) -> Sketch:
    return Counter(key(v) for v in values)


def merge(into: Sketch, other: Mapping[str, int]) -> None:
    for bin_key, count in other.items():
        into[bin_key] += count


def quantile(sketch: Mapping[str, int], q: float) -> float | None:
    """The value of rank floor(q*(n-1)) (0-based) within alpha; None for an empty sketch.

    Same walk as `pk_sketch_quantile` in SQL: the first bin, in value order, whose running
    count exceeds q*(n-1).
    """
    total = sum(sketch.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    running = 0
    for value, count in sorted((representative(k), c) for k, c in sketch.items()):
        running += count
        if running > rank:
            return value
    return None  # unreachable: running reaches total > rank
