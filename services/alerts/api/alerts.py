"""`GET /v1/alerts` (active and recent), acknowledgements, and the delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query, status
from pydantic import ConfigDict, Field

from services.alerts import store
from services.alerts.api import errors
from services.alerts.api.deps import Reader, Session, Writer
from services.alerts.api.errors import Unprocessable
from services.alerts.store.alerts import AlertView
from services.alerts.store.outbox import NotificationRecord
from shared.text import RefusesNul

router = APIRouter(prefix="/v1", tags=["alerts"])


class AckIn(RefusesNul):
    model_config = ConfigDict(extra="forbid")

    by: str = Field("", max_length=200)
    comment: str = Field("", max_length=2000)


@router.get(
    "/alerts", summary="Pending, firing and recently resolved alerts", responses=errors.READ
)
async def list_alerts(
    session: Session,
    _: Reader,
    state: Annotated[list[str] | None, Query()] = None,
    limit: int = Query(500, ge=1, le=10_000),
) -> list[AlertView]:
    allowed = {"pending", "firing", "resolved"}
    if state and not set(state) <= allowed:
        raise Unprocessable([("state", f"each must be one of {sorted(allowed)}")])
    return await store.alerts.list_alerts(session, states=state, limit=limit)


@router.post(
    "/alerts/{alert_id}/ack",
    summary="Acknowledge an alert: no more repeats of it until it resolves",
    responses=errors.WRITE_ONE | errors.answers(409),
)
async def acknowledge(
    alert_id: int,
    session: Session,
    _: Writer,
    body: Annotated[AckIn | None, Body()] = None,
) -> dict[str, Any]:
    found = await store.alerts.alert_episode(session, alert_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
    if found.state not in ("pending", "firing"):
        raise HTTPException(status.HTTP_409_CONFLICT, f"alert {alert_id} is {found.state}")
    ack = body or AckIn()
    await store.alerts.acknowledge(session, found.fingerprint, found.episode, ack.by, ack.comment)
    return {
        "id": alert_id,
        "fingerprint": found.fingerprint,
        "episode": found.episode,
        "acknowledged": True,
    }


@router.get("/notifications", summary="Delivery attempts, newest first", responses=errors.READ)
async def notifications(
    session: Session, _: Reader, limit: int = Query(200, ge=1, le=10_000)
) -> list[NotificationRecord]:
    return await store.outbox.list_notifications(session, limit=limit)
