"""The ingest ASGI app: the lifespan builds the engine, the producer and the caches."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from services.ingest import keys
from services.ingest.auth import KeyCache, Lookup
from services.ingest.endpoints import router
from services.ingest.handler import INGEST_ROUTES, IngestEndpoint, IngestState
from services.ingest.metrics import MetricsMiddleware
from services.ingest.publisher import Publisher
from services.ingest.ratelimit import RateLimiter
from services.ingest.schemas import SECURITY_SCHEMES
from services.ingest.settings import IngestSettings
from shared.db import make_engine
from shared.events import TimePolicy
from shared.kafka import ensure_topics, make_producer

log = logging.getLogger(__name__)

# A key lookup is one indexed read; past this the database is not answering.
_KEY_LOOKUP_TIMEOUT = 2.0


def _key_lookup(engine: AsyncEngine) -> Lookup:
    async def lookup(prefix: str) -> keys.StoredKey | None:
        async with asyncio.timeout(_KEY_LOOKUP_TIMEOUT), engine.connect() as conn:
            return await keys.find_by_prefix(conn, prefix)

    return lookup


class IngestAPI(FastAPI):
    """FastAPI for the OpenAPI document, health and metrics; the ingest POSTs go straight to
    `IngestEndpoint`. FastAPI's per-request layers (telemetry, body limit, dependency
    solving, query parsing, response objects) cost more CPU than the ingest itself:
    single events went from 1,440 to 2,870 req/s on one core when bypassed (closed loop,
    32 keep-alive connections, loopback)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._ingest = IngestEndpoint(self)
        # Every request is measured here, once, whichever side serves it.
        self._measured = MetricsMiddleware(
            self._serve, routes=frozenset(INGEST_ROUTES) | {"/healthz", "/readyz", "/metrics"}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._measured(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INGEST_ROUTES:
            await self._ingest(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: IngestSettings | None = None) -> IngestAPI:
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings, application_name="pacekeeper-ingest", pool_size=4)
        try:
            await ensure_topics(settings, {settings.events_topic: settings.ingest_topic_partitions})
            producer = make_producer(
                settings,
                client_id="pacekeeper-ingest",
                linger_ms=settings.ingest_linger_ms,
                request_timeout_ms=int(settings.ingest_produce_timeout * 1000),
            )
            await producer.start()
            publisher = Publisher(
                producer,
                settings.events_topic,
                timeout=settings.ingest_produce_timeout,
                probe_interval=settings.ingest_broker_probe_interval,
            )
            try:
                app.state.ingest = IngestState(
                    settings=settings,
                    keys=KeyCache(_key_lookup(engine), ttl=settings.ingest_key_cache_ttl),
                    limiter=RateLimiter(
                        rate=settings.ingest_rate_per_second, burst=settings.ingest_rate_burst
                    ),
                    publisher=publisher,
                    policy=TimePolicy(
                        allowed_lateness=settings.allowed_lateness,
                        max_future_skew=settings.max_future_skew,
                    ),
                )
                yield
            finally:
                await publisher.stop()
                await producer.stop()  # flushes what is still buffered
        finally:
            await engine.dispose()
        log.info("ingest stopped: producer flushed and closed")

    app = IngestAPI(
        title="Pacekeeper ingest",
        version="1",
        summary="Product events over HTTP into Kafka; 202 only once Kafka has them.",
        lifespan=lifespan,
        redoc_url=None,
    )
    app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
    return app
