"""CloudEvents 1.0: structured, batched, and binary content mode (attributes in `ce-*`
headers)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from services.ingest.parsing.body import Rejection, check_count, loads
from services.ingest.parsing.candidates import Aliases, Candidate
from shared.events import FieldError

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
    return [from_cloudevent(loads(body), 0, received_at=received_at)]


def parse_cloudevents_batch(body: bytes, *, received_at: datetime) -> list[Candidate]:
    document = loads(body)
    if not isinstance(document, list):
        raise Rejection(400, "bad_request", "a CloudEvents batch is a JSON array of events")
    check_count(len(document))
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
    event["data"] = loads(body) if body.strip() else None
    if content_type:
        event["datacontenttype"] = content_type
    return [from_cloudevent(event, 0, received_at=received_at)]
