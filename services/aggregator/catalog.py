"""KPI definitions compiled for the per-event path: who listens to which event type.

Pure: built from `dict[name, KpiSpec]`, used by `rollup` for every batch. One definition
becomes one or more `Contribution`s (a funnel has one per step, retention one for the
cohort event and one for the return event).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum

from services.aggregator.fields import Getter, Predicate, compile_where, getter
from shared.config.kpis import (
    DERIVED_KINDS,
    CountDistinctKpi,
    FunnelKpi,
    KpiKind,
    KpiSpec,
    RetentionKpi,
    referenced_kpis,
)

# Kinds whose state is one mergeable row per (kpi, dims, minute) in kpi_points.
POINT_KINDS = frozenset(
    {
        KpiKind.count,
        KpiKind.sum,
        KpiKind.avg,
        KpiKind.min,
        KpiKind.max,
        KpiKind.last,
        KpiKind.percentile,
    }
)


class Role(Enum):
    point = "point"
    distinct = "distinct"
    funnel_step = "funnel_step"
    cohort = "cohort"
    comeback = "comeback"


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one event of `event_type` adds to one KPI."""

    kpi: str
    role: Role
    kind: KpiKind
    where: Predicate | None
    dimensions: tuple[str, ...]
    dim_getters: tuple[Getter, ...]
    value: Getter | None = None  # the numeric field, or the distinct value
    step: int = 0  # funnel step index


@dataclass(frozen=True, slots=True)
class Catalog:
    specs: Mapping[str, KpiSpec]
    by_event: Mapping[str, tuple[Contribution, ...]]
    max_cardinality: Mapping[str, int]
    # KPI -> the derived KPIs (ratio/formula, transitively) whose value depends on it.
    dependents: Mapping[str, frozenset[str]] = field(default_factory=dict)
    funnel_within: Mapping[str, timedelta] = field(default_factory=dict)
    retention_day: Mapping[str, int] = field(default_factory=dict)
    # Storage key -> the KPI name its changes are announced as, None for a version still
    # recomputing (nobody reads it yet). Keys not in it are their KPI's name.
    announce_as: Mapping[str, str | None] = field(default_factory=dict)

    def announced(self, key: str) -> str | None:
        return self.announce_as.get(key, key)

    def contributions(self, event_type: str) -> tuple[Contribution, ...]:
        return self.by_event.get(event_type, ())

    def dimensions(self, kpi: str) -> tuple[str, ...]:
        spec = self.specs[kpi]
        return tuple(getattr(spec, "dimensions", ()))


def _dims(paths: list[str]) -> tuple[tuple[str, ...], tuple[Getter, ...]]:
    return tuple(paths), tuple(getter(p) for p in paths)


def compile_catalog(
    specs: Mapping[str, KpiSpec], announce_as: Mapping[str, str | None] | None = None
) -> Catalog:
    """`specs` by storage key: the KPI's name, or for a version of it with state of its own
    `name@N` (see shared.config.kpi_versions); `announce_as` maps such keys to names."""
    announce_as = dict(announce_as or {})
    by_event: dict[str, list[Contribution]] = defaultdict(list)
    limits: dict[str, int] = {}
    within: dict[str, timedelta] = {}
    days: dict[str, int] = {}
    for name in sorted(specs):
        spec = specs[name]
        if spec.kind in DERIVED_KINDS:
            continue
        limits[name] = spec.max_cardinality  # type: ignore[union-attr]  # every event kind has it
        if isinstance(spec, FunnelKpi):
            dims, getters = _dims(spec.dimensions)
            within[name] = spec.within
            for index, step in enumerate(spec.steps):
                by_event[step.event].append(
                    Contribution(
                        kpi=name,
                        role=Role.funnel_step,
                        kind=spec.kind,
                        where=compile_where(step.where),
                        # Only the first step's event says which segment the actor is in.
                        dimensions=dims if index == 0 else (),
                        dim_getters=getters if index == 0 else (),
                        step=index,
                    )
                )
        elif isinstance(spec, RetentionKpi):
            dims, getters = _dims(spec.dimensions)
            days[name] = spec.day
            by_event[spec.cohort_event].append(
                Contribution(
                    kpi=name,
                    role=Role.cohort,
                    kind=spec.kind,
                    where=compile_where(spec.cohort_where),
                    dimensions=dims,
                    dim_getters=getters,
                )
            )
            by_event[spec.return_event].append(
                Contribution(
                    kpi=name,
                    role=Role.comeback,
                    kind=spec.kind,
                    where=compile_where(spec.return_where),
                    dimensions=(),
                    dim_getters=(),
                )
            )
        elif isinstance(spec, CountDistinctKpi):
            dims, getters = _dims(spec.dimensions)
            by_event[spec.event].append(
                Contribution(
                    kpi=name,
                    role=Role.distinct,
                    kind=spec.kind,
                    where=compile_where(spec.where),
                    dimensions=dims,
                    dim_getters=getters,
                    value=None if spec.field is None else getter(spec.field),
                )
            )
        else:
            dims, getters = _dims(spec.dimensions)  # type: ignore[union-attr]
            field_path = getattr(spec, "field", None)
            by_event[spec.event].append(  # type: ignore[union-attr]
                Contribution(
                    kpi=name,
                    role=Role.point,
                    kind=spec.kind,
                    where=compile_where(spec.where),  # type: ignore[union-attr]
                    dimensions=dims,
                    dim_getters=getters,
                    value=None if field_path is None else getter(field_path),
                )
            )
    return Catalog(
        specs=dict(specs),
        by_event={k: tuple(v) for k, v in by_event.items()},
        max_cardinality=limits,
        dependents=_dependents(specs),
        funnel_within=within,
        retention_day=days,
        announce_as=announce_as,
    )


def _dependents(specs: Mapping[str, KpiSpec]) -> dict[str, frozenset[str]]:
    """KPI name -> the derived KPIs (by name) that read it."""
    direct: dict[str, set[str]] = defaultdict(set)
    for spec in specs.values():
        for ref in referenced_kpis(spec):
            direct[ref].add(spec.name)
    out: dict[str, frozenset[str]] = {}
    for name in {spec.name for spec in specs.values()}:
        seen: set[str] = set()
        todo = list(direct.get(name, ()))
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(direct.get(current, ()))
        if seen:
            out[name] = frozenset(seen)
    return out
