"""Rule conditions as pure functions of KPI values.

A verdict is `True` (breaching), `False` (fine) or `None` (no judgement: no value, too few
samples), and `None` never moves an alert (see lifecycle).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

from shared.config.alerting import Op

_OPS: dict[Op, Callable[[float, float], bool]] = {
    Op.lt: operator.lt,
    Op.le: operator.le,
    Op.gt: operator.gt,
    Op.ge: operator.ge,
    Op.eq: operator.eq,
    Op.ne: operator.ne,
}


def compare(op: Op, left: float, right: float) -> bool:
    return _OPS[op](left, right)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def threshold(value: float | None, op: Op, limit: float) -> bool | None:
    if value is None or not _usable(value):
        return None
    return compare(op, value, limit)


def relative_change(current: float | None, previous: float | None) -> float | None:
    """(current - previous) / |previous|; None when there is no base to compare with."""
    if current is None or previous is None or not _usable(current) or not _usable(previous):
        return None
    if previous == 0:
        return None
    return (current - previous) / abs(previous)


def change(current: float | None, previous: float | None, op: Op, limit: float) -> bool | None:
    """`op: "<", value: -0.3` breaches when the KPI dropped by more than 30%."""
    delta = relative_change(current, previous)
    return None if delta is None else compare(op, delta, limit)


def absence(value: float | None) -> bool:
    """No data: a count or sum of 0, or no value at all, over the window."""
    return value is None or value == 0 or not math.isfinite(value)


def enough_sample(sample: float | None, required: float) -> bool:
    return sample is not None and math.isfinite(sample) and sample >= required
