"""How the evaluator reads KPI values: what `kpi_value` answers, in fewer round trips.

- Counts and sums over windows up to 3 hours are sums of their minutes: the minutes of a
  KPI and group are read once per span of windows (`store.kpis.additive_values`), not one
  `kpi_value` call (about 1 ms) per window. A ratio of two of them (a conversion rate) is
  its two totals over the window, NULL over zero, as `kpi_value` computes it.
- A window that ended before `final` (the watermark less the allowed lateness) can no
  longer change. Its answer is kept in `final_values`, keyed by the storage keys of the
  KPI's active version (and of the KPIs it is built from), so a definition switching over
  reads under new keys. The minutes of whole final hours of additive KPIs are kept in
  `final_hours`: an anomaly rule's past weeks move by a few minutes every few ticks, and
  the moved windows are summed from hours already read.
- Everything else: one `kpi_value` call each, many per round trip.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import store
from services.alerts.evaluation import anomaly
from services.alerts.evaluation.rules import Query
from services.alerts.store.kpis import (
    ADDITIVE_KINDS,
    MINUTE_WINDOW,
    Minutes,
    plan_spans,
    span_minutes,
)
from shared.config.kpis import KpiSpec, RatioKpi, referenced_kpis

# Final answers kept between ticks. The benchmark's 1,000 anomaly rules x 5 groups hold
# 35,000 (weeks 2..8; week 1 is never final under a 7-day lateness).
FINAL_VALUES = 200_000
# Whole final hours of minutes kept (a few KB each): the benchmark reads ~1,600.
FINAL_HOURS = 10_000
# kpi_value calls per round trip: large enough that 10,000 rules need few round trips,
# small enough that one statement's parameters stay well under a megabyte.
QUERY_CHUNK = 2000
_HOUR = 3600.0

HourKey = tuple[str, tuple[tuple[str, str], ...], float]  # storage key, dims, hour start


class KpiReads:
    def __init__(self, *, minute_sums: bool = True) -> None:
        # False: every value from its own kpi_value call (the benchmark's comparison).
        self.minute_sums = minute_sums
        self.final_values: anomaly.FinalValues[float | None] = anomaly.FinalValues(FINAL_VALUES)
        self.final_hours: anomaly.FinalValues[Minutes] = anomaly.FinalValues(FINAL_HOURS)

    async def read(
        self,
        session: AsyncSession,
        kpis: Mapping[str, KpiSpec],
        queries: Iterable[Query],
        final: datetime | None = None,
    ) -> dict[Query, float | None]:
        """The value of every query. `final`: windows ending at or before it can no longer
        change (their answers may come from, and go to, the caches); None caches nothing."""
        wanted = set(queries)
        settled = [q for q in wanted if q.t_to <= final] if final is not None else []
        if not settled:
            return await self._fresh(session, kpis, wanted, None, {})
        used = {k: _read_kpis(k, kpis) for k in {q.kpi for q in settled}}
        storage = await store.kpis.storage_keys(session, set().union(*used.values()))
        definitions = {k: tuple(storage.get(u, u) for u in sorted(us)) for k, us in used.items()}
        values: dict[Query, float | None] = {}
        missing: dict[Query, tuple[Query, tuple[str, ...]]] = {}
        for q in settled:
            key = (q, definitions[q.kpi])
            found = self.final_values.get(key)
            if found is anomaly.MISS:
                missing[q] = key
            else:
                values[q] = found
        fresh = await self._fresh(session, kpis, wanted.difference(values), final, storage)
        for q, key in missing.items():
            self.final_values.put(key, fresh.get(q))
        values.update(fresh)
        return values

    async def _fresh(
        self,
        session: AsyncSession,
        kpis: Mapping[str, KpiSpec],
        queries: set[Query],
        final: datetime | None,
        storage: Mapping[str, str],
    ) -> dict[Query, float | None]:
        additive: set[Query] = set()
        parts: dict[Query, tuple[Query, Query]] = {}
        for q in queries if self.minute_sums else ():
            spec = kpis.get(q.kpi)
            if spec is None or q.t_to - q.t_from > MINUTE_WINDOW:
                continue
            if spec.kind in ADDITIVE_KINDS:
                additive.add(q)
            elif isinstance(spec, RatioKpi) and _additive(kpis, spec.numerator, spec.denominator):
                parts[q] = (q._replace(kpi=spec.numerator), q._replace(kpi=spec.denominator))
                additive.update(parts[q])
        values: dict[Query, float | None] = {}
        if final is not None:
            values.update(await self._final_sums(session, additive, final, storage))
        # A KPI and group's windows together: chunks split few spans.
        ordered = sorted(additive.difference(values))
        for i in range(0, len(ordered), QUERY_CHUNK):
            chunk = ordered[i : i + QUERY_CHUNK]
            values.update(await store.kpis.additive_values(session, chunk))
        for q, (numerator, denominator) in parts.items():
            num, den = values.get(numerator), values.get(denominator)
            if num is not None and den is not None:  # both parts were additive after all
                values[q] = num / den if den else None  # kpi_value's ratio: NULL over zero
        rest = [q for q in queries if q not in values]
        for i in range(0, len(rest), QUERY_CHUNK):
            values.update(await store.kpis.kpi_values(session, rest[i : i + QUERY_CHUNK]))
        return {q: values[q] for q in queries}

    async def _final_sums(
        self,
        session: AsyncSession,
        queries: Iterable[Query],
        final: datetime,
        storage: Mapping[str, str],
    ) -> dict[Query, float | None]:
        """Additive windows within whole final hours, summed from `final_hours`; the hours
        it lacks are read first, whole, in spans. A window whose last hour is not final yet
        is left out (for additive_values)."""
        limit = final.timestamp()
        plans: list[tuple[Query, list[HourKey]]] = []
        hours: dict[HourKey, Minutes] = {}
        needed: dict[HourKey, Query] = {}
        for q in queries:
            start = math.floor(q.t_from.timestamp() / _HOUR) * _HOUR
            count = max(1, math.ceil((q.t_to.timestamp() - start) / _HOUR))
            if start + count * _HOUR > limit:
                continue
            prefix = storage.get(q.kpi, q.kpi), q.dims
            keys = [(*prefix, start + n * _HOUR) for n in range(count)]
            plans.append((q, keys))
            for key in keys:
                if key in hours or key in needed:
                    continue
                found = self.final_hours.get(key)
                if isinstance(found, Minutes):
                    hours[key] = found
                else:
                    begin = datetime.fromtimestamp(key[2], UTC)
                    needed[key] = Query(q.kpi, begin, begin + timedelta(hours=1), q.dims)
        hours.update(await self._read_hours(session, needed))
        return {
            q: float(sum(hours[key].window(q) for key in keys))
            for q, keys in plans
            if all(key in hours for key in keys)  # else not additive: for kpi_value
        }

    async def _read_hours(
        self, session: AsyncSession, needed: Mapping[HourKey, Query]
    ) -> dict[HourKey, Minutes]:
        """Read these whole final hours (adjacent ones in one span) and keep them."""
        by_query = {q: key for key, q in needed.items()}
        spans = plan_spans(needed.values())
        out: dict[HourKey, Minutes] = {}
        for i in range(0, len(spans), QUERY_CHUNK):
            chunk = spans[i : i + QUERY_CHUNK]
            for span, minutes in zip(chunk, await span_minutes(session, chunk), strict=True):
                if minutes is None:
                    continue  # the active version is not additive
                for hour in span.members:
                    lo = bisect_left(minutes.starts, hour.t_from.timestamp())
                    hi = bisect_left(minutes.starts, hour.t_to.timestamp(), lo)
                    part = Minutes(minutes.kind, minutes.starts[lo:hi], minutes.values[lo:hi])
                    out[by_query[hour]] = part
                    self.final_hours.put(by_query[hour], part)
        return out


def _additive(kpis: Mapping[str, KpiSpec], *names: str) -> bool:
    return all(n in kpis and kpis[n].kind in ADDITIVE_KINDS for n in names)


def _read_kpis(name: str, kpis: Mapping[str, KpiSpec]) -> frozenset[str]:
    """The KPI and every KPI its value is computed from (ratios and formulas, transitively):
    a new version of any of them changes the value."""
    seen: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            spec = kpis.get(current)
            stack.extend(referenced_kpis(spec) if spec is not None else ())
    return frozenset(seen)
