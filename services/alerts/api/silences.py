"""Silences: label matchers and an expiry, as in Alertmanager."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, HTTPException, Query, Response, status

from services.alerts import store
from services.alerts.api import errors
from services.alerts.api.deps import Reader, Session, Writer
from services.alerts.api.errors import Unprocessable
from services.alerts.silence import SilenceIn
from services.alerts.store.silences import SilenceRecord

router = APIRouter(prefix="/v1/silences", tags=["silences"])


@router.get(
    "",
    summary="Active and pending silences (expired ones with ?expired=true)",
    responses=errors.READ,
)
async def list_silences(
    session: Session, _: Reader, expired: bool = Query(False)
) -> list[SilenceRecord]:
    return await store.silences.list_silences(session, include_expired=expired)


@router.post(
    "", status_code=status.HTTP_201_CREATED, summary="Create a silence", responses=errors.WRITE
)
async def create_silence(body: SilenceIn, session: Session, _: Writer) -> SilenceRecord:
    starts_at = body.starts_at or datetime.now(UTC)
    if starts_at.tzinfo is None or body.ends_at.tzinfo is None:
        raise Unprocessable([("ends_at", "give times with a time zone, e.g. 2027-01-01T00:00Z")])
    if body.ends_at <= starts_at:
        raise Unprocessable([("ends_at", "must be after starts_at")])
    return await store.silences.create_silence(
        session, body.matchers, starts_at, body.ends_at, body.created_by, body.comment
    )


@router.delete(
    "/{silence_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Expire a silence now",
    responses=errors.WRITE_ONE,
)
async def expire_silence(silence_id: int, session: Session, _: Writer) -> Response:
    if not await store.silences.expire_silence(session, silence_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no active silence {silence_id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
