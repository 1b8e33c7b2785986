"""The ingest flow for one request: authenticate, read and parse the body, validate,
rate-limit, publish, answer. Every refusal is a problem document with a status from the
contract; nothing here answers 500.

`IngestEndpoint` serves the ingest routes as plain ASGI, ahead of FastAPI's machinery
(see `app.IngestAPI`). The FastAPI routes in `endpoints.py` call the same `ingest()` and
carry the OpenAPI description.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from services.ingest import parsing
from services.ingest.auth import KeyCache, KeyStoreUnavailable, credentials
from services.ingest.metrics import (
    EVENTS_REJECTED,
    REQUEST_BYTES,
    events_accepted,
)
from services.ingest.parsing import Candidate, Format, Rejection
from services.ingest.publisher import BrokerUnavailable, Publisher
from services.ingest.ratelimit import RateLimiter, retry_after_header
from services.ingest.settings import IngestSettings
from shared.events import FieldError, TimePolicy, utcnow

log = logging.getLogger(__name__)

_WWW_AUTHENTICATE = 'Bearer realm="pacekeeper", Basic realm="pacekeeper"'

Headers = Mapping[str, str]


class HasState(Protocol):
    @property
    def state(self) -> Any: ...


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


@dataclass(frozen=True, slots=True)
class IngestRoute:
    """How one path reads its body: which formats, and how to map them onto events."""

    select_format: Callable[[Headers], Format]
    parse: Callable[[Headers, bytes, datetime, Format], list[Candidate]]


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


# --- the routes ----------------------------------------------------------------------------


def _events_format(headers: Headers) -> Format:
    return parsing.events_format(
        headers.get("content-type"), cloudevent_headers="ce-specversion" in headers
    )


def _parse_events(
    headers: Headers, body: bytes, received_at: datetime, fmt: Format
) -> list[Candidate]:
    if fmt is Format.NDJSON:
        return parsing.parse_ndjson(body)
    if fmt is Format.CLOUDEVENT:
        return parsing.parse_cloudevent(body, received_at=received_at)
    if fmt is Format.CLOUDEVENTS_BATCH:
        return parsing.parse_cloudevents_batch(body, received_at=received_at)
    if fmt is Format.CLOUDEVENT_BINARY:
        return parsing.parse_cloudevent_binary(
            body,
            parsing.cloudevent_attributes(headers),
            content_type=headers.get("content-type"),
            received_at=received_at,
        )
    return parsing.parse_events(body)


def _segment_format(batch: bool) -> Callable[[Headers], Format]:
    def select(headers: Headers) -> Format:
        return parsing.segment_format(headers.get("content-type"), batch=batch)

    return select


def _parse_segment_call(call: str) -> Callable[[Headers, bytes, datetime, Format], list[Candidate]]:
    def parse(headers: Headers, body: bytes, received_at: datetime, fmt: Format) -> list[Candidate]:
        return parsing.parse_segment(body, call=call, received_at=received_at)

    return parse


def _parse_segment_batch(
    headers: Headers, body: bytes, received_at: datetime, fmt: Format
) -> list[Candidate]:
    return parsing.parse_segment_batch(body, received_at=received_at)


SEGMENT_CALL_PATHS = tuple(f"/v1/{call}" for call in sorted(parsing.SEGMENT_CALLS))

INGEST_ROUTES: dict[str, IngestRoute] = {
    "/v1/events": IngestRoute(_events_format, _parse_events),
    "/v1/batch": IngestRoute(_segment_format(batch=True), _parse_segment_batch),
    **{
        path: IngestRoute(_segment_format(batch=False), _parse_segment_call(path[4:]))
        for path in SEGMENT_CALL_PATHS
    },
}


# --- plain ASGI in front of FastAPI --------------------------------------------------------


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        body: bytes = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


def raw_headers(answer: Answer) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    headers.extend(
        (name.lower().encode(), value.encode()) for name, value in answer.headers.items()
    )
    return headers


class IngestEndpoint:
    """The ingest POSTs as one plain ASGI app; `owner` is the app whose lifespan built the state."""

    def __init__(self, owner: HasState) -> None:
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = INGEST_ROUTES[scope["path"]]
        state: IngestState = self.owner.state.ingest
        # ASGI header names are lower-case already; a repeated header keeps its last value.
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        try:
            answer = await ingest(state, route, headers, _chunks(receive))
        except ClientDisconnect:
            return  # nobody is left to answer
        await send(
            {"type": "http.response.start", "status": answer.status, "headers": raw_headers(answer)}
        )
        await send({"type": "http.response.body", "body": answer.body})
