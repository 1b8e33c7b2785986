"""The ingest flow for one request: authenticate, read and parse the body, validate,
rate-limit, publish, answer. Every refusal is a problem document with a status from the
contract; nothing here answers 500. `app.IngestEndpoint` calls it for every ingest POST.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from services.ingest import parsing
from services.ingest.auth import KeyCache, KeyStoreUnavailable, credentials
from services.ingest.metrics import (
    EVENTS_REJECTED,
    REQUEST_BYTES,
    events_accepted,
)
from services.ingest.parsing import Rejection
from services.ingest.publisher import BrokerUnavailable, Publisher
from services.ingest.ratelimit import RateLimiter, retry_after_header
from services.ingest.routes import Headers, IngestRoute
from services.ingest.settings import IngestSettings
from shared.events import FieldError, TimePolicy, utcnow

log = logging.getLogger(__name__)

_WWW_AUTHENTICATE = 'Bearer realm="pacekeeper", Basic realm="pacekeeper"'


@dataclass(frozen=True, slots=True)
class IngestState:
    """What the lifespan builds and every request uses."""

    settings: IngestSettings
    keys: KeyCache
    limiter: RateLimiter
    publisher: Publisher
    policy: TimePolicy


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


def accepted(count: int) -> Answer:
    return Answer(202, b'{"accepted":%d}' % count, {})


def problem(
    status: int,
    code: str,
    message: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    body: dict[str, Any] = {"code": code, "message": message}
    if errors is not None:
        body["errors"] = [error.as_dict() for error in errors]
    return Answer(status, orjson.dumps(body), headers or {})


async def ingest(
    state: IngestState, route: IngestRoute, headers: Headers, chunks: AsyncIterator[bytes]
) -> Answer:
    settings = state.settings
    try:
        principal = await state.keys.authenticate(credentials(headers.get("authorization")))
    except KeyStoreUnavailable as exc:
        log.warning("key store unavailable", extra={"error": str(exc)})
        return problem(
            503,
            "unavailable",
            "API keys cannot be checked right now",
            headers={"Retry-After": str(settings.ingest_retry_after)},
        )
    if principal is None:
        return problem(
            401,
            "unauthorized",
            "send a valid API key: Authorization: Bearer KEY (or Basic with the key as user)",
            headers={"WWW-Authenticate": _WWW_AUTHENTICATE},
        )

    key = principal.key_prefix
    # A key whose bucket is empty is refused before its body costs anything.
    if (wait := state.limiter.wait(key)) > 0:
        return _rate_limited(wait)
    try:
        fmt = route.select_format(headers)
        body = await parsing.read_body(
            chunks,
            content_length=headers.get("content-length"),
            content_encoding=headers.get("content-encoding"),
            limit=settings.ingest_max_request_bytes,
        )
        REQUEST_BYTES.observe(len(body))
        received_at = utcnow()
        candidates = route.parse(headers, body, received_at, fmt)
    except Rejection as rejection:
        # A 413 may leave megabytes unread on the socket: close it rather than drain it.
        close = {"Connection": "close"} if rejection.status == 413 else None
        EVENTS_REJECTED.labels(rejection.code).inc()
        state.limiter.charge(key, 1)
        return problem(rejection.status, rejection.code, rejection.message, headers=close)

    events, errors = parsing.validate(
        candidates, source=principal.source, received_at=received_at, policy=state.policy
    )
    if errors:
        for error in errors:
            EVENTS_REJECTED.labels(error.kind).inc()
        invalid = len({error.index for error in errors})
        state.limiter.charge(key, invalid)
        return problem(
            422,
            "invalid_events",
            f"{invalid} of {len(candidates)} events are invalid; nothing was published",
            errors=errors,
        )

    if (wait := state.limiter.acquire(key, len(events))) > 0:
        EVENTS_REJECTED.labels("rate_limited").inc(len(events))
        return _rate_limited(wait)

    if events:
        try:
            await state.publisher.publish(events)
        except BrokerUnavailable as exc:
            log.warning("publish failed", extra={"error": str(exc), "events": len(events)})
            EVENTS_REJECTED.labels("broker_unavailable").inc(len(events))
            return problem(
                503,
                "unavailable",
                "Kafka is unavailable; nothing was accepted, retry with the same event ids",
                headers={"Retry-After": str(settings.ingest_retry_after)},
            )
        events_accepted(principal.source).inc(len(events))
    return accepted(len(events))


def _rate_limited(wait: float) -> Answer:
    return problem(
        429,
        "rate_limited",
        "over this key's rate limit; retry later",
        headers={"Retry-After": retry_after_header(wait)},
    )
