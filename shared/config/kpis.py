"""KPI definitions as declared in `pacekeeper.yaml` (modelled on dbt MetricFlow kinds).

One pydantic model per kind, discriminated by `kind`, so a definition can only carry the
fields its kind understands. These models are the single description of a KPI; the
aggregator turns them into per-minute state and the SQL functions read them back.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from shared.config.names import KpiName
from shared.durations import Duration
from shared.text import RefusesNul

# Envelope fields a definition may name; properties are addressed as `properties.<key>` or
# `properties.<key>.<inner>` (events are at most one level deep).
ENVELOPE_FIELDS = ("source", "type", "user_id", "anonymous_id", "id")
_FIELD_RE = re.compile(r"^(source|type|user_id|anonymous_id|id|properties\.[^.\s]+(\.[^.\s]+)?)$")

DEFAULT_MAX_CARDINALITY = 100
OTHER = "__other__"


class KpiKind(StrEnum):
    count = "count"  # type: ignore[assignment]  # the YAML word; shadows str.count, unused here
    sum = "sum"
    avg = "avg"
    min = "min"
    max = "max"
    last = "last"
    count_distinct = "count_distinct"
    percentile = "percentile"
    ratio = "ratio"
    formula = "formula"
    funnel = "funnel"
    retention = "retention"


def check_field_path(value: str) -> str:
    if not _FIELD_RE.match(value):
        raise ValueError(
            f"{value!r} is not an event field: use one of {', '.join(ENVELOPE_FIELDS)} "
            "or properties.<key>"
        )
    return value


FieldPath = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Scalar = str | int | float | bool


# Free text in a definition: a paragraph, not a document (a 20 MiB description was stored).
MAX_TEXT = 2000


class Comparison(BaseModel):
    """A condition on one field; several keys in one object must all hold."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    eq: Scalar | None = None
    ne: Scalar | None = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Scalar] | None = Field(None, alias="in")
    not_in: list[Scalar] | None = None
    exists: bool | None = None


Condition = Scalar | Comparison


class _KpiBase(RefusesNul):
    # NaN or infinity stored in a definition could never be read back into it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: KpiName
    description: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = ""
    unit: Annotated[str, StringConstraints(max_length=32)] = ""


class _EventKpi(_KpiBase):
    """A KPI computed from events of one type."""

    event: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    where: dict[FieldPath, Condition] = Field(default_factory=dict)
    dimensions: list[FieldPath] = Field(default_factory=list, max_length=5)
    max_cardinality: int = Field(DEFAULT_MAX_CARDINALITY, ge=1, le=10_000)

    @field_validator("where")
    @classmethod
    def _where_fields(cls, value: dict[str, Condition]) -> dict[str, Condition]:
        for key in value:
            check_field_path(key)
        return value

    @field_validator("dimensions")
    @classmethod
    def _dimension_fields(cls, value: list[str]) -> list[str]:
        for key in value:
            check_field_path(key)
        if len(set(value)) != len(value):
            raise ValueError("dimensions must not repeat")
        return value


class CountKpi(_EventKpi):
    kind: Literal[KpiKind.count]


class _FieldKpi(_EventKpi):
    field: FieldPath

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str) -> str:
        return check_field_path(value)


class SumKpi(_FieldKpi):
    kind: Literal[KpiKind.sum]


class AvgKpi(_FieldKpi):
    kind: Literal[KpiKind.avg]


class MinKpi(_FieldKpi):
    kind: Literal[KpiKind.min]


class MaxKpi(_FieldKpi):
    kind: Literal[KpiKind.max]


class LastKpi(_FieldKpi):
    """A gauge such as followers: the value of the latest event in the window."""

    kind: Literal[KpiKind.last]


class PercentileKpi(_FieldKpi):
    kind: Literal[KpiKind.percentile]
    q: float = Field(gt=0, lt=1)


class CountDistinctKpi(_EventKpi):
    """Exact distinct count (DAU/WAU/MAU); `field` defaults to user_id, else anonymous_id."""

    kind: Literal[KpiKind.count_distinct]
    field: FieldPath | None = None

    @field_validator("field")
    @classmethod
    def _field_path(cls, value: str | None) -> str | None:
        return None if value is None else check_field_path(value)


class RatioKpi(_KpiBase):
    """numerator ÷ denominator over the same window, as a ratio of sums."""

    kind: Literal[KpiKind.ratio]
    numerator: KpiName
    denominator: KpiName


_FORMULA_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.USub,
    ast.UAdd,
    ast.Name,
    ast.Load,
    ast.Constant,
)


def formula_names(expression: str) -> list[str]:
    """KPI names an arithmetic expression refers to; ValueError on anything but + - * / ( )."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from exc
    found: list[ast.Name] = []
    for node in ast.walk(tree):
        if not isinstance(node, _FORMULA_NODES):
            raise ValueError("only KPI names, numbers, + - * / and parentheses are allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float):
            raise ValueError("constants must be numbers")
        if isinstance(node, ast.Name):
            found.append(node)
    names: list[str] = []
    for node in sorted(found, key=lambda n: n.col_offset):  # in reading order
        if node.id not in names:
            names.append(node.id)
    return names


class FormulaKpi(_KpiBase):
    """Arithmetic over other KPIs in one window: NPS = 100 * (promoters - detractors) / answers."""

    kind: Literal[KpiKind.formula]
    expression: Annotated[str, StringConstraints(min_length=1, max_length=1000)]

    @field_validator("expression")
    @classmethod
    def _parse(cls, value: str) -> str:
        formula_names(value)
        return value

    @property
    def inputs(self) -> list[str]:
        return formula_names(self.expression)


def _check_where(value: dict[str, Condition]) -> dict[str, Condition]:
    for key in value:
        check_field_path(key)
    return value


def _check_dimensions(value: list[str]) -> list[str]:
    for key in value:
        check_field_path(key)
    if len(set(value)) != len(value):
        raise ValueError("dimensions must not repeat")
    return value


class FunnelStep(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    where: dict[FieldPath, Condition] = Field(default_factory=dict)

    _where_fields = field_validator("where")(_check_where)


class FunnelKpi(_KpiBase):
    """Share of actors who did step 1 in the window and then every later step within `within`."""

    kind: Literal[KpiKind.funnel]
    steps: list[FunnelStep] = Field(min_length=2, max_length=10)
    within: Duration
    dimensions: list[FieldPath] = Field(default_factory=list, max_length=5)
    max_cardinality: int = Field(DEFAULT_MAX_CARDINALITY, ge=1, le=10_000)

    _dimension_fields = field_validator("dimensions")(_check_dimensions)


class RetentionKpi(_KpiBase):
    """Day-N retention: of the actors whose cohort event fell in the window, the share that
    came back (return event) on day N after it, in business-time-zone days."""

    kind: Literal[KpiKind.retention]
    cohort_event: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    cohort_where: dict[FieldPath, Condition] = Field(default_factory=dict)
    return_event: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    return_where: dict[FieldPath, Condition] = Field(default_factory=dict)
    day: int = Field(ge=1, le=365)
    dimensions: list[FieldPath] = Field(default_factory=list, max_length=5)
    max_cardinality: int = Field(DEFAULT_MAX_CARDINALITY, ge=1, le=10_000)

    _where_fields = field_validator("cohort_where", "return_where")(_check_where)
    _dimension_fields = field_validator("dimensions")(_check_dimensions)


KpiSpec = Annotated[
    CountKpi
    | SumKpi
    | AvgKpi
    | MinKpi
    | MaxKpi
    | LastKpi
    | PercentileKpi
    | CountDistinctKpi
    | RatioKpi
    | FormulaKpi
    | FunnelKpi
    | RetentionKpi,
    Field(discriminator="kind"),
]

DERIVED_KINDS = {KpiKind.ratio, KpiKind.formula}


def referenced_kpis(spec: KpiSpec) -> list[str]:
    """Other KPIs a derived KPI is computed from."""
    if isinstance(spec, RatioKpi):
        return [spec.numerator, spec.denominator]
    if isinstance(spec, FormulaKpi):
        return spec.inputs
    return []


def base_kpis(name: str, kpis: Mapping[str, KpiSpec]) -> frozenset[str]:
    """The event-based KPIs a KPI is computed from (itself, unless ratio or formula)."""
    out: set[str] = set()
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        spec = kpis.get(current)
        refs = referenced_kpis(spec) if spec is not None else []
        if refs:
            stack.extend(refs)
        else:
            out.add(current)
    return frozenset(out)


def undeclared_dimensions(
    kpi: str, fields: Iterable[str], kpis: Mapping[str, KpiSpec]
) -> list[str]:
    wanted = list(dict.fromkeys(fields))
    missing: list[str] = []
    for base in sorted(base_kpis(kpi, kpis)):
        declared = set(getattr(kpis.get(base), "dimensions", None) or [])
        missing += [f for f in wanted if f not in declared and f not in missing]
    return missing
