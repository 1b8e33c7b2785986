"""A tiny FastAPI app with `/healthz`, `/readyz` and `/metrics`, for workers without an HTTP API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Response
from fastapi.responses import ORJSONResponse

from shared.metrics import render

ReadyCheck = Callable[[], Awaitable[bool]]


def health_app(name: str, ready: ReadyCheck) -> FastAPI:
    app = FastAPI(title=f"pacekeeper {name}", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> ORJSONResponse:
        return ORJSONResponse({"status": "ok", "service": name})

    @app.get("/readyz")
    async def readyz() -> ORJSONResponse:
        ok = await ready()
        return ORJSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    return app
