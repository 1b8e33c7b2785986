"""KPI reads for rules, goals and the series API, and the aggregator's watermark."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.evaluation.rules import Query
from services.alerts.store._json import jsonb
from shared.config.kpis import KpiKind

# Many kpi_value calls in one round trip: parallel arrays, numbered to map answers back.
_KPI_VALUES = text(
    "SELECT q.i, kpi_value(q.kpi, q.t_from, q.t_to, q.dims)"
    " FROM unnest(CAST(:kpis AS text[]), CAST(:froms AS timestamptz[]),"
    " CAST(:tos AS timestamptz[]), CAST(CAST(:dims AS text[]) AS jsonb[]))"
    " WITH ORDINALITY AS q(kpi, t_from, t_to, dims, i)"
)
# The minutes of additive KPIs (count, sum) over spans, numbered like _KPI_VALUES. pk_spec
# resolves the active version (its storage key as `name`) and pk_dims_filter checks the
# dims, as in kpi_value; other kinds come back with their kind and no minutes.
_SPAN_MINUTES = text(
    "SELECT q.i, d.kind, m.bucket, m.c, m.s"
    " FROM unnest(CAST(:kpis AS text[]), CAST(:froms AS timestamptz[]),"
    " CAST(:tos AS timestamptz[]), CAST(CAST(:dims AS text[]) AS jsonb[]))"
    " WITH ORDINALITY AS q(kpi, t_from, t_to, dims, i)"
    " CROSS JOIN LATERAL (SELECT pk_spec(q.kpi) AS spec OFFSET 0) sp"
    " CROSS JOIN LATERAL (SELECT sp.spec->>'kind' AS kind, sp.spec->>'name' AS storage,"
    " pk_dims_filter(sp.spec, q.dims) AS f OFFSET 0) d"
    " LEFT JOIN LATERAL (SELECT p.bucket, sum(p.count)::float8 AS c,"
    " coalesce(sum(p.sum), 0) AS s FROM kpi_points p"
    " WHERE d.kind IN ('count', 'sum') AND p.kpi = d.storage AND p.dims @> d.f"
    " AND p.bucket >= q.t_from AND p.bucket < q.t_to GROUP BY p.bucket) m ON true"
)
# Windows up to this long go through the minutes; longer ones through kpi_value, whose
# hourly and daily aggregates read far fewer rows.
MINUTE_WINDOW = timedelta(hours=3)
# A span holds the windows of one KPI and group within this much time, one read each.
MAX_SPAN = timedelta(hours=6)
# Kinds whose value over a window is the sum of its minutes' (StrEnum members: the kind
# strings the SQL returns match them too).
ADDITIVE_KINDS = frozenset({KpiKind.count, KpiKind.sum})
_KPI_SERIES = text(
    "SELECT time, value FROM kpi_series(:kpi, :t_from, :t_to, :step, CAST(:dims AS jsonb))"
    " ORDER BY time"
)
# State is stored under each KPI's active version's key (`pk_storage`: the name, or
# `name@N` after a changed definition switched over).
_DIMENSION_VALUES = text(
    "SELECT DISTINCT dims FROM kpi_points"
    " WHERE kpi = ANY(ARRAY(SELECT pk_storage(k) FROM unnest(CAST(:kpis AS text[])) AS k))"
    " AND bucket >= :t_from AND bucket < :t_to"
)
_DIMENSIONS_LAST_SEEN = text(
    "SELECT dims, max(bucket) FROM kpi_points"
    " WHERE kpi = ANY(ARRAY(SELECT pk_storage(k) FROM unnest(CAST(:kpis AS text[])) AS k))"
    " AND bucket >= :t_from AND bucket < :t_to GROUP BY dims"
)
_STORAGE_KEYS = text("SELECT k, pk_storage(k) FROM unnest(CAST(:kpis AS text[])) AS k")
# The view keeps one watermark per partition; the topic's is the least of them.
_WATERMARK = text("SELECT min(watermark) FROM kpi_watermarks WHERE topic = :topic")


def _dims(dims: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> str | None:
    return jsonb(dict(dims)) if dims else None


def _windows(windows: Sequence[Query | Span]) -> dict[str, list[Any]]:
    """The parallel arrays of a numbered unnest (_KPI_VALUES, _SPAN_MINUTES)."""
    return {
        "kpis": [w.kpi for w in windows],
        "froms": [w.t_from for w in windows],
        "tos": [w.t_to for w in windows],
        "dims": [_dims(w.dims) for w in windows],
    }


async def kpi_values(session: AsyncSession, queries: Sequence[Query]) -> dict[Query, float | None]:
    if not queries:
        return {}
    rows = await session.execute(_KPI_VALUES, _windows(queries))
    return {queries[int(i) - 1]: (None if v is None else float(v)) for i, v in rows}


class Span(NamedTuple):
    """One read of a KPI's minutes for one group, covering the windows of `members`."""

    kpi: str
    dims: tuple[tuple[str, str], ...]
    t_from: datetime
    t_to: datetime
    members: tuple[Query, ...]


def plan_spans(queries: Iterable[Query]) -> list[Span]:
    """The spans that cover these windows (each at most `MINUTE_WINDOW` long): per KPI and
    group, windows in order of start, a new span when one would grow past `MAX_SPAN`."""
    by_series: defaultdict[tuple[str, tuple[tuple[str, str], ...]], list[Query]] = defaultdict(list)
    for q in queries:
        by_series[(q.kpi, q.dims)].append(q)
    spans: list[Span] = []
    for (kpi, dims), members in by_series.items():
        members.sort(key=lambda q: q.t_from)
        group: list[Query] = []
        lo = hi = members[0].t_from
        for q in members:
            if group and max(hi, q.t_to) - lo > MAX_SPAN:
                spans.append(Span(kpi, dims, lo, hi, tuple(group)))
                group = []
            if not group:
                lo, hi = q.t_from, q.t_to
            group.append(q)
            hi = max(hi, q.t_to)
        spans.append(Span(kpi, dims, lo, hi, tuple(group)))
    return spans


def window_sum(starts: Sequence[float], values: Sequence[float], q: Query) -> float:
    """The sum of the minutes that start in `[q.t_from, q.t_to)` (`starts`: their sorted
    epoch seconds, compared faster than aware datetimes): a count's or a sum's value over the
    window, 0 without data, as kpi_value answers."""
    lo = bisect_left(starts, q.t_from.timestamp())
    return sum(values[lo : bisect_left(starts, q.t_to.timestamp(), lo)])


class Minutes(NamedTuple):
    """The minutes with data of one span of an additive KPI: their starts (sorted epoch
    seconds) and values (the count, or the sum, by the active version's kind)."""

    kind: str
    starts: list[float]
    values: list[float]

    def window(self, q: Query) -> float:
        return window_sum(self.starts, self.values, q)


async def span_minutes(session: AsyncSession, spans: Sequence[Span]) -> list[Minutes | None]:
    """Each span's minutes in one round trip; None for a span whose KPI's active version
    is not additive (its windows are for kpi_value)."""
    if not spans:
        return []
    rows = await session.execute(_SPAN_MINUTES, _windows(spans))
    kinds: dict[int, str] = {}
    minutes: defaultdict[int, list[tuple[datetime, float, float]]] = defaultdict(list)
    for i, kind, bucket, c, s in rows:
        kinds[int(i) - 1] = str(kind)
        if bucket is not None:
            minutes[int(i) - 1].append((bucket, float(c), float(s)))
    out: list[Minutes | None] = []
    for index in range(len(spans)):
        kind = kinds.get(index, "")
        if kind not in ADDITIVE_KINDS:
            out.append(None)
            continue
        ordered = sorted(minutes.get(index, ()))
        starts = [m[0].timestamp() for m in ordered]
        values = [m[1] if kind == "count" else m[2] for m in ordered]
        out.append(Minutes(kind, starts, values))
    return out


async def additive_values(
    session: AsyncSession, queries: Sequence[Query]
) -> dict[Query, float | None]:
    """The values of the count and sum KPIs among `queries` whose windows are at most
    `MINUTE_WINDOW` long, from one read of minutes per span of overlapping windows instead
    of one kpi_value call each (about 1 ms). Queries of other kinds are left out of the
    answer: the caller reads them with kpi_values."""
    spans = plan_spans(q for q in queries if q.t_to - q.t_from <= MINUTE_WINDOW)
    out: dict[Query, float | None] = {}
    for span, minutes in zip(spans, await span_minutes(session, spans), strict=True):
        if minutes is not None:
            out.update((q, float(minutes.window(q))) for q in span.members)
    return out


async def kpi_series(
    session: AsyncSession,
    kpi: str,
    t_from: datetime,
    t_to: datetime,
    step: timedelta,
    dims: Mapping[str, str] | None,
) -> list[tuple[datetime, float | None]]:
    rows = await session.execute(
        _KPI_SERIES,
        {"kpi": kpi, "t_from": t_from, "t_to": t_to, "step": step, "dims": _dims(dims)},
    )
    return [(t, None if v is None else float(v)) for t, v in rows]


async def dimension_values(
    session: AsyncSession, kpis: Sequence[str], t_from: datetime, t_to: datetime
) -> list[dict[str, str]]:
    """The distinct dimension sets of these (base) KPIs with data in `[t_from, t_to)`."""
    rows = await session.execute(
        _DIMENSION_VALUES, {"kpis": list(kpis), "t_from": t_from, "t_to": t_to}
    )
    return [{str(k): str(v) for k, v in dims.items()} for (dims,) in rows]


async def dimensions_last_seen(
    session: AsyncSession, kpis: Sequence[str], t_from: datetime, t_to: datetime
) -> list[tuple[dict[str, str], datetime]]:
    """The distinct dimension sets of these (base) KPIs with data in `[t_from, t_to)`, each
    with its latest minute there: one read answers every window that ends at `t_to` and
    starts later (a set has data in `[start, t_to)` when its latest minute is at or after
    `start`)."""
    rows = await session.execute(
        _DIMENSIONS_LAST_SEEN, {"kpis": list(kpis), "t_from": t_from, "t_to": t_to}
    )
    return [({str(k): str(v) for k, v in dims.items()}, last) for dims, last in rows]


async def storage_keys(session: AsyncSession, kpis: Iterable[str]) -> dict[str, str]:
    """Each KPI's active version's storage key: it changes when a changed definition
    switches over, and with it every value read from the KPI."""
    rows = await session.execute(_STORAGE_KEYS, {"kpis": sorted(kpis)})
    return {str(k): str(v) for k, v in rows}


async def watermark(session: AsyncSession, topic: str) -> datetime | None:
    """Minutes before it are complete on every partition that has seen data; None before
    any event was aggregated."""
    value = (await session.execute(_WATERMARK, {"topic": topic})).scalar_one()
    return value if isinstance(value, datetime) else None
