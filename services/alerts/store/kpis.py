"""KPI reads for rules, goals and the series API, and the aggregator's watermark."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.evaluation.rules import Query
from services.alerts.store._json import jsonb

# Many kpi_value calls in one round trip: parallel arrays, numbered to map answers back.
_KPI_VALUES = text(
    "SELECT q.i, kpi_value(q.kpi, q.t_from, q.t_to, q.dims)"
    " FROM unnest(CAST(:kpis AS text[]), CAST(:froms AS timestamptz[]),"
    " CAST(:tos AS timestamptz[]), CAST(CAST(:dims AS text[]) AS jsonb[]))"
    " WITH ORDINALITY AS q(kpi, t_from, t_to, dims, i)"
)
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
_STORAGE_KEYS = text("SELECT k, pk_storage(k) FROM unnest(CAST(:kpis AS text[])) AS k")
# The view keeps one watermark per partition; the topic's is the least of them.
_WATERMARK = text("SELECT min(watermark) FROM kpi_watermarks WHERE topic = :topic")


def _dims(dims: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> str | None:
    return jsonb(dict(dims)) if dims else None


async def kpi_values(session: AsyncSession, queries: Sequence[Query]) -> dict[Query, float | None]:
    if not queries:
        return {}
    rows = await session.execute(
        _KPI_VALUES,
        {
            "kpis": [q.kpi for q in queries],
            "froms": [q.t_from for q in queries],
            "tos": [q.t_to for q in queries],
            "dims": [_dims(q.dims) for q in queries],
        },
    )
    return {queries[int(i) - 1]: (None if v is None else float(v)) for i, v in rows}


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
