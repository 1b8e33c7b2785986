from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import (
    MAX_EVENT_BYTES,
    Accepted,
    Envelope,
    FieldError,
    PoisonMessage,
    TimePolicy,
    decode,
    encode,
    message_key,
    validate_event,
)

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
POLICY = TimePolicy()


def check(raw: Any) -> Envelope | list[FieldError]:
    return validate_event(raw, 3, source="web-shop", received_at=NOW, policy=POLICY)


def good(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "e-1",
        "type": "order_completed",
        "time": "2026-11-27T09:59:00Z",
        "user_id": "u-1",
        "properties": {"revenue": 59.9, "channel": "seo", "cart": {"items": 2}},
    }
    event.update(overrides)
    return event


def fields(result: Accepted | list[FieldError]) -> dict[str, str]:
    assert isinstance(result, list), result
    assert all(e.index == 3 for e in result)
    return {e.field: e.reason for e in result}


def test_valid_event_gets_source_and_received_at_from_the_server() -> None:
    envelope = check(good(source="spoofed") | {})
    assert isinstance(envelope, list)  # `source` in the body is not the client's to set
    accepted = check(good())
    assert isinstance(accepted, Accepted)
    assert accepted.fields["source"] == "web-shop"
    assert accepted.fields["received_at"] == NOW
    assert accepted.fields["time"] == datetime(2026, 11, 27, 9, 59, tzinfo=UTC)


def test_time_is_normalised_to_utc() -> None:
    accepted = check(good(time="2026-11-27T17:30:00+08:00"))
    assert isinstance(accepted, Accepted)
    assert accepted.fields["time"] == datetime(2026, 11, 27, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("event", "field", "reason"),
    [
        (good(id=""), "id", "at least 1 character"),
        ({"type": "x", "time": "2026-11-27T09:00:00Z"}, "id", "field required"),
        (good(type="bad type!"), "type", "pattern"),
        (good(time="yesterday"), "time", "datetime"),
        (good(time="2026-11-27T09:00:00"), "time", "UTC offset"),
        (good(time=(NOW + timedelta(hours=25)).isoformat()), "time", "ahead of the server"),
        (good(time=(NOW - timedelta(days=8)).isoformat()), "time", "allowed lateness"),
        # Found by schemathesis: a 500 (OverflowError) converting these to UTC.
        (good(time="0001-01-01T00:00:05+00:03"), "time", "outside the calendar"),
        (good(time="9999-12-31T23:59:59-01:00"), "time", "outside the calendar"),
        (good(properties={"a": {"b": {"c": 1}}}), "properties.a.b", "one level deep"),
        (good(properties={f"k{i}": i for i in range(101)}), "properties", "limit of 100"),
        (good(properties="nope"), "properties", "dictionary"),
        (good(extra=1), "extra", "unknown field"),
        (good(properties={"x": float("nan")}), "properties.x", "finite"),
        (good(properties={"big": "x" * MAX_EVENT_BYTES}), "", "over the 32768 limit"),
        # PostgreSQL cannot store NUL: accepted, such an event could only be dead-lettered.
        (good(id="a\x00b"), "id", "NUL"),
        (good(user_id="u\x00"), "user_id", "NUL"),
        (good(properties={"tags": ["ok", "n\x00"]}), "properties.tags[1]", "NUL"),
    ],
)
def test_every_refusal_names_field_and_reason(event: Any, field: str, reason: str) -> None:
    errors = fields(check(event))
    assert field in errors, errors
    assert reason.lower() in errors[field].lower()


def test_the_text_of_an_escaped_nul_is_only_text() -> None:
    assert isinstance(check(good(properties={"note": "\\u0000 is how JSON spells NUL"})), Accepted)


def test_non_object_is_refused() -> None:
    assert fields(check([1, 2])) == {"": "an event must be a JSON object"}


def test_decode_round_trips_and_rejects_poison() -> None:
    accepted = check(good())
    assert isinstance(accepted, Accepted)
    assert decode(accepted.value) == accepted.envelope()
    assert encode(accepted.envelope()) == accepted.value
    with pytest.raises(PoisonMessage, match="not JSON"):
        decode(b"{nope")
    with pytest.raises(PoisonMessage, match="source"):
        decode(orjson.dumps({**orjson.loads(accepted.value), "source": None}))
    with pytest.raises(PoisonMessage, match="empty"):
        decode(None)


def test_key_keeps_one_users_events_together() -> None:
    a = check(good(id="1"))
    b = check(good(id="2", properties={}))
    anon = check(good(id="3", user_id=None, anonymous_id="a-9"))
    assert isinstance(a, Accepted)
    assert isinstance(b, Accepted)
    assert isinstance(anon, Accepted)
    assert a.key == b.key == message_key(a.envelope()) == b"web-shop\x1fu-1"
    assert anon.key == message_key(anon.envelope()) == b"web-shop\x1fa-9"


# Any text PostgreSQL can store: every character but NUL (and lone surrogates, not UTF-8).
def texts(min_size: int = 0, max_size: int = 20) -> st.SearchStrategy[str]:
    characters = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    return st.text(characters, min_size=min_size, max_size=max_size)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    texts(max_size=20),
)


@given(
    event_id=texts(min_size=1, max_size=40),
    minutes_ago=st.integers(min_value=-60 * 23, max_value=60 * 24 * 6),
    properties=st.dictionaries(
        texts(min_size=1, max_size=10),
        st.one_of(scalars, st.dictionaries(texts(min_size=1, max_size=5), scalars, max_size=3)),
        max_size=10,
    ),
)
def test_any_valid_event_survives_the_wire(
    event_id: str, minutes_ago: int, properties: dict[str, Any]
) -> None:
    raw = good(
        id=event_id,
        time=(NOW - timedelta(minutes=minutes_ago)).isoformat(),
        properties=properties,
    )
    accepted = check(raw)
    assert isinstance(accepted, Accepted), accepted
    assert decode(accepted.value) == accepted.envelope()
    assert encode(accepted.envelope()) == accepted.value
