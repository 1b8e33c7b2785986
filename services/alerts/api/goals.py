"""`GET /v1/goals`: every goal with its live pacing, computed by the evaluator's functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from services.alerts import store
from services.alerts.api import errors
from services.alerts.api.config import public
from services.alerts.api.deps import Reader, Session
from services.alerts.config import ConfigCache
from services.alerts.evaluation.readings import GoalReading, read_goals
from services.alerts.evaluation.windows import judgement_time
from services.alerts.store.results import RestatementRow, ResultRow, goal_results, restatements_of

router = APIRouter(prefix="/v1/goals", tags=["goals"])


def _view(reading: GoalReading) -> dict[str, Any]:
    return {**public(reading.goal), **reading.standing()}


async def _readings(request: Request, session: Session) -> dict[str, GoalReading]:
    cache: ConfigCache = request.app.state.config_cache
    config = await cache.refresh(session)
    now = datetime.now(UTC)
    topic = request.app.state.settings.events_topic
    at = judgement_time(now, await store.kpis.watermark(session, topic))
    return await read_goals(session, config, at)


def _result_view(row: ResultRow, changes: list[RestatementRow]) -> dict[str, Any]:
    """A closed period: as reported when it closed, as restated by late events since."""
    return {
        "period_start": row.period_start.isoformat(),
        "period_end": row.period_end.isoformat(),
        "reported": {
            "value": row.reported_value,
            "target": row.reported_target,
            "status": row.reported_status,
            "at": row.reported_at.isoformat(),
        },
        "restated": None
        if row.restated_at is None
        else {
            "value": row.value,
            "target": row.target,
            "status": row.status,
            "at": row.restated_at.isoformat(),
            "delta": row.restated_delta,
            "relative": _finite(row.restated_relative),
        },
        "restatements": [
            {
                "number": c.number,
                "at": c.restated_at.isoformat(),
                "value": c.value,
                "target": c.target,
                "status": c.status,
                "delta": c.delta,
                "relative": _finite(c.relative),
                "notified": c.notified,
            }
            for c in changes
        ],
        "checked_at": row.checked_at.isoformat(),
    }


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: a change from zero has no relative size."""
    return None if value is None or value in (float("inf"), float("-inf")) else value


@router.get(
    "",
    summary="Goals with value, target, expected by now, status, projection, gap",
    responses=errors.READ,
)
async def list_goals(request: Request, session: Session, _: Reader) -> list[dict[str, Any]]:
    readings = await _readings(request, session)
    cache: ConfigCache = request.app.state.config_cache
    out = []
    for name, goal in cache.current.goals.items():
        reading = readings.get(name)
        out.append(_view(reading) if reading else {**public(goal), "status": None})
    return out


@router.get(
    "/{name}", summary="One goal with its pacing and status history", responses=errors.READ_ONE
)
async def get_goal(
    name: str,
    request: Request,
    session: Session,
    _: Reader,
    history: int = Query(20, ge=0, le=1000),
    results: int = Query(12, ge=0, le=1000),
) -> dict[str, Any]:
    readings = await _readings(request, session)
    cache: ConfigCache = request.app.state.config_cache
    goal = cache.current.goals.get(name)
    if goal is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no goal named {name!r}")
    reading = readings.get(name)
    view = _view(reading) if reading else {**public(goal), "status": None}
    view["history"] = await store.goals.goal_history(session, name, history)
    closed = await goal_results(session, name, results) if results else []
    changes = await restatements_of(
        session, name, [r.period_start for r in closed if r.restatements]
    )
    view["results"] = [
        _result_view(r, [c for c in changes if c.period_start == r.period_start]) for r in closed
    ]
    return view
