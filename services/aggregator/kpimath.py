"""KPI values from aggregated state, in Python — the mirror of `kpi_value`/`kpi_series`.

The SQL functions `kpi_value` and `kpi_series` (their current text, with every helper, is
`shared/migrations/functions.sql`) are the definition that Grafana, the alerts service and
the API use. This module states the same math over a `Rollup` so the property tests
can check, without a database, that per-minute state is enough to answer every window
exactly (tests/aggregator/test_kpimath.py), and so the SQL can be checked against the
same oracle.

Window rule, shared by every kind: an event belongs to `[t_from, t_to)` when the minute
it falls in starts inside the window.
"""

from __future__ import annotations

import ast
import calendar
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.aggregator import sketch
from services.aggregator.fields import as_text
from services.aggregator.records import US_PER_MINUTE, from_us, to_us
from services.aggregator.rollup import SLOT_US, DimsKey, Point, Rollup
from shared.config.kpis import (
    CountDistinctKpi,
    FormulaKpi,
    FunnelKpi,
    KpiKind,
    KpiSpec,
    PercentileKpi,
    RatioKpi,
    RetentionKpi,
)

MAX_DEPTH = 16
MAX_POINTS = 100_000


class KpiError(ValueError):
    """A question that has no answer: unknown KPI or dimension, a cycle, a bad step."""


@dataclass(frozen=True, slots=True)
class Step:
    """A PostgreSQL interval: months, days and microseconds are separate quantities."""

    months: int = 0
    days: int = 0
    micros: int = 0

    def sql(self) -> str:
        return f"{self.months} mons {self.days} days {self.micros} microseconds"

    def times(self, k: int) -> Step:
        return Step(self.months * k, self.days * k, self.micros * k)


def add_interval(local: datetime, step: Step) -> datetime:
    """`timestamp + interval` as PostgreSQL does it: months (clipped), then days, then time."""
    if step.months:
        month_index = local.year * 12 + (local.month - 1) + step.months
        year, month = divmod(month_index, 12)
        day = min(local.day, calendar.monthrange(year, month + 1)[1])
        local = local.replace(year=year, month=month + 1, day=day)
    return local + timedelta(days=step.days, microseconds=step.micros)


def _truncate(local: datetime, unit: str) -> datetime:
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "day":
        return midnight
    if unit == "week":
        return midnight - timedelta(days=midnight.weekday())
    if unit == "month":
        return midnight.replace(day=1)
    if unit == "quarter":
        return midnight.replace(day=1, month=(midnight.month - 1) // 3 * 3 + 1)
    return midnight.replace(day=1, month=1)  # year


def grid(
    t_from: datetime, t_to: datetime, step: Step, zone: ZoneInfo
) -> list[tuple[datetime, datetime, datetime]]:
    """The buckets of a series: (label, lo, hi) with [lo, hi) clipped to the window.

    Steps with months align to calendar months (quarters, years), steps of whole weeks to
    Mondays, steps with days to midnights — all in the business time zone; shorter steps
    are bins counted from a local midnight (so a 1 h step gives local hours).
    """
    if step.months < 0 or step.days < 0 or step.micros < 0 or step == Step():
        raise KpiError("step must be a positive interval")
    out: list[tuple[datetime, datetime, datetime]] = []
    if t_from >= t_to:
        return out
    if step.months or step.days:
        if step.months:
            unit = (
                "year" if step.months % 12 == 0 else "quarter" if step.months % 3 == 0 else "month"
            )
        else:
            unit = "week" if step.days % 7 == 0 and step.micros == 0 else "day"
        start = _truncate(t_from.astimezone(zone).replace(tzinfo=None), unit)
        k = 0
        label = start.replace(tzinfo=zone)
        while label < t_to:
            nxt = add_interval(start, step.times(k + 1)).replace(tzinfo=zone)
            out.append((label, max(label, t_from), min(nxt, t_to)))
            k += 1
            label = nxt
            if k > MAX_POINTS:
                raise KpiError(f"more than {MAX_POINTS} points; use a longer step")
    else:
        origin = datetime(2000, 1, 3, tzinfo=zone)
        width = timedelta(microseconds=step.micros)
        label = origin + ((t_from - origin) // width) * width
        while label < t_to:
            nxt = label + width
            out.append((label, max(label, t_from), min(nxt, t_to)))
            label = nxt
            if len(out) > MAX_POINTS:
                raise KpiError(f"more than {MAX_POINTS} points; use a longer step")
    return out


def _filter(spec: KpiSpec, dims: Mapping[str, object] | None) -> dict[int, str | None]:
    """Dimension filter -> {position in the KPI's dims: wanted text}."""
    if not dims:
        return {}
    declared = list(getattr(spec, "dimensions", ()))
    out: dict[int, str | None] = {}
    for name, wanted in dims.items():
        if name not in declared:
            raise KpiError(f"KPI {spec.name} has no dimension {name}")
        out[declared.index(name)] = as_text(wanted)
    return out


def _matches(row: DimsKey, wanted: Mapping[int, str | None]) -> bool:
    return all(row[i] == v for i, v in wanted.items())


def _in_window(ts: int, lo: int, hi: int) -> bool:
    minute_start = ts - ts % US_PER_MINUTE
    return lo <= minute_start < hi


class Evaluator:
    """KPI values over a fixed state; `specs` holds every definition (derived ones too)."""

    def __init__(self, specs: Mapping[str, KpiSpec], state: Rollup, zone: ZoneInfo) -> None:
        self.specs = specs
        self.state = state
        self.zone = zone
        self._points: dict[str, list[tuple[int, DimsKey, Point]]] = defaultdict(list)
        for (kpi, dims, minute), point in state.points.items():
            self._points[kpi].append((minute * US_PER_MINUTE, dims, point))
        self._steps: dict[tuple[str, str, int], list[int]] = defaultdict(list)
        for kpi, actor, step, ts, _dims in state.funnel:
            self._steps[(kpi, actor, step)].append(ts)
        for times in self._steps.values():
            times.sort()
        self._comebacks: dict[tuple[str, str], set[int]] = defaultdict(set)
        for kpi, actor, slot in state.comebacks:
            self._comebacks[(kpi, actor)].add(slot)

    def spec(self, name: str) -> KpiSpec:
        try:
            return self.specs[name]
        except KeyError:
            raise KpiError(f"unknown KPI {name}") from None

    def value(
        self,
        name: str,
        t_from: datetime,
        t_to: datetime,
        dims: Mapping[str, object] | None = None,
        _depth: int = 0,
    ) -> float | None:
        if _depth > MAX_DEPTH:
            raise KpiError(f"KPI {name} nests more than {MAX_DEPTH} deep (a cycle?)")
        spec = self.spec(name)
        if isinstance(spec, RatioKpi):
            num = self.value(spec.numerator, t_from, t_to, dims, _depth + 1)
            den = self.value(spec.denominator, t_from, t_to, dims, _depth + 1)
            return None if num is None or den is None or den == 0 else num / den
        if isinstance(spec, FormulaKpi):
            return self._formula(spec, t_from, t_to, dims, _depth)
        lo, hi = to_us(t_from), to_us(t_to)
        wanted = _filter(spec, dims)
        if isinstance(spec, CountDistinctKpi):
            return float(
                len(
                    {
                        v
                        for k, d, m, v in self.state.distinct
                        if k == name and lo <= m * US_PER_MINUTE < hi and _matches(d, wanted)
                    }
                )
            )
        if isinstance(spec, FunnelKpi):
            return self._funnel(spec, lo, hi, wanted)
        if isinstance(spec, RetentionKpi):
            return self._retention(spec, lo, hi, wanted)
        merged = Point()
        for start, dims_row, point in self._points.get(name, ()):
            if lo <= start < hi and _matches(dims_row, wanted):
                merged.merge(point)
        return _point_value(spec, merged)

    def series(
        self,
        name: str,
        t_from: datetime,
        t_to: datetime,
        step: Step,
        dims: Mapping[str, object] | None = None,
    ) -> list[tuple[datetime, float | None]]:
        return [
            (label, self.value(name, lo, hi, dims))
            for label, lo, hi in grid(t_from, t_to, step, self.zone)
        ]

    def _formula(
        self,
        spec: FormulaKpi,
        t_from: datetime,
        t_to: datetime,
        dims: Mapping[str, object] | None,
        depth: int,
    ) -> float | None:
        values = {n: self.value(n, t_from, t_to, dims, depth + 1) for n in spec.inputs}
        return evaluate_formula(spec.expression, values)

    def _funnel(
        self, spec: FunnelKpi, lo: int, hi: int, wanted: Mapping[int, str | None]
    ) -> float | None:
        within = spec.within // timedelta(microseconds=1)
        entered: set[str] = set()
        converted: set[str] = set()
        for kpi, actor, step, ts, dims in self.state.funnel:
            if kpi != spec.name or step != 0 or not _in_window(ts, lo, hi):
                continue
            if not _matches(dims, wanted):
                continue
            entered.add(actor)
            if actor in converted:
                continue
            deadline, current, ok = ts + within, ts, True
            for later in range(1, len(spec.steps)):
                nxt = next(
                    (t for t in self._steps.get((kpi, actor, later), ()) if t > current), None
                )
                if nxt is None or nxt > deadline:
                    ok = False
                    break
                current = nxt
            if ok:
                converted.add(actor)
        return len(converted) / len(entered) if entered else None

    def _retention(
        self, spec: RetentionKpi, lo: int, hi: int, wanted: Mapping[int, str | None]
    ) -> float | None:
        cohort = returned = 0
        for (kpi, actor), first in self.state.cohorts.items():
            if kpi != spec.name or not _in_window(first.ts, lo, hi):
                continue
            if not _matches(first.dims, wanted):
                continue
            cohort += 1
            start, end = day_bounds(first.ts, spec.day, self.zone)
            if any(start <= s * SLOT_US < end for s in self._comebacks.get((kpi, actor), ())):
                returned += 1
        return returned / cohort if cohort else None


def day_bounds(ts: int, day: int, zone: ZoneInfo) -> tuple[int, int]:
    """[start, end) in epoch µs of the business day `day` days after the one `ts` is in."""
    local: date = from_us(ts).astimezone(zone).date() + timedelta(days=day)
    start = datetime(local.year, local.month, local.day, tzinfo=zone)
    following = local + timedelta(days=1)
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return to_us(start), to_us(end)


def _point_value(spec: KpiSpec, p: Point) -> float | None:
    kind = spec.kind
    if kind is KpiKind.count:
        return float(p.count)
    if kind is KpiKind.sum:
        return p.sum
    if kind is KpiKind.avg:
        return p.sum / p.count if p.count else None
    if kind is KpiKind.min:
        return p.min
    if kind is KpiKind.max:
        return p.max
    if kind is KpiKind.last:
        return p.last_value
    if isinstance(spec, PercentileKpi):
        return sketch.quantile(p.sketch or {}, spec.q)
    raise KpiError(f"{kind} is not a per-minute kind")


def evaluate_formula(expression: str, values: Mapping[str, float | None]) -> float | None:
    """+ - * / over KPI values; any missing input or a division by zero gives None (SQL NULL)."""

    def ev(node: ast.AST) -> float | None:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return values[node.id]
        if isinstance(node, ast.UnaryOp):
            operand = ev(node.operand)
            if operand is None:
                return None
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left), ev(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            return None if right == 0 else left / right
        raise KpiError(f"unexpected {type(node).__name__} in a formula")

    result = ev(ast.parse(expression, mode="eval"))
    return result if result is None or math.isfinite(result) else None
