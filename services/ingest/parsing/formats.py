"""Which format a body is in, from its Content-Type (and, for CloudEvents, its headers)."""

from __future__ import annotations

from enum import StrEnum

from services.ingest.parsing.body import Rejection


class Format(StrEnum):
    EVENTS = "events"  # our envelope shape: one object or an array
    NDJSON = "ndjson"
    CLOUDEVENT = "cloudevent"
    CLOUDEVENTS_BATCH = "cloudevents-batch"
    CLOUDEVENT_BINARY = "cloudevent-binary"  # attributes in ce-* headers, data in the body
    SEGMENT = "segment"  # one Segment call (/v1/track, /v1/page, …)
    SEGMENT_BATCH = "segment-batch"


_JSON = {"application/json"}
_NDJSON = {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonl"}
_CLOUDEVENT = "application/cloudevents+json"
_CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
# analytics.js sends text/plain to spare browsers a CORS preflight.
_SEGMENT = {"application/json", "text/plain"}


def media_type(content_type: str | None) -> str | None:
    """`application/json; charset=utf-8` → `application/json`; refuses charsets other than UTF-8."""
    if content_type is None or not content_type.strip():
        return None
    kind, *params = content_type.split(";")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            raise Rejection(415, "unsupported_media_type", "only UTF-8 bodies are accepted")
    return kind.strip().lower()


def events_format(content_type: str | None, *, cloudevent_headers: bool = False) -> Format:
    kind = media_type(content_type)
    if kind == _CLOUDEVENT:
        return Format.CLOUDEVENT
    if kind == _CLOUDEVENTS_BATCH:
        return Format.CLOUDEVENTS_BATCH
    if kind is None or kind in _JSON:
        return Format.CLOUDEVENT_BINARY if cloudevent_headers else Format.EVENTS
    if kind in _NDJSON:
        return Format.NDJSON
    raise Rejection(
        415,
        "unsupported_media_type",
        f"{kind} is not accepted here; send application/json, application/x-ndjson, "
        f"{_CLOUDEVENT} or {_CLOUDEVENTS_BATCH}",
    )


def segment_format(content_type: str | None, *, batch: bool) -> Format:
    kind = media_type(content_type)
    if kind is not None and kind not in _SEGMENT:
        raise Rejection(415, "unsupported_media_type", f"{kind} is not accepted; send JSON")
    return Format.SEGMENT_BATCH if batch else Format.SEGMENT
