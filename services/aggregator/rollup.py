"""Pre-aggregation of a batch of events into KPI state deltas — pure functions.

A batch of thousands of events becomes a few hundred rows: one `Point` per
(kpi, dims, minute), distinct values per minute, funnel step times and retention
cohorts/comebacks per actor. `merge` is associative and commutative, and state is only
ever built from deduplicated events, so any split of the stream into batches, in any
order, gives the same state (property-tested in tests/aggregator/test_kpimath.py, which
cuts one stream into batches at random points).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from services.aggregator import sketch
from services.aggregator.catalog import Catalog, Role
from services.aggregator.fields import as_number, as_text
from services.aggregator.records import US_PER_MINUTE, Event
from shared.config.kpis import OTHER, KpiKind

DimsKey = tuple[str | None, ...]
PointKey = tuple[str, DimsKey, int]  # kpi, dims, epoch minute
DistinctRow = tuple[str, DimsKey, int, str]  # kpi, dims, epoch minute, value
ComebackRow = tuple[str, str, int]  # kpi, actor, 15-minute slot
# Comebacks are kept per 15 minutes: every time zone's midnight falls on such a boundary,
# so day-N membership is exact in any business time zone, at up to 96 rows per actor-day
# instead of one per return event.
SLOT_US = 15 * US_PER_MINUTE


@dataclass(slots=True)
class Point:
    """Mergeable per-minute state; which fields matter depends on the KPI kind."""

    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    last_ts: int | None = None
    last_value: float | None = None
    sketch: Counter[str] | None = None

    def add(self, kind: KpiKind, value: float, ts: int) -> None:
        self.count += 1
        if kind is KpiKind.sum or kind is KpiKind.avg:
            self.sum += value
        elif kind is KpiKind.min:
            if self.min is None or value < self.min:
                self.min = value
        elif kind is KpiKind.max:
            if self.max is None or value > self.max:
                self.max = value
        elif kind is KpiKind.last:
            # Ties at the same instant go to the larger value, so the answer never depends
            # on arrival order (SQL breaks ties the same way).
            if self.last_ts is None or (ts, value) > (self.last_ts, self.last_value or 0.0):
                self.last_ts, self.last_value = ts, value
        elif kind is KpiKind.percentile:
            if self.sketch is None:
                self.sketch = Counter()
            self.sketch[sketch.key(value)] += 1

    def merge(self, other: Point) -> None:
        self.count += other.count
        self.sum += other.sum
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if other.last_ts is not None and (
            self.last_ts is None
            or (other.last_ts, other.last_value or 0.0) > (self.last_ts, self.last_value or 0.0)
        ):
            self.last_ts, self.last_value = other.last_ts, other.last_value
        if other.sketch:
            if self.sketch is None:
                self.sketch = Counter()
            sketch.merge(self.sketch, other.sketch)

    def copy(self) -> Point:
        return Point(
            self.count,
            self.sum,
            self.min,
            self.max,
            self.last_ts,
            self.last_value,
            None if self.sketch is None else Counter(self.sketch),
        )


@dataclass(frozen=True, slots=True, order=True)
class Cohort:
    """An actor's first cohort event: time, then `source\\x1fid` to break ties."""

    ts: int
    key: str
    dims: DimsKey


@dataclass(slots=True)
class Rollup:
    points: dict[PointKey, Point] = field(default_factory=dict)
    distinct: set[DistinctRow] = field(default_factory=set)
    funnel: set[tuple[str, str, int, int, DimsKey]] = field(default_factory=set)
    cohorts: dict[tuple[str, str], Cohort] = field(default_factory=dict)
    comebacks: set[ComebackRow] = field(default_factory=set)
    # (kpi, dimension index, value) -> events carrying it: input to the cardinality guard.
    dim_values: Counter[tuple[str, int, str]] = field(default_factory=Counter)

    def kpis(self) -> set[str]:
        """Every KPI whose state this rollup changes."""
        out = {key[0] for key in self.points}
        out.update(row[0] for row in self.distinct)
        out.update(row[0] for row in self.funnel)
        out.update(key[0] for key in self.cohorts)
        out.update(row[0] for row in self.comebacks)
        return out

    def is_empty(self) -> bool:
        return not (self.points or self.distinct or self.funnel or self.cohorts or self.comebacks)

    def merge(self, other: Rollup) -> None:
        for key, point in other.points.items():
            mine = self.points.get(key)
            if mine is None:
                self.points[key] = point.copy()
            else:
                mine.merge(point)
        self.distinct |= other.distinct
        self.funnel |= other.funnel
        for actor_key, cohort in other.cohorts.items():
            mine_c = self.cohorts.get(actor_key)
            if mine_c is None or (cohort.ts, cohort.key) < (mine_c.ts, mine_c.key):
                self.cohorts[actor_key] = cohort
        self.comebacks |= other.comebacks
        self.dim_values.update(other.dim_values)


def rollup(events: Iterable[Event], catalog: Catalog) -> Rollup:
    """Every contribution of every event, pre-aggregated; events must already be deduplicated."""
    out = Rollup()
    points, dim_values = out.points, out.dim_values
    for event in events:
        contributions = catalog.by_event.get(event.type)
        if not contributions:
            continue
        minute = event.ts // US_PER_MINUTE
        for c in contributions:
            if c.where is not None and not c.where(event):
                continue
            getters = c.dim_getters
            dims: DimsKey = tuple([as_text(g(event)) for g in getters]) if getters else ()
            role = c.role
            if role is Role.point:
                if c.value is None:
                    value = 0.0
                else:
                    number = as_number(c.value(event))
                    if number is None:
                        continue  # no numeric value: the event says nothing about this KPI
                    value = number
                key = (c.kpi, dims, minute)
                point = points.get(key)
                if point is None:
                    point = points[key] = Point()
                point.add(c.kind, value, event.ts)
            else:
                actor = event.actor
                if role is Role.distinct:
                    distinct = actor if c.value is None else as_text(c.value(event))
                    if distinct is None:
                        continue
                    out.distinct.add((c.kpi, dims, minute, distinct))
                elif actor is None:
                    continue  # funnels and retention follow an actor
                elif role is Role.funnel_step:
                    out.funnel.add((c.kpi, actor, c.step, event.ts, dims))
                elif role is Role.cohort:
                    candidate = Cohort(event.ts, f"{event.source}\x1f{event.id}", dims)
                    current = out.cohorts.get((c.kpi, actor))
                    if current is None or (candidate.ts, candidate.key) < (current.ts, current.key):
                        out.cohorts[(c.kpi, actor)] = candidate
                else:
                    out.comebacks.add((c.kpi, actor, event.ts // SLOT_US))
            if dims:
                for index, dim_value in enumerate(dims):
                    if dim_value is not None:
                        dim_values[(c.kpi, index, dim_value)] += 1
    return out


Admitted = Callable[[str, int, str], bool]


def fold(state: Rollup, admitted: Admitted) -> tuple[Rollup, Counter[tuple[str, int]]]:
    """Replace dimension values the cardinality guard refused with `__other__`.

    Returns the folded rollup and, per (kpi, dimension index), how many events were folded.
    When every value is admitted (the usual case) the input comes back untouched.
    """
    refused = {key for key in state.dim_values if not admitted(*key)}
    folds: Counter[tuple[str, int]] = Counter()
    if not refused:
        return state, folds
    for kpi, index, value in refused:
        folds[(kpi, index)] += state.dim_values[(kpi, index, value)]

    def remap(kpi: str, dims: DimsKey) -> DimsKey:
        if not dims:
            return dims
        return tuple(
            OTHER if v is not None and (kpi, i, v) in refused else v for i, v in enumerate(dims)
        )

    out = Rollup()
    for (kpi, dims, minute), point in state.points.items():
        key = (kpi, remap(kpi, dims), minute)
        mine = out.points.get(key)
        if mine is None:
            out.points[key] = point.copy()
        else:
            mine.merge(point)
    out.distinct = {(k, remap(k, d), m, v) for k, d, m, v in state.distinct}
    out.funnel = {(k, a, s, t, remap(k, d)) for k, a, s, t, d in state.funnel}
    out.cohorts = {
        key: Cohort(c.ts, c.key, remap(key[0], c.dims)) for key, c in state.cohorts.items()
    }
    out.comebacks = set(state.comebacks)
    for (kpi, index, value), count in state.dim_values.items():
        out.dim_values[(kpi, index, OTHER if (kpi, index, value) in refused else value)] += count
    return out, folds
