"""From HTTP body to validated envelopes: size-bounded reading, gzip, JSON/NDJSON, and the
Segment and CloudEvents mappings onto our event shape.

Everything here is pure except `read_body`, which only pulls chunks from the request.
A problem with the request as a whole raises `Rejection` (400/413/415); a problem with one
event becomes a `FieldError` naming its index, in the field names the client used.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

import orjson

from shared.events import (
    MAX_EVENTS_PER_REQUEST,
    Accepted,
    FieldError,
    TimePolicy,
    validate_event,
)

# Events are at most: array → event → properties → object → list; more is never valid,
# and bounding it keeps every walk over a document cheap.
MAX_JSON_DEPTH = 16
# Concatenated gzip members are legal (one per flushed chunk); thousands are only an attack.
MAX_GZIP_MEMBERS = 64

Aliases = Mapping[str, str]
NO_ALIASES: Aliases = MappingProxyType({})


class Rejection(Exception):
    """The request as a whole is refused: nothing of it is published."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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


def _too_large(limit: int) -> Rejection:
    return Rejection(413, "payload_too_large", f"the request body is over {limit} bytes")


async def read_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    content_encoding: str | None,
    limit: int,
) -> bytes:
    """The (decompressed) body, refused with 413 as soon as it passes `limit` bytes.

    The declared length is checked before reading anything; the bytes on the wire are
    counted as they arrive, so an endless or huge body is cut off after `limit` bytes.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in {"identity", "gzip", "x-gzip"}:
        raise Rejection(415, "unsupported_encoding", f"Content-Encoding {encoding} is not accepted")
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise _too_large(limit)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    if encoding == "identity":
        return bytes(received)
    return gunzip(bytes(received), limit)


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip (one or more members), never producing more than `limit` bytes.

    Each member costs a fresh inflater: 26,214 empty members in a 512 KiB body took 0.4 s
    of event-loop CPU, so a body may hold at most MAX_GZIP_MEMBERS of them."""
    out = bytearray()
    for _ in range(MAX_GZIP_MEMBERS):
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            # Asking for one byte more than allowed tells "exactly at the limit" from "over".
            out += inflater.decompress(data, limit - len(out) + 1)
        except zlib.error as exc:
            raise Rejection(400, "bad_encoding", f"the body is not valid gzip: {exc}") from exc
        if len(out) > limit:
            raise Rejection(
                413, "payload_too_large", f"the decompressed body is over {limit} bytes"
            )
        if not inflater.eof:
            raise Rejection(400, "bad_encoding", "the gzip body is truncated")
        data = inflater.unused_data
        if not data.strip(b"\x00"):
            return bytes(out)
    raise Rejection(
        400, "bad_encoding", f"the body holds more than {MAX_GZIP_MEMBERS} gzip members"
    )


def _loads(data: bytes, where: str = "body") -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Rejection(400, "bad_json", f"{where} is not valid JSON: {exc}") from exc
    # Fewer brackets than the limit cannot nest deeper: most single events skip the walk.
    if data.count(b"{") + data.count(b"[") > MAX_JSON_DEPTH and _depth(value) > MAX_JSON_DEPTH:
        raise Rejection(400, "bad_json", f"{where} nests deeper than {MAX_JSON_DEPTH} levels")
    return value


def _depth(value: Any) -> int:
    """Nesting depth of containers, level by level, without recursion."""
    depth = 0
    level = [value] if isinstance(value, dict | list) else []
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            break
        below = []
        for container in level:
            for child in container.values() if isinstance(container, dict) else container:
                if isinstance(child, dict | list):
                    below.append(child)
        level = below
    return depth


def _check_count(count: int) -> None:
    if count > MAX_EVENTS_PER_REQUEST:
        raise Rejection(
            413,
            "too_many_events",
            f"{count} events in one request, more than the limit of {MAX_EVENTS_PER_REQUEST}",
        )


@dataclass(slots=True)
class Candidate:
    """One event as sent, mapped onto our shape; `errors` found while mapping it, if any."""

    raw: Any
    aliases: Aliases = field(default_factory=lambda: NO_ALIASES)
    errors: list[FieldError] = field(default_factory=list)
    # False when mapping failed so early that `raw` is not in our shape at all.
    mapped: bool = True


# --- our own shape -------------------------------------------------------------------------


def parse_events(body: bytes) -> list[Candidate]:
    document = _loads(body)
    items = document if isinstance(document, list) else [document]
    _check_count(len(items))
    return [Candidate(item) for item in items]


def parse_ndjson(body: bytes) -> list[Candidate]:
    lines = [(n, line) for n, line in enumerate(body.split(b"\n"), start=1) if line.strip()]
    _check_count(len(lines))
    return [Candidate(_loads(line, f"line {number}")) for number, line in lines]


# --- Segment HTTP Tracking API -------------------------------------------------------------

# What each Segment call becomes; `track` keeps its own event name.
SEGMENT_EVENT_TYPES = {
    "page": "page_viewed",
    "screen": "screen_viewed",
    "identify": "user_identified",
    "group": "group_joined",
    "alias": "user_aliased",
}
SEGMENT_CALLS = frozenset({"track", *SEGMENT_EVENT_TYPES})
_SEGMENT_ALIASES: Aliases = {
    "id": "messageId",
    "type": "event",
    "time": "timestamp",
    "user_id": "userId",
    "anonymous_id": "anonymousId",
}
_SEGMENT_TRAIT_ALIASES: Aliases = {**_SEGMENT_ALIASES, "properties": "traits"}


def _segment_id(value: Any) -> Any:
    """Segment ids may be numbers; its own clients stringify them."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def from_segment(message: Any, index: int, *, call: str | None, received_at: datetime) -> Candidate:
    """Map one Segment message (track, page, screen, identify, group, alias) onto our shape."""
    if not isinstance(message, dict):
        return Candidate(message)
    kind = call or message.get("type")
    if not isinstance(kind, str) or kind not in SEGMENT_CALLS:
        return Candidate(
            message,
            errors=[
                FieldError(index, "type", f"must be one of {', '.join(sorted(SEGMENT_CALLS))}")
            ],
            mapped=False,
        )
    uses_traits = kind in {"identify", "group"}
    properties: Any = message.get("traits" if uses_traits else "properties")
    if properties is None:
        properties = {}
    if isinstance(properties, dict):
        properties = dict(properties)
        if kind in {"page", "screen"} and message.get("name") is not None:
            properties.setdefault("name", message["name"])
        if kind == "group" and message.get("groupId") is not None:
            properties.setdefault("group_id", _segment_id(message["groupId"]))
        if kind == "alias" and message.get("previousId") is not None:
            properties.setdefault("previous_id", _segment_id(message["previousId"]))
    raw: dict[str, Any] = {
        "id": _segment_id(message.get("messageId")),
        "type": message.get("event") if kind == "track" else SEGMENT_EVENT_TYPES[kind],
        # Segment's rule: no timestamp means "now", as received.
        "time": message.get("timestamp") or received_at,
        "user_id": _segment_id(message.get("userId")),
        "anonymous_id": _segment_id(message.get("anonymousId")),
        "properties": properties,
    }
    return Candidate(
        {k: v for k, v in raw.items() if v is not None},
        _SEGMENT_TRAIT_ALIASES if uses_traits else _SEGMENT_ALIASES,
    )


def parse_segment(body: bytes, *, call: str, received_at: datetime) -> list[Candidate]:
    return [from_segment(_loads(body), 0, call=call, received_at=received_at)]


def parse_segment_batch(body: bytes, *, received_at: datetime) -> list[Candidate]:
    document = _loads(body)
    batch = document.get("batch") if isinstance(document, dict) else None
    if not isinstance(batch, list):
        raise Rejection(400, "bad_request", 'a Segment batch is {"batch": [message, ...]}')
    _check_count(len(batch))
    return [
        from_segment(message, index, call=None, received_at=received_at)
        for index, message in enumerate(batch)
    ]


# --- CloudEvents 1.0 -----------------------------------------------------------------------

_CLOUDEVENT_ALIASES: Aliases = {
    "properties": "data",
    "user_id": "userid",
    "anonymous_id": "anonymousid",
}
_CE_REQUIRED = ("id", "source", "specversion", "type")


def _json_content_type(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    kind = value.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json") or kind == "text/json"


def from_cloudevent(event: Any, index: int, *, received_at: datetime) -> Candidate:
    """Map a CloudEvent onto our shape: `data` (a JSON object) becomes the properties, and
    the extension attributes `userid` / `anonymousid` name the actor."""
    if not isinstance(event, dict):
        return Candidate(event)
    errors = [
        FieldError(index, name, "field required")
        for name in _CE_REQUIRED
        if event.get(name) in (None, "")
    ]
    if event.get("specversion") not in (None, "", "1.0"):
        errors.append(FieldError(index, "specversion", "only CloudEvents 1.0 is accepted"))
    content_type = event.get("datacontenttype")
    if content_type is not None and not _json_content_type(content_type):
        errors.append(FieldError(index, "datacontenttype", "data must be JSON"))
    if "data_base64" in event:
        errors.append(FieldError(index, "data_base64", "binary data is not accepted; send JSON"))
    data = event.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        errors.append(FieldError(index, "data", "must be a JSON object (the event's properties)"))
    raw: dict[str, Any] = {
        "id": event.get("id"),
        "type": event.get("type"),
        "time": event.get("time") or received_at,
        "user_id": event.get("userid"),
        "anonymous_id": event.get("anonymousid"),
        "properties": data,
    }
    return Candidate({k: v for k, v in raw.items() if v is not None}, _CLOUDEVENT_ALIASES, errors)


def parse_cloudevent(body: bytes, *, received_at: datetime) -> list[Candidate]:
    return [from_cloudevent(_loads(body), 0, received_at=received_at)]


def parse_cloudevents_batch(body: bytes, *, received_at: datetime) -> list[Candidate]:
    document = _loads(body)
    if not isinstance(document, list):
        raise Rejection(400, "bad_request", "a CloudEvents batch is a JSON array of events")
    _check_count(len(document))
    return [
        from_cloudevent(event, index, received_at=received_at)
        for index, event in enumerate(document)
    ]


def cloudevent_attributes(headers: Mapping[str, str]) -> dict[str, Any]:
    """Binary content mode: `ce-*` headers (percent-encoded) are the attributes."""
    return {
        name[3:].lower(): unquote(value)
        for name, value in headers.items()
        if name.lower().startswith("ce-") and len(name) > 3
    }


def parse_cloudevent_binary(
    body: bytes, attributes: dict[str, Any], *, content_type: str | None, received_at: datetime
) -> list[Candidate]:
    event = dict(attributes)
    event["data"] = _loads(body) if body.strip() else None
    if content_type:
        event["datacontenttype"] = content_type
    return [from_cloudevent(event, 0, received_at=received_at)]


# --- validation ----------------------------------------------------------------------------


def _renamed(error: FieldError, aliases: Aliases) -> FieldError:
    if not aliases or not error.field:
        return error
    head, dot, rest = error.field.partition(".")
    bracket = head.find("[")
    if bracket > 0:
        head, rest, dot = head[:bracket], head[bracket:] + dot + rest, ""
    alias = aliases.get(head)
    if alias is None:
        return error
    return FieldError(error.index, f"{alias}{dot}{rest}", error.reason, error.code)


def validate(
    candidates: list[Candidate],
    *,
    source: str,
    received_at: datetime,
    policy: TimePolicy,
) -> tuple[list[Accepted], list[FieldError]]:
    """All events and no errors, or no events and every error of every refused event:
    a request is published whole or not at all."""
    events: list[Accepted] = []
    errors: list[FieldError] = []
    for index, candidate in enumerate(candidates):
        if not candidate.mapped:
            errors.extend(candidate.errors)
            continue
        result = validate_event(
            candidate.raw, index, source=source, received_at=received_at, policy=policy
        )
        if isinstance(result, Accepted) and not candidate.errors:
            events.append(result)
            continue
        errors.extend(candidate.errors)
        if not isinstance(result, Accepted):
            seen = {error.field for error in candidate.errors}
            errors.extend(
                renamed
                for renamed in (_renamed(error, candidate.aliases) for error in result)
                if renamed.field not in seen
            )
    return ([] if errors else events), errors
