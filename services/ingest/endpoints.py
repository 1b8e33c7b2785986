"""FastAPI routes: health, readiness, metrics, and the ingest POSTs as OpenAPI documents them.

The ingest POSTs are served by `handler.IngestEndpoint`, plain ASGI that `app.IngestAPI`
calls before FastAPI (FastAPI's per-request layers cost more CPU than ingesting). The
routes below exist for the OpenAPI document; they run the same `ingest()`, so a request
that reached them would get the same answer.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from services.ingest.handler import INGEST_ROUTES, SEGMENT_CALL_PATHS, IngestState, ingest
from services.ingest.schemas import (
    EVENTS_BODY,
    INGEST_RESPONSES,
    SECURITY,
    SEGMENT_BATCH_BODY,
    SEGMENT_BODY,
    AcceptedAnswer,
)
from shared.metrics import render

router = APIRouter()


class JSON(JSONResponse):
    """Bodies arrive encoded already (orjson); a JSONResponse so OpenAPI says JSON too."""

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


async def _serve(request: Request) -> Response:
    state: IngestState = request.app.state.ingest
    answer = await ingest(state, INGEST_ROUTES[request.url.path], request.headers, request.stream())
    return JSON(answer.body, status_code=answer.status, headers=answer.headers)


def _ingest_route(path: str, name: str, summary: str, body: dict[str, Any], **extra: Any) -> None:
    async def endpoint(request: Request) -> Response:
        return await _serve(request)

    router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        name=name,
        operation_id=name,
        summary=summary,
        status_code=202,
        response_model=AcceptedAnswer,
        response_class=JSON,
        responses=INGEST_RESPONSES,
        openapi_extra={**body, "security": SECURITY},
        **extra,
    )


_ingest_route(
    "/v1/events", "post_events", "Send one event, a JSON array, NDJSON, or CloudEvents", EVENTS_BODY
)
_ingest_route(
    "/v1/batch",
    "segment_batch",
    "Segment HTTP Tracking API: a batch of calls",
    SEGMENT_BATCH_BODY,
    tags=["segment"],
)
for _path in SEGMENT_CALL_PATHS:
    _call = _path.removeprefix("/v1/")
    _ingest_route(
        _path,
        f"segment_{_call}",
        f"Segment HTTP Tracking API: {_call}",
        SEGMENT_BODY,
        tags=["segment"],
    )


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
    response_class=JSON,
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
    return JSON(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    body, content_type = render()
    return Response(body, media_type=content_type)
