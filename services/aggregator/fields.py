"""Reading event fields the way KPI definitions name them, and evaluating `where` filters.

Pure functions over an `Event`; compiled once per definition so the per-event path is a
few dict look-ups. The semantics are SQL-like: a missing (or null) field fails every
comparison except `exists: false`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from services.aggregator.records import Event
from shared.config.kpis import Comparison, Condition, Scalar

MISSING: Final = object()
Getter = Callable[[Event], Any]
Predicate = Callable[[Event], bool]

# Numbers sent as strings ("59.90") count as numbers; Python's float() alone would also take
# "1_000", "nan" and " 12 ", which no product means as a number.
_NUMERIC = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def getter(path: str) -> Getter:
    """`source`, `user_id`, … or `properties.a` / `properties.a.b` -> a function of an event."""
    if path == "source":
        return lambda e: e.source
    if path == "type":
        return lambda e: e.type
    if path == "id":
        return lambda e: e.id
    if path == "user_id":
        return lambda e: MISSING if e.user_id is None else e.user_id
    if path == "anonymous_id":
        return lambda e: MISSING if e.anonymous_id is None else e.anonymous_id
    parts = path.split(".")
    if len(parts) == 2:
        key = parts[1]

        def top(e: Event) -> Any:
            value = e.properties.get(key, MISSING)
            return MISSING if value is None else value

        return top
    outer, inner = parts[1], parts[2]

    def nested(e: Event) -> Any:
        container = e.properties.get(outer)
        if not isinstance(container, dict):
            return MISSING
        value = container.get(inner, MISSING)
        return MISSING if value is None else value

    return nested


def as_number(value: Any) -> float | None:
    """JSON numbers and numeric strings; booleans are not numbers."""
    kind = type(value)
    if kind is int or kind is float:
        return float(value)
    if kind is str and _NUMERIC.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def as_text(value: Any) -> str | None:
    """The text form used for dimension values and distinct counting (None when missing)."""
    if value is MISSING or value is None:
        return None
    if type(value) is str:
        return value
    return orjson.dumps(value).decode()


def _equals(value: Any, expected: Any) -> bool:
    if value is MISSING:
        return False
    if isinstance(expected, bool):
        return value is expected
    if isinstance(expected, int | float):
        number = as_number(value)
        return number is not None and number == float(expected)
    return type(value) is str and value == expected


def _comparison(get: Getter, cond: Comparison) -> Predicate:
    checks: list[Callable[[Any], bool]] = []
    if cond.eq is not None:
        eq = cond.eq
        checks.append(lambda v: _equals(v, eq))
    if cond.ne is not None:
        ne = cond.ne
        checks.append(lambda v: v is not MISSING and not _equals(v, ne))
    for bound, op in (
        (cond.gt, float.__gt__),
        (cond.gte, float.__ge__),
        (cond.lt, float.__lt__),
        (cond.lte, float.__le__),
    ):
        if bound is not None:
            checks.append(_numeric_check(op, float(bound)))
    if cond.in_ is not None:
        options = list(cond.in_)
        checks.append(lambda v: any(_equals(v, o) for o in options))
    if cond.not_in is not None:
        excluded = list(cond.not_in)
        checks.append(lambda v: v is not MISSING and not any(_equals(v, o) for o in excluded))
    if cond.exists is not None:
        wanted = cond.exists
        checks.append(lambda v: (v is not MISSING) is wanted)

    def predicate(e: Event) -> bool:
        value = get(e)
        return all(check(value) for check in checks)

    return predicate


def _numeric_check(op: Callable[[float, float], bool], bound: float) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        number = as_number(value)
        return number is not None and op(number, bound)

    return check


def _equality(get: Getter, expected: Scalar) -> Predicate:
    return lambda e: _equals(get(e), expected)


def compile_where(where: Mapping[str, Condition]) -> Predicate | None:
    """All conditions must hold; None when there is nothing to check (the common case)."""
    if not where:
        return None
    predicates: list[Predicate] = []
    for path, cond in where.items():
        get = getter(path)
        if isinstance(cond, Comparison):
            predicates.append(_comparison(get, cond))
        else:
            predicates.append(_equality(get, cond))
    if len(predicates) == 1:
        return predicates[0]
    return lambda e: all(p(e) for p in predicates)
