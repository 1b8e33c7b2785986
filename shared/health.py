"""A tiny FastAPI app with `/healthz`, `/readyz` and `/metrics`, for workers without an HTTP API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from fastapi import FastAPI, Response

from shared.metrics import render

JSON = "application/json"
ReadyCheck = Callable[[], Awaitable[bool]]


def health_app(name: str, ready: ReadyCheck) -> FastAPI:
    app = FastAPI(title=f"pacekeeper {name}", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(orjson.dumps({"status": "ok", "service": name}), media_type=JSON)

    @app.get("/readyz")
    async def readyz() -> Response:
        ok = await ready()
        return Response(
            orjson.dumps({"ready": ok}), status_code=200 if ok else 503, media_type=JSON
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    return app
