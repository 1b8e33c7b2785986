"""The Segment HTTP Tracking API: track, page, screen, identify, group, alias and batch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.ingest.parsing.body import Rejection, check_count, loads
from services.ingest.parsing.candidates import Aliases, Candidate
from shared.events import FieldError

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
    return [from_segment(loads(body), 0, call=call, received_at=received_at)]


def parse_segment_batch(body: bytes, *, received_at: datetime) -> list[Candidate]:
    document = loads(body)
    batch = document.get("batch") if isinstance(document, dict) else None
    if not isinstance(batch, list):
        raise Rejection(400, "bad_request", 'a Segment batch is {"batch": [message, ...]}')
    check_count(len(batch))
    return [
        from_segment(message, index, call=None, received_at=received_at)
        for index, message in enumerate(batch)
    ]
