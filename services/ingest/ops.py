"""FastAPI routes: health, readiness and metrics. The ingest POSTs are not here: see
`app.IngestAPI`."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.ingest.handler import IngestState
from shared.metrics import render

router = APIRouter()


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "service": "ingest"}


_READY = {
    "type": "object",
    "required": ["ready", "broker"],
    "properties": {"ready": {"type": "boolean"}, "broker": {"type": "boolean"}},
}


@router.get(
    "/readyz",
    response_class=JSONResponse,
    summary="Kafka is reachable",
    responses={
        200: {"description": "ready", "content": {"application/json": {"schema": _READY}}},
        503: {
            "description": "Kafka is not reachable",
            "content": {"application/json": {"schema": _READY}},
        },
    },
)
async def readyz(request: Request) -> Response:
    state: IngestState = request.app.state.ingest
    ok = await state.publisher.reachable()
    body = b'{"ready":true,"broker":true}' if ok else b'{"ready":false,"broker":false}'
    return Response(body, status_code=200 if ok else 503, media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
