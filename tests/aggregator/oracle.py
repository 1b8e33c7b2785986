"""A naive oracle for KPI values: plain Python over the raw event list, nothing pre-aggregated.

Deliberately independent of services/aggregator (no rollup, no sketch, no shared field
code): it re-reads every event for every question. Shared by the pure property tests and
the tests of the SQL functions, so both are held to the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter

from shared.config.kpis import KpiSpec

SPEC = TypeAdapter(KpiSpec)


@dataclass(frozen=True)
class Raw:
    """One event as a product sent it (after ingest): what the oracle reads."""

    source: str
    id: str
    type: str
    time: datetime
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]

    @property
    def actor(self) -> str | None:
        return self.user_id or self.anonymous_id


# Covers every kind, filters, dimensions, derived KPIs and multi-step funnels.
DEFINITIONS: list[dict[str, Any]] = [
    {
        "name": "orders",
        "kind": "count",
        "event": "order",
        "dimensions": ["source", "properties.channel"],
    },
    {
        "name": "seo_orders",
        "kind": "count",
        "event": "order",
        "where": {"properties.channel": "seo"},
    },
    {
        "name": "revenue",
        "kind": "sum",
        "event": "order",
        "field": "properties.revenue",
        "dimensions": ["source"],
    },
    {"name": "aov", "kind": "avg", "event": "order", "field": "properties.revenue"},
    {"name": "min_rev", "kind": "min", "event": "order", "field": "properties.revenue"},
    {
        "name": "max_rev",
        "kind": "max",
        "event": "order",
        "field": "properties.revenue",
        "dimensions": ["source"],
    },
    {"name": "last_rev", "kind": "last", "event": "order", "field": "properties.revenue"},
    {
        "name": "p50_rev",
        "kind": "percentile",
        "event": "order",
        "field": "properties.revenue",
        "q": 0.5,
    },
    {
        "name": "p90_rev",
        "kind": "percentile",
        "event": "order",
        "field": "properties.revenue",
        "q": 0.9,
        "dimensions": ["source"],
    },
    {"name": "visitors", "kind": "count_distinct", "event": "view", "dimensions": ["source"]},
    {"name": "buyers", "kind": "count_distinct", "event": "order", "field": "user_id"},
    {"name": "conversion", "kind": "ratio", "numerator": "orders", "denominator": "visitors"},
    {
        "name": "happy",
        "kind": "count",
        "event": "survey",
        "where": {"properties.score": {"gte": 4}},
    },
    {
        "name": "unhappy",
        "kind": "count",
        "event": "survey",
        "where": {"properties.score": {"lte": 2}},
    },
    {"name": "answers", "kind": "count", "event": "survey"},
    {"name": "nps", "kind": "formula", "expression": "100 * (happy - unhappy) / answers"},
    {
        "name": "view_to_order",
        "kind": "funnel",
        "steps": [{"event": "view"}, {"event": "order"}],
        "within": "1h",
        "dimensions": ["source"],
    },
    {
        "name": "signup_funnel",
        "kind": "funnel",
        "steps": [
            {"event": "signup"},
            {"event": "view"},
            {"event": "order", "where": {"properties.channel": "seo"}},
        ],
        "within": "1d",
    },
    {
        "name": "d1",
        "kind": "retention",
        "cohort_event": "signup",
        "return_event": "view",
        "day": 1,
        "dimensions": ["source"],
    },
]
SPECS: dict[str, KpiSpec] = {d["name"]: SPEC.validate_python(d) for d in DEFINITIONS}
# Which dims each KPI may be filtered by in the tests.
DIM_CHOICES: dict[str, list[dict[str, str] | None]] = {
    "orders": [
        None,
        {"source": "web"},
        {"properties.channel": "seo"},
        {"source": "app", "properties.channel": "ads"},
    ],
    "revenue": [None, {"source": "web"}],
    "max_rev": [None, {"source": "app"}],
    "p90_rev": [None, {"source": "web"}],
    "visitors": [None, {"source": "web"}],
    "conversion": [None, {"source": "web"}],
    "view_to_order": [None, {"source": "app"}],
    "d1": [None, {"source": "web"}],
}


def dedupe(events: Iterable[Raw]) -> list[Raw]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in events:
        if (e.source, e.id) not in seen:
            seen.add((e.source, e.id))
            out.append(e)
    return out


def _lookup(e: Raw, path: str) -> Any:
    if path in ("source", "type", "id", "user_id", "anonymous_id"):
        return getattr(e, path)
    value: Any = e.properties
    for part in path.split(".")[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v) if isinstance(v, str) else None
    except ValueError:
        return None


def _where_ok(e: Raw, where: Mapping[str, Any]) -> bool:
    for path, cond in where.items():
        v = _lookup(e, path)
        if hasattr(cond, "model_dump"):
            c = cond.model_dump(exclude_none=True)
            n = _number(v)
            if "gte" in c and (n is None or not n >= c["gte"]):
                return False
            if "lte" in c and (n is None or not n <= c["lte"]):
                return False
        elif v != cond:
            return False
    return True


def _minute_in(t: datetime, lo: datetime, hi: datetime) -> bool:
    start = t.replace(second=0, microsecond=0)
    return lo <= start < hi


def _dims_ok(e: Raw, dims: Mapping[str, Any] | None) -> bool:
    return all(_lookup(e, k) == v for k, v in (dims or {}).items())


def value(
    name: str,
    events: Sequence[Raw],
    lo: datetime,
    hi: datetime,
    dims: Mapping[str, Any] | None,
    zone: ZoneInfo,
) -> float | None:
    spec = SPECS[name]
    kind = spec.kind.value
    if kind == "ratio":
        num = value(spec.numerator, events, lo, hi, dims, zone)  # type: ignore[union-attr]
        den = value(spec.denominator, events, lo, hi, dims, zone)  # type: ignore[union-attr]
        return None if num is None or not den else num / den
    if kind == "formula":
        vals = {n: value(n, events, lo, hi, dims, zone) for n in ("happy", "unhappy", "answers")}
        if any(v is None for v in vals.values()) or vals["answers"] == 0:
            return None
        return 100 * (vals["happy"] - vals["unhappy"]) / vals["answers"]  # type: ignore[operator]
    if kind == "funnel":
        return _funnel(spec, events, lo, hi, dims)
    if kind == "retention":
        return _retention(spec, events, lo, hi, dims, zone)
    chosen = [
        e
        for e in events
        if e.type == spec.event  # type: ignore[union-attr]
        and _where_ok(e, spec.where)  # type: ignore[union-attr]
        and _minute_in(e.time, lo, hi)
        and _dims_ok(e, dims)
    ]
    if kind == "count":
        return float(len(chosen))
    if kind == "count_distinct":
        field = spec.field  # type: ignore[union-attr]
        vals = {e.actor if field is None else _lookup(e, field) for e in chosen}
        vals.discard(None)
        return float(len(vals))
    pairs = [(e.time, _number(_lookup(e, spec.field))) for e in chosen]  # type: ignore[union-attr]
    nums = [(t, n) for t, n in pairs if n is not None]
    if kind == "sum":
        return float(sum(n for _, n in nums))
    if not nums:
        return None
    if kind == "avg":
        return sum(n for _, n in nums) / len(nums)
    if kind == "min":
        return min(n for _, n in nums)
    if kind == "max":
        return max(n for _, n in nums)
    if kind == "last":
        return max(nums)[1]
    ordered = sorted(n for _, n in nums)
    return ordered[math.floor(spec.q * (len(ordered) - 1))]  # type: ignore[union-attr]


def _funnel(
    spec: Any, events: Sequence[Raw], lo: datetime, hi: datetime, dims: Any
) -> float | None:
    steps = spec.steps
    by_actor: dict[str, list[Raw]] = {}
    for e in events:
        if e.actor:
            by_actor.setdefault(e.actor, []).append(e)

    def completes(actor: str, step: int, after: datetime, deadline: datetime) -> bool:
        if step == len(steps):
            return True
        return any(
            completes(actor, step + 1, e.time, deadline)
            for e in by_actor[actor]
            if e.type == steps[step].event
            and _where_ok(e, steps[step].where)
            and after < e.time <= deadline
        )

    entered, converted = set(), set()
    for e in events:
        if e.actor and e.type == steps[0].event and _where_ok(e, steps[0].where):
            if _minute_in(e.time, lo, hi) and _dims_ok(e, dims):
                entered.add(e.actor)
                if e.actor not in converted and completes(e.actor, 1, e.time, e.time + spec.within):
                    converted.add(e.actor)
    return len(converted) / len(entered) if entered else None


def _retention(
    spec: Any, events: Sequence[Raw], lo: datetime, hi: datetime, dims: Any, zone: ZoneInfo
) -> float | None:
    first: dict[str, Raw] = {}
    for e in events:
        if e.actor and e.type == spec.cohort_event:
            current = first.get(e.actor)
            if current is None or (e.time, f"{e.source}\x1f{e.id}") < (
                current.time,
                f"{current.source}\x1f{current.id}",
            ):
                first[e.actor] = e
    returns = [r for r in events if r.type == spec.return_event]
    cohort = returned = 0
    for actor, e in first.items():
        if not (_minute_in(e.time, lo, hi) and _dims_ok(e, dims)):
            continue
        cohort += 1
        target = e.time.astimezone(zone).date() + timedelta(days=spec.day)
        if any(
            r.actor == actor
            and r.type == spec.return_event
            and r.time.astimezone(zone).date() == target
            for r in returns
        ):
            returned += 1
    return returned / cohort if cohort else None


def close(actual: float | None, expected: float | None, *, percentile: bool = False) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if percentile:
        return abs(actual - expected) <= 0.01 * abs(expected) + 1e-9
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def is_percentile(name: str) -> bool:
    return SPECS[name].kind.value == "percentile"


def assert_matches(
    name: str,
    dims: dict[str, str] | None,
    lo: datetime,
    hi: datetime,
    actual: float | None,
    expected: float | None,
) -> None:
    """The value under test equals the oracle's for this question (percentiles within the
    sketch's 1 %); a failure names the question and both answers."""
    assert close(actual, expected, percentile=is_percentile(name)), (
        name,
        dims,
        lo,
        hi,
        actual,
        expected,
    )


BASE = datetime(2026, 11, 27, 0, 0, tzinfo=UTC)
