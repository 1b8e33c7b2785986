"""The ingest POST paths: per path, how its body is read (formats, mapping onto events) and
how the OpenAPI document describes it. `app.IngestAPI` serves exactly these paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.ingest import parsing
from services.ingest.parsing import Candidate, Format
from services.ingest.schemas import EVENTS_BODY, SEGMENT_BATCH_BODY, SEGMENT_BODY

Headers = Mapping[str, str]


@dataclass(frozen=True, slots=True)
class IngestRoute:
    """How one path reads its body, and what the OpenAPI document says about it."""

    select_format: Callable[[Headers], Format]
    parse: Callable[[Headers, bytes, datetime, Format], list[Candidate]]
    operation_id: str
    summary: str
    body: dict[str, Any]  # the OpenAPI requestBody
    tags: tuple[str, ...] = ()


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


def _segment_call(call: str) -> IngestRoute:
    return IngestRoute(
        _segment_format(batch=False),
        _parse_segment_call(call),
        operation_id=f"segment_{call}",
        summary=f"Segment HTTP Tracking API: {call}",
        body=SEGMENT_BODY,
        tags=("segment",),
    )


INGEST_ROUTES: dict[str, IngestRoute] = {
    "/v1/events": IngestRoute(
        _events_format,
        _parse_events,
        operation_id="post_events",
        summary="Send one event, a JSON array, NDJSON, or CloudEvents",
        body=EVENTS_BODY,
    ),
    "/v1/batch": IngestRoute(
        _segment_format(batch=True),
        _parse_segment_batch,
        operation_id="segment_batch",
        summary="Segment HTTP Tracking API: a batch of calls",
        body=SEGMENT_BATCH_BODY,
        tags=("segment",),
    ),
    **{f"/v1/{call}": _segment_call(call) for call in sorted(parsing.SEGMENT_CALLS)},
}
