"""The event envelope on `pacekeeper.events.v1`: model, limits, validation and JSON codec.

Ingest validates what products send into an `Envelope`; the aggregator decodes the same
bytes back. Both sides share this module so the wire format has exactly one definition.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.text import nul_path

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 512 * 1024
MAX_EVENTS_PER_REQUEST = 1000
MAX_PROPERTY_KEYS = 100
MAX_PROPERTY_KEY_CHARS = 128
MAX_ID_CHARS = 128
MAX_TYPE_CHARS = 128
MAX_USER_CHARS = 256

TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-/ ]*$"
SOURCE_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,63}$"
_SOURCE_RE = re.compile(SOURCE_PATTERN)

Scalar = str | int | float | bool | None
PropertyValue = Scalar | list[Scalar] | dict[str, Scalar | list[Scalar]]


Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]
EventType = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_TYPE_CHARS, pattern=TYPE_PATTERN)
]
Actor = Annotated[str, StringConstraints(min_length=1, max_length=MAX_USER_CHARS)]


class IncomingEvent(BaseModel):
    """What a product may send; `source` and `received_at` are set by ingest, never by the body."""

    model_config = ConfigDict(extra="forbid")

    id: Identifier
    type: EventType
    time: datetime
    user_id: Actor | None = None
    anonymous_id: Actor | None = None
    properties: dict[str, PropertyValue] = Field(default_factory=dict)


class Envelope(IncomingEvent):
    """One accepted event as it travels on Kafka and lands in the `events` table: the
    product's fields, then the two that ingest adds. Its fields, in this order, are the
    wire format."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)]
    received_at: datetime

    @property
    def actor(self) -> str | None:
        """Who did it: the user when known, else the anonymous visitor."""
        return self.user_id or self.anonymous_id


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason an event was refused: which event, which field, why (in words for people,
    and as a `code` for metrics and programs)."""

    index: int
    field: str
    reason: str
    code: str = ""  # "" until set: `kind` derives it from the field

    @property
    def kind(self) -> str:
        """invalid_time, invalid_in_future, invalid_too_old, invalid_too_large,
        invalid_properties or invalid."""
        if self.code:
            return self.code
        if self.field.split(".", 1)[0] in ("properties", "traits", "data"):
            return "invalid_properties"
        return "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "reason": self.reason, "code": self.kind}


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """How far from the server clock an event time may be."""

    allowed_lateness: timedelta = timedelta(days=7)
    max_future_skew: timedelta = timedelta(hours=24)


def valid_source(source: str) -> bool:
    return bool(_SOURCE_RE.match(source))


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _property_errors(index: int, properties: Any) -> list[FieldError]:
    if not isinstance(properties, dict):
        return []  # pydantic reports the type error itself
    errors: list[FieldError] = []
    total_keys = 0
    for key, value in properties.items():
        total_keys += 1
        if not isinstance(key, str) or not key or len(key) > MAX_PROPERTY_KEY_CHARS:
            errors.append(FieldError(index, "properties", f"key must be 1-128 characters: {key!r}"))
        if isinstance(value, dict):
            total_keys += len(value)
            for inner_key, inner in value.items():
                if isinstance(inner, dict):
                    errors.append(
                        FieldError(
                            index,
                            f"properties.{key}.{inner_key}",
                            "properties may be nested one level deep at most",
                        )
                    )
                elif isinstance(inner, list) and any(isinstance(v, dict | list) for v in inner):
                    errors.append(
                        FieldError(
                            index,
                            f"properties.{key}.{inner_key}",
                            "lists may hold only scalar values",
                        )
                    )
        elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
            errors.append(FieldError(index, f"properties.{key}", "lists may hold only scalars"))
    if total_keys > MAX_PROPERTY_KEYS:
        errors.append(
            FieldError(
                index,
                "properties",
                f"{total_keys} keys, more than the limit of {MAX_PROPERTY_KEYS}",
            )
        )
    return errors


def _nul_field(wire: Mapping[str, Any]) -> str | None:
    """The first field whose text holds NUL, which PostgreSQL cannot store: accepted, such
    an event could only end in the dead-letter topic."""
    return nul_path({name: wire[name] for name in ("id", "user_id", "anonymous_id", "properties")})


def _float_errors(index: int, properties: dict[str, Any]) -> list[FieldError]:
    """NaN and infinities are not JSON; Python's json would accept them, orjson would write null."""
    errors = []
    for key, value in properties.items():
        values = value.values() if isinstance(value, dict) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                errors.append(FieldError(index, f"properties.{key}", "number must be finite"))
    return errors


def validate_event(
    raw: Any,
    index: int,
    *,
    source: str,
    received_at: datetime,
    policy: TimePolicy,
) -> Accepted | list[FieldError]:
    """Accept one decoded JSON value as an event, or say every reason it is refused."""
    if not isinstance(raw, dict):
        return [FieldError(index, "", "an event must be a JSON object")]
    errors = _property_errors(index, raw.get("properties"))
    try:
        incoming = IncomingEvent.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_context=False, include_input=False):
            field = _loc(tuple(err["loc"]))
            if field.startswith("properties.") and err["type"] in {
                "string_type",
                "int_type",
                "float_type",
                "bool_type",
                "list_type",
                "dict_type",
                "none_required",
            }:
                # The union of property types yields one error per alternative, each with its
                # type in the location (properties.a.str, properties.a.int, ...); say it once,
                # and not at all when the nesting check already named what is wrong there.
                field = ".".join(field.split(".")[:2])
                if any(e.field == field or e.field.startswith(f"{field}.") for e in errors):
                    continue
                reason = "value must be a string, number, boolean, null, list or object"
            elif err["type"] == "extra_forbidden":
                reason = "unknown field"
            elif err["type"] == "missing":
                reason = "field required"
            else:
                reason = err["msg"]
            if not any(e.field == field and e.reason == reason for e in errors):
                errors.append(FieldError(index, field, reason))
        return errors
    if errors:
        return errors
    errors = _float_errors(index, incoming.properties)
    event_time = incoming.time
    if event_time.tzinfo is None:
        errors.append(
            FieldError(index, "time", "time must carry a UTC offset, e.g. ...Z", "invalid_time")
        )
    else:
        try:
            event_time = event_time.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+00:03 is before year 1 in UTC
            errors.append(
                FieldError(
                    index, "time", "outside the calendar once converted to UTC", "invalid_time"
                )
            )
            return errors
        if event_time > received_at + policy.max_future_skew:
            errors.append(
                FieldError(
                    index,
                    "time",
                    f"more than {policy.max_future_skew} ahead of the server clock",
                    "invalid_in_future",
                )
            )
        elif event_time < received_at - policy.allowed_lateness:
            errors.append(
                FieldError(
                    index,
                    "time",
                    f"older than the allowed lateness of {policy.allowed_lateness.days} days",
                    "invalid_too_old",
                )
            )
    if errors:
        return errors
    # The wire form straight from the validated fields (a model keeps them in its __dict__),
    # in the Envelope's order: an Envelope, or dict(model), per event cost ingest more than
    # the validation itself.
    wire = {**vars(incoming), "time": event_time, "source": source, "received_at": received_at}
    value = _dumps_wire(wire)
    if len(value) > MAX_EVENT_BYTES:
        return [
            FieldError(
                index,
                "",
                f"event is {len(value)} bytes, over the {MAX_EVENT_BYTES} limit",
                "invalid_too_large",
            )
        ]
    if b"\\u0000" in value:  # one search of the encoded event; the walk only when it hits
        nul = _nul_field(wire)
        if nul is not None:
            return [FieldError(index, nul, "text cannot contain NUL (U+0000)")]
    key = _key(source, incoming.user_id or incoming.anonymous_id or incoming.id)
    return Accepted(wire, key, value)


@dataclass(frozen=True, slots=True)
class Accepted:
    """An event ingest accepted: the envelope's fields by name, and its Kafka key and message
    value, encoded once."""

    fields: Mapping[str, Any]
    key: bytes
    value: bytes

    def envelope(self) -> Envelope:
        """The same fields validated as an Envelope: for readers and tests, never on the
        ingest path (it costs more than the validation that produced them)."""
        return Envelope.model_validate(self.fields)


def encode(envelope: Envelope) -> bytes:
    return _dumps_wire(vars(envelope))


def _dumps_wire(wire: Mapping[str, Any]) -> bytes:
    """The Kafka message value: compact JSON, times in RFC 3339 UTC."""
    return orjson.dumps(wire, option=orjson.OPT_UTC_Z)


def message_key(envelope: Envelope) -> bytes:
    """source + actor, so one user's events stay in order on one partition."""
    return _key(envelope.source, envelope.actor or envelope.id)


def _key(source: str, actor: str) -> bytes:
    return f"{source}\x1f{actor}".encode()


class PoisonMessage(ValueError):
    """A message on the events topic that is not a valid envelope; it goes to the DLQ."""


def load_message(value: bytes | None) -> Any:
    """A Kafka message value as decoded JSON, or `PoisonMessage` with the reason."""
    if value is None:
        raise PoisonMessage("empty message value")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise PoisonMessage(f"not JSON: {exc}") from exc


def decode(value: bytes | None) -> Envelope:
    """Parse a Kafka message value back into an `Envelope`, or raise `PoisonMessage`."""
    return envelope_from_data(load_message(value))


def envelope_from_data(data: Any) -> Envelope:
    """Validate already-decoded JSON as an `Envelope`, or raise `PoisonMessage`."""
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise PoisonMessage(f"{_loc(tuple(first['loc']))}: {first['msg']}") from exc
    if envelope.time.tzinfo is None or envelope.received_at.tzinfo is None:
        raise PoisonMessage("time and received_at must carry a UTC offset")
    return envelope


def utcnow() -> datetime:
    return datetime.now(UTC)
