"""The fast decoder agrees with shared.events.decode (pydantic) on every input."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.aggregator.records import decode_event, from_envelope
from shared.events import PoisonMessage, decode

pytestmark = pytest.mark.unit

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(
        st.text(max_size=3),
        st.one_of(
            scalars,
            st.lists(scalars, max_size=2),
            st.dictionaries(st.text(max_size=2), scalars, max_size=2),
        ),
        max_size=3,
    ),
)
times = st.one_of(
    st.sampled_from(
        [
            "2026-11-27T10:00:00Z",
            "2026-11-27T10:00:00.123456Z",
            "2026-11-27T10:00:00+08:00",
            "2026-11-27T10:00:00",
            "2026-11-27T10:00:00.1234567Z",
            "2026-11-27",
            "20261127T100000Z",
            "2026-13-27T10:00:00Z",
            "2026-11-27T10:00:00+00:00",
            "not a time",
        ]
    ),
    st.integers(0, 2_000_000_000),
)


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": draw(
            st.one_of(st.text(min_size=0, max_size=4), st.just("x" * 129), st.integers(0, 9))
        ),
        "type": draw(st.sampled_from(["order_completed", "a b", "-bad", "x\n", "", "ok.type/1"])),
        "source": draw(st.sampled_from(["web-shop", "Web", "a" * 65, "app_1", "x\n"])),
        "time": draw(times),
        "received_at": draw(times),
        "user_id": draw(st.one_of(st.none(), st.text(max_size=3), st.integers(0, 9))),
        "properties": draw(
            st.one_of(
                st.dictionaries(st.text(max_size=4), values, max_size=4),
                st.lists(st.integers(0, 9), max_size=1),
            )
        ),
    }
    for key in draw(st.sets(st.sampled_from(sorted(data)), max_size=2)):
        del data[key]
    if draw(st.integers(0, 9)) == 0:
        data["extra"] = 1
    return data


def _outcome(decoder: Any, raw: bytes) -> Any:
    try:
        return decoder(raw)
    except PoisonMessage:
        return "poison"


@settings(max_examples=600, deadline=None)
@given(envelopes())
def test_fast_path_agrees_with_pydantic(data: dict[str, Any]) -> None:
    raw = orjson.dumps(data)
    fast = _outcome(decode_event, raw)
    slow = _outcome(lambda v: from_envelope(decode(v)), raw)
    if slow == "poison" and fast != "poison":
        # Only the NUL check may refuse what pydantic accepts, never the other way round.
        pytest.fail(f"fast path accepted what pydantic refuses: {data}")
    if fast == "poison":
        assert slow == "poison" or "\x00" in raw.decode("utf-8", "replace") or b"\\u0000" in raw
    else:
        assert fast == slow


def test_nul_characters_are_poison_with_a_reason() -> None:
    raw = orjson.dumps(
        {
            "id": "1",
            "type": "t",
            "source": "s",
            "time": "2026-11-27T10:00:00Z",
            "received_at": "2026-11-27T10:00:00Z",
            "properties": {"k": "a\x00b"},
        }
    )
    with pytest.raises(PoisonMessage, match="NUL"):
        decode_event(raw)
    assert decode_event(raw.replace(b"\\u0000", b"\\\\u0000")).properties == {"k": "a\\u0000b"}


@pytest.mark.parametrize("raw", [None, b"", b"{", b"[]", b'{"id": "1"}'])
def test_garbage_is_poison(raw: bytes | None) -> None:
    with pytest.raises(PoisonMessage):
        decode_event(raw)


def test_a_typical_event_takes_the_fast_path_and_matches_pydantic() -> None:
    raw = orjson.dumps(
        {
            "id": "o-1",
            "type": "order_completed",
            "source": "web-shop",
            "time": "2026-11-27T10:00:00.5+08:00",
            "user_id": "u-1",
            "anonymous_id": None,
            "properties": {"revenue": 59.9, "tags": ["a", 1], "ctx": {"k": "v"}},
            "received_at": "2026-11-27T02:00:01Z",
        }
    )
    event = decode_event(raw)
    assert event == from_envelope(decode(raw))
    assert event.time.isoformat() == "2026-11-27T02:00:00.500000+00:00"
    assert event.minute == event.ts // 60_000_000
