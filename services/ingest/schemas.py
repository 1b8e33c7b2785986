"""What the OpenAPI document says about ingest's bodies and answers.

Ingest reads the raw body itself (streamed, size-bounded, several formats), so the request
bodies are described here as JSON Schema rather than bound to models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from shared.events import (
    MAX_EVENTS_PER_REQUEST,
    MAX_ID_CHARS,
    MAX_PROPERTY_KEYS,
    MAX_TYPE_CHARS,
    MAX_USER_CHARS,
    TYPE_PATTERN,
)


class AcceptedAnswer(BaseModel):
    accepted: int = Field(description="events acknowledged by Kafka")


class FieldProblem(BaseModel):
    index: int = Field(description="position of the event in the request, from 0")
    field: str = Field(description="the field, in the request's own names; empty for the event")
    reason: str
    code: str = Field(
        description="invalid_time, invalid_in_future, invalid_too_old, invalid_too_large,"
        " invalid_properties or invalid"
    )


class Problem(BaseModel):
    code: str = Field(description="machine-readable, e.g. invalid_events, payload_too_large")
    message: str
    errors: list[FieldProblem] | None = Field(
        None, description="every refused event with its field and reason (422 only)"
    )


_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}
_USER = {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_USER_CHARS}
_TIME = {"type": "string", "format": "date-time"}
_PROPERTIES = {"type": "object", "maxProperties": MAX_PROPERTY_KEYS}

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "type", "time"],
    "additionalProperties": False,
    "properties": {
        "id": _ID,
        "type": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TYPE_CHARS,
            "pattern": TYPE_PATTERN,
        },
        "time": _TIME,
        "user_id": _USER,
        "anonymous_id": _USER,
        "properties": _PROPERTIES,
    },
}

CLOUDEVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": _ID,
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1, "maxLength": MAX_TYPE_CHARS},
        "time": _TIME,
        "datacontenttype": {"type": "string"},
        "data": _PROPERTIES,
        "userid": _USER,
        "anonymousid": _USER,
    },
}

SEGMENT_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messageId"],
    "properties": {
        "type": {"enum": ["track", "page", "screen", "identify", "group", "alias"]},
        "messageId": _ID,
        "event": {"type": "string"},
        "name": {"type": "string"},
        "timestamp": _TIME,
        "userId": _USER,
        "anonymousId": _USER,
        "properties": _PROPERTIES,
        "traits": _PROPERTIES,
        "context": {"type": "object"},
    },
}

SEGMENT_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["batch"],
    "properties": {
        "batch": {
            "type": "array",
            "items": SEGMENT_MESSAGE_SCHEMA,
            "maxItems": MAX_EVENTS_PER_REQUEST,
        },
        "sentAt": _TIME,
        "writeKey": {"type": "string"},
    },
}


def request_body(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """An OpenAPI Request Body object."""
    return {
        "required": True,
        "content": {media: {"schema": schema} for media, schema in content.items()},
    }


EVENTS_BODY = request_body(
    {
        "application/json": {
            "anyOf": [
                EVENT_SCHEMA,
                {"type": "array", "items": EVENT_SCHEMA, "maxItems": MAX_EVENTS_PER_REQUEST},
            ]
        },
        "application/x-ndjson": {"type": "string", "description": "one event per line"},
        "application/cloudevents+json": CLOUDEVENT_SCHEMA,
        "application/cloudevents-batch+json": {
            "type": "array",
            "items": CLOUDEVENT_SCHEMA,
            "maxItems": MAX_EVENTS_PER_REQUEST,
        },
    }
)
SEGMENT_BODY = request_body({"application/json": SEGMENT_MESSAGE_SCHEMA})
SEGMENT_BATCH_BODY = request_body({"application/json": SEGMENT_BATCH_SCHEMA})

_REF = "#/components/schemas/{model}"
# The answer models as OpenAPI components (FieldProblem comes along inside Problem).
ANSWER_SCHEMAS: dict[str, Any] = models_json_schema(
    [(AcceptedAnswer, "serialization"), (Problem, "serialization")], ref_template=_REF
)[1]["$defs"]

_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string"},
    }
}


def _answer(model: type[BaseModel], description: str) -> dict[str, Any]:
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str, **extra: Any) -> dict[str, Any]:
    return {**_answer(Problem, description), **extra}


INGEST_RESPONSES: dict[str, dict[str, Any]] = {
    "202": _answer(AcceptedAnswer, "every event acknowledged by Kafka"),
    "400": _problem("malformed JSON, NDJSON or gzip"),
    "401": _problem("missing, unknown or revoked API key"),
    "413": _problem("body over 512 KiB (decompressed) or more than 1000 events"),
    "415": _problem("unsupported Content-Type or Content-Encoding"),
    "422": _problem("invalid events, each named by index; nothing was published"),
    "429": _problem("over this key's rate limit", headers=_RETRY_AFTER),
    "503": _problem("Kafka (or the key store) unavailable; nothing accepted", headers=_RETRY_AFTER),
}

SECURITY: list[dict[str, list[str]]] = [{"bearerKey": []}, {"basicWriteKey": []}]
SECURITY_SCHEMES: dict[str, Any] = {
    "bearerKey": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
    "basicWriteKey": {
        "type": "http",
        "scheme": "basic",
        "description": "Segment style: the key as user, empty password",
    },
}
