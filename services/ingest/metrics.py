"""Ingest's Prometheus metrics and the middleware that counts every request.

Collectors live at module level (once per process), as prometheus-client intends; several
apps in one process (tests) share them.
"""

from __future__ import annotations

import time
from functools import cache

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import LATENCY_BUCKETS, SIZE_BUCKETS

REQUESTS = Counter(
    "pacekeeper_ingest_requests_total", "HTTP requests by route and status", ["route", "status"]
)
REQUEST_SECONDS = Histogram(
    "pacekeeper_ingest_request_seconds",
    "Time from request start to the response",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
# Across worker processes: the sum of live workers' in-flight requests, and "up" only while
# every live worker believes the broker reachable.
IN_FLIGHT = Gauge(
    "pacekeeper_ingest_in_flight_requests",
    "Requests being handled now",
    multiprocess_mode="livesum",
)
REQUEST_BYTES = Histogram(
    "pacekeeper_ingest_request_bytes",
    "Decompressed request body size",
    buckets=SIZE_BUCKETS,
)
EVENTS_ACCEPTED = Counter(
    "pacekeeper_ingest_events_accepted_total", "Events acknowledged by Kafka", ["source"]
)
EVENTS_REJECTED = Counter(
    "pacekeeper_ingest_events_rejected_total",
    "Events refused, by reason: invalid_* (422), rate_limited, broker_unavailable; requests "
    "refused before their events could be counted (bad_json, payload_too_large, ...) count 1",
    ["reason"],
)
PRODUCE_SECONDS = Histogram(
    "pacekeeper_ingest_produce_seconds",
    "Time for Kafka to acknowledge every event of a request",
    buckets=LATENCY_BUCKETS,
)
BROKER_UP = Gauge(
    "pacekeeper_ingest_broker_up",
    "1 while the broker is believed reachable",
    multiprocess_mode="livemin",
)


# `labels()` costs a lock and a dict lookup per call; children for a label set are cached.
# Label values are bounded (routes, status codes, sources from API keys).
@cache
def _request_children(route: str, status: int) -> tuple[Counter, Histogram]:
    return REQUESTS.labels(route, str(status)), REQUEST_SECONDS.labels(route)


@cache
def events_accepted(source: str) -> Counter:
    return EVENTS_ACCEPTED.labels(source)


class MetricsMiddleware:
    """Pure ASGI (no per-request task like BaseHTTPMiddleware): counts status, time, in-flight."""

    def __init__(self, app: ASGIApp, *, routes: frozenset[str]) -> None:
        self.app = app
        self.routes = routes  # label values; any other path is "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.routes else "other"  # unknown paths must not grow labels
        status = 500  # what a client would see if the app raised before answering

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            IN_FLIGHT.dec()
            requests, seconds = _request_children(route, status)
            requests.inc()
            seconds.observe(time.perf_counter() - start)
