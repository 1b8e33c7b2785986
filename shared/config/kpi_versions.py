"""What a changed KPI definition means for its history: the diff between two stored
definitions, and whether the new one needs its history recomputed from `events`.

Pure functions of the stored JSON (`shared.config.store.spec_json`), used by `apply` to
write the version row, and by `pacekeeper kpis history`, the API and the report to show it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from shared.config.kpis import DERIVED_KINDS, KpiKind

# Fields that only change how a KPI is shown or read, never the state its events leave:
# a new version with only these changed reads the state of the version before it.
# (`q`: a percentile's sketch holds every quantile.)
PRESENTATION_FIELDS = frozenset({"description", "unit", "q"})


class VersionState(StrEnum):
    recomputing = "recomputing"
    active = "active"
    retired = "retired"
    superseded = "superseded"


@dataclass(frozen=True, slots=True)
class Change:
    """One field of the definition: its dotted path, the value before and after (None
    where absent)."""

    path: str
    before: Any
    after: Any

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "before": self.before, "after": self.after}

    def describe(self) -> str:
        if self.before is None:
            return f"+{self.path}: {_show(self.after)}"
        if self.after is None:
            return f"-{self.path}: {_show(self.before)}"
        return f"{self.path}: {_show(self.before)} → {_show(self.after)}"


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Change]:
    """The changed fields, by dotted path, in path order. Objects are compared key by key
    (a `where` with one more condition shows as that condition); lists and scalars whole."""
    out: list[Change] = []
    _walk("", before or {}, after, out)
    return sorted(out, key=lambda c: c.path)


def _walk(
    prefix: str, before: Mapping[str, Any], after: Mapping[str, Any], out: list[Change]
) -> None:
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            _walk(f"{path}.", old, new, out)
        else:
            out.append(Change(path, old, new))


def has_state(spec: Mapping[str, Any]) -> bool:
    """Whether the aggregator keeps state for this definition (ratios and formulas are
    computed at query time from other KPIs)."""
    return KpiKind(spec["kind"]) not in DERIVED_KINDS


def needs_recompute(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> bool:
    """Whether history must be recomputed for `after` to be read: it keeps state, and what
    shapes that state (kind, event, filter, field, dimensions, …) differs from `before`."""
    if not has_state(after):
        return False
    if before is None or not has_state(before):
        return True
    return any(c.path.split(".", 1)[0] not in PRESENTATION_FIELDS for c in diff(before, after))


def storage_key(kpi: str, version: int) -> str:
    """Where a version's state is kept: the KPI's name for version 1 (as before versions
    existed), `name@N` otherwise. `@` cannot occur in a KPI name."""
    return kpi if version == 1 else f"{kpi}@{version}"
