"""`GET /v1/kpis/{name}/series`: a KPI over time through `kpi_series`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Query, status

from services.alerts import store
from services.alerts.api import errors
from services.alerts.api.deps import Reader, Session
from services.alerts.api.errors import Unprocessable
from shared.config.kpis import undeclared_dimensions
from shared.config.store import load_section
from shared.durations import MAX_DURATION, format_duration, parse_duration

router = APIRouter(prefix="/v1/kpis", tags=["kpis"])
MAX_POINTS = 20_000


@router.get(
    "/{name}/series", summary="KPI values per step in [from, to)", responses=errors.READ_ONE
)
async def series(
    name: str,
    session: Session,
    _: Reader,
    t_from: datetime = Query(alias="from"),
    t_to: datetime = Query(alias="to"),
    step: str = Query("1h", description="15m, 1h, 1d, …"),
    dims: str | None = Query(None, description='JSON object, e.g. {"source": "web-shop"}'),
) -> dict[str, Any]:
    kpis = await load_section(session, "kpis")
    if name not in kpis:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no KPI named {name!r}")
    try:
        step_delta = parse_duration(step)
    except ValueError as exc:
        raise Unprocessable([("step", str(exc))]) from None
    if step_delta < timedelta(minutes=1):
        raise Unprocessable([("step", "must be at least 1m (KPIs are kept per minute)")])
    if step_delta > MAX_DURATION:
        raise Unprocessable([("step", f"must be at most {format_duration(MAX_DURATION)}")])
    if t_from.tzinfo is None or t_to.tzinfo is None:
        raise Unprocessable([("from", "give times with a time zone, e.g. 2027-01-01T00:00Z")])
    if t_to <= t_from:
        raise Unprocessable([("to", "must be after from")])
    if (t_to - t_from) / step_delta > MAX_POINTS:
        raise Unprocessable([("step", f"more than {MAX_POINTS} points; use a larger step")])
    parsed: dict[str, str] | None = None
    if dims:
        try:
            raw = orjson.loads(dims)
        except orjson.JSONDecodeError:
            raw = None
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise Unprocessable([("dims", "a JSON object of dimension → value strings")])
        if any("\x00" in k or "\x00" in v for k, v in raw.items()):
            raise Unprocessable([("dims", "names and values cannot contain NUL")])
        unknown = undeclared_dimensions(name, list(raw), kpis)
        if unknown:
            raise Unprocessable([(f"dims.{d}", f"{name} has no dimension {d!r}") for d in unknown])
        parsed = raw
    points = await store.kpis.kpi_series(session, name, t_from, t_to, step_delta, parsed)
    return {
        "kpi": name,
        "from": t_from,
        "to": t_to,
        "step": step,
        "dims": parsed or {},
        "points": [{"time": t, "value": v} for t, v in points],
    }
