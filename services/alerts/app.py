"""The FastAPI app: API routers, health and metrics, and the evaluator worker, all built in
the lifespan (never at import) and closed in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from services.alerts import store
from services.alerts.api import alerts, config, goals, series, silences
from services.alerts.api.errors import install as install_errors
from services.alerts.api.limits import CancelOnDisconnect, RequestLimits
from services.alerts.config import ConfigCache
from services.alerts.notify.targets import GuardedTransport
from services.alerts.settings import AlertsSettings
from services.alerts.web import routes as web
from services.alerts.web.scorecard import SnapshotCache
from services.alerts.worker import LEASE_NAME, Worker
from shared.db import make_engine, make_sessionmaker, transaction
from shared.metrics import render

log = logging.getLogger("pacekeeper.alerts")


def create_app(settings: AlertsSettings, *, run_worker: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings, application_name="pacekeeper-alerts", pool_size=8)
        api_engine = make_engine(
            settings,
            application_name="pacekeeper-alerts-api",
            pool_size=settings.alerts_api_pool_size,
            statement_timeout_ms=int(settings.alerts_api_statement_timeout_seconds * 1000),
        )
        sessions = make_sessionmaker(engine)
        http = httpx.AsyncClient(
            timeout=settings.alerts_delivery_timeout_seconds,
            headers={"User-Agent": "pacekeeper-alerts"},
            transport=GuardedTransport(
                httpx.AsyncHTTPTransport(), allow_private=settings.alerts_allow_private_targets
            ),
        )
        app.state.settings = settings
        app.state.sessions = make_sessionmaker(api_engine)
        app.state.config_cache = ConfigCache(settings.timezone)
        app.state.web_snapshots = SnapshotCache(settings.alerts_web_cache_seconds)
        worker = Worker(settings, engine, sessions, http) if run_worker else None
        app.state.worker = worker
        task = asyncio.create_task(worker.run(), name="alerts-worker") if worker else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await http.aclose()
            await api_engine.dispose()
            await engine.dispose()

    app = FastAPI(
        title="Pacekeeper alerts",
        version="1",
        description="Threshold rules and SMART goals that page the right people exactly once.",
        lifespan=lifespan,
    )
    install_errors(app)
    app.add_middleware(RequestLimits, settings=settings)
    app.add_middleware(CancelOnDisconnect)
    for router in (
        config.kpis,
        series.router,
        goals.router,
        config.goals_config,
        config.rules,
        config.channels,
        silences.router,
        alerts.router,
        web.router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, object]:
        worker: Worker | None = app.state.worker
        return {"status": "ok", "service": "alerts", "leader": bool(worker and worker.leading)}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> JSONResponse:
        try:
            async with transaction(app.state.sessions) as session:
                # Reading the lease row proves the database answers and the schema exists.
                lease = await store.lease.get_lease(session, LEASE_NAME)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return JSONResponse({"ready": False, "error": str(exc)[:200]}, status_code=503)
        return JSONResponse(jsonable_encoder({"ready": True, "evaluator": lease}))

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics() -> Response:
        body, content_type = render()
        return Response(body, media_type=content_type)

    return app
