"""Body reading, decoding and the Segment / CloudEvents mappings: pure, no infrastructure."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.ingest import parsing
from services.ingest.parsing import Format, Rejection
from shared.events import Envelope, TimePolicy

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def _validate(
    candidates: list[parsing.Candidate],
) -> tuple[list[Envelope], list[dict[str, object]]]:
    accepted, errors = parsing.validate(
        candidates, source="web-shop", received_at=NOW, policy=TimePolicy()
    )
    return [a.envelope() for a in accepted], [error.as_dict() for error in errors]


async def _stream(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _endless(consumed: list[int]) -> AsyncIterator[bytes]:
    chunk = b" " * 65536
    while True:
        consumed[0] += len(chunk)
        yield chunk


# --- reading -------------------------------------------------------------------------------


async def test_read_body_joins_chunks() -> None:
    body = await parsing.read_body(
        _stream(b"ab", b"cd"), content_length=None, content_encoding=None, limit=10
    )
    assert body == b"abcd"


async def test_read_body_stops_an_endless_stream_right_after_the_limit() -> None:
    consumed = [0]
    with pytest.raises(Rejection) as caught:
        await parsing.read_body(
            _endless(consumed), content_length=None, content_encoding=None, limit=512 * 1024
        )
    assert caught.value.status == 413
    assert consumed[0] <= 512 * 1024 + 65536


async def test_read_body_trusts_a_large_declared_length_without_reading() -> None:
    consumed = [0]
    with pytest.raises(Rejection) as caught:
        await parsing.read_body(
            _endless(consumed), content_length="52428800", content_encoding=None, limit=1024
        )
    assert (caught.value.status, consumed[0]) == (413, 0)


async def test_read_body_refuses_unknown_encodings() -> None:
    with pytest.raises(Rejection) as caught:
        await parsing.read_body(_stream(b"x"), content_length=None, content_encoding="br", limit=9)
    assert caught.value.status == 415


async def test_read_body_gunzips() -> None:
    body = await parsing.read_body(
        _stream(gzip.compress(b"[1,2,3]")), content_length=None, content_encoding="gzip", limit=99
    )
    assert body == b"[1,2,3]"


def test_gunzip_limits_the_output_not_only_the_input() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(Rejection) as caught:
        parsing.gunzip(bomb, 512 * 1024)
    assert caught.value.status == 413


def test_gunzip_at_exactly_the_limit_passes() -> None:
    assert parsing.gunzip(gzip.compress(b"x" * 100), 100) == b"x" * 100


def test_gunzip_reads_every_member() -> None:
    assert parsing.gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 100) == b"abcd"


def test_gunzip_refuses_a_flood_of_members() -> None:
    """26,214 empty members took 0.4 s of event-loop CPU before the cap."""
    at_cap = gzip.compress(b"") * parsing.MAX_GZIP_MEMBERS
    assert parsing.gunzip(at_cap, 100) == b""
    with pytest.raises(parsing.Rejection) as refused:
        parsing.gunzip(at_cap + gzip.compress(b""), 100)
    assert refused.value.status == 400
    assert "gzip members" in refused.value.message


@pytest.mark.parametrize(
    "data", [b"not gzip at all", gzip.compress(b"abc")[:-4]], ids=["garbage", "truncated"]
)
def test_gunzip_refuses_broken_input_with_400(data: bytes) -> None:
    with pytest.raises(Rejection) as caught:
        parsing.gunzip(data, 100)
    assert caught.value.status == 400


# --- content types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        (None, Format.EVENTS),
        ("application/json", Format.EVENTS),
        ("Application/JSON; charset=UTF-8", Format.EVENTS),
        ("application/x-ndjson", Format.NDJSON),
        ("application/cloudevents+json; charset=utf-8", Format.CLOUDEVENT),
        ("application/cloudevents-batch+json", Format.CLOUDEVENTS_BATCH),
    ],
)
def test_events_format(content_type: str | None, expected: Format) -> None:
    assert parsing.events_format(content_type) is expected


def test_cloudevent_headers_select_binary_mode() -> None:
    assert parsing.events_format("application/json", cloudevent_headers=True) is (
        Format.CLOUDEVENT_BINARY
    )


@pytest.mark.parametrize(
    "content_type", ["text/csv", "multipart/form-data", "application/json; charset=latin-1"]
)
def test_other_types_are_415(content_type: str) -> None:
    with pytest.raises(Rejection) as caught:
        parsing.events_format(content_type)
    assert caught.value.status == 415


def test_segment_accepts_text_plain_as_analytics_js_sends_it() -> None:
    assert parsing.segment_format("text/plain", batch=False) is Format.SEGMENT
    with pytest.raises(Rejection):
        parsing.segment_format("application/x-ndjson", batch=True)


# --- our own shape -------------------------------------------------------------------------


def test_one_object_an_array_and_ndjson() -> None:
    one = {"id": "1", "type": "t", "time": NOW.isoformat()}
    assert [c.raw for c in parsing.parse_events(orjson.dumps(one))] == [one]
    assert len(parsing.parse_events(orjson.dumps([one, one]))) == 2
    ndjson = b"\n" + orjson.dumps(one) + b"\r\n\n" + orjson.dumps(one)
    assert len(parsing.parse_ndjson(ndjson)) == 2


def test_bad_ndjson_names_the_line() -> None:
    with pytest.raises(Rejection) as caught:
        parsing.parse_ndjson(b'{"id": 1}\n\n{nope')
    assert (caught.value.status, "line 3" in caught.value.message) == (400, True)


def test_too_many_events_is_413() -> None:
    with pytest.raises(Rejection) as caught:
        parsing.parse_events(orjson.dumps([{}] * 1001))
    assert caught.value.status == 413
    with pytest.raises(Rejection):
        parsing.parse_ndjson(b"{}\n" * 1001)


def test_nesting_is_bounded() -> None:
    parsing.parse_events(b"[" * 16 + b"]" * 16)
    with pytest.raises(Rejection) as caught:
        parsing.parse_events(b"[" * 17 + b"]" * 17)
    assert caught.value.code == "bad_json"
    # Brackets inside strings are not nesting.
    parsing.parse_events(orjson.dumps({"id": "[" * 50}))


def test_valid_events_become_envelopes_with_the_keys_source() -> None:
    raw = {"id": "1", "type": "order_completed", "time": NOW.isoformat(), "user_id": "u"}
    envelopes, errors = _validate(parsing.parse_events(orjson.dumps(raw)))
    assert errors == []
    [envelope] = envelopes
    assert (envelope.source, envelope.received_at, envelope.user_id) == ("web-shop", NOW, "u")


def test_every_bad_event_is_named() -> None:
    good = {"id": "1", "type": "t", "time": NOW.isoformat()}
    old = {**good, "time": (NOW - timedelta(days=8)).isoformat()}
    _, errors = _validate(parsing.parse_events(orjson.dumps([good, old, 5, {**good, "x": 1}])))
    assert [(e["index"], e["field"]) for e in errors] == [(1, "time"), (2, ""), (3, "x")]


# --- Segment -------------------------------------------------------------------------------


def _segment(**fields: object) -> dict[str, object]:
    return {"messageId": "m-1", "timestamp": NOW.isoformat(), "userId": "u-1", **fields}


def test_segment_track_maps_onto_our_shape() -> None:
    message = _segment(event="Order Completed", properties={"revenue": 10}, context={"ip": "x"})
    [candidate] = parsing.parse_segment(orjson.dumps(message), call="track", received_at=NOW)
    envelopes, errors = _validate([candidate])
    assert errors == []
    [envelope] = envelopes
    assert (envelope.id, envelope.type, envelope.user_id) == ("m-1", "Order Completed", "u-1")
    assert envelope.properties == {"revenue": 10}


@pytest.mark.parametrize(
    ("call", "fields", "event_type", "properties"),
    [
        ("page", {"name": "Home", "properties": {"path": "/"}}, "page_viewed",
         {"path": "/", "name": "Home"}),
        ("screen", {"name": "Cart"}, "screen_viewed", {"name": "Cart"}),
        ("identify", {"traits": {"plan": "pro"}}, "user_identified", {"plan": "pro"}),
        ("group", {"groupId": 42, "traits": {"size": 9}}, "group_joined",
         {"size": 9, "group_id": "42"}),
        ("alias", {"previousId": "a-1"}, "user_aliased", {"previous_id": "a-1"}),
    ],
)  # fmt: skip
def test_other_segment_calls(
    call: str, fields: dict[str, object], event_type: str, properties: dict[str, object]
) -> None:
    [candidate] = parsing.parse_segment(
        orjson.dumps(_segment(**fields)), call=call, received_at=NOW
    )
    [envelope], errors = _validate([candidate])
    assert (envelope.type, envelope.properties, errors) == (event_type, properties, [])


def test_segment_batch_with_mixed_calls_and_numeric_ids() -> None:
    body = {
        "batch": [
            _segment(type="track", event="A", userId=7),
            _segment(type="identify", messageId="m-2", traits={"x": 1}),
            _segment(type="nonsense", messageId="m-3"),
            {"type": "track", "timestamp": NOW.isoformat(), "userId": "u"},
        ],
        "sentAt": NOW.isoformat(),
        "writeKey": "ignored",
    }
    candidates = parsing.parse_segment_batch(orjson.dumps(body), received_at=NOW)
    envelopes, errors = _validate(candidates)
    assert envelopes == []  # all or nothing: the good ones are not returned as accepted
    assert {(e["index"], e["field"]) for e in errors} == {
        (2, "type"),
        (3, "messageId"),
        (3, "event"),
    }


def test_segment_without_timestamp_happened_when_received() -> None:
    message = {"messageId": "m", "event": "E", "anonymousId": "a"}
    [candidate] = parsing.parse_segment(orjson.dumps(message), call="track", received_at=NOW)
    [envelope], _ = _validate([candidate])
    assert envelope.time == NOW


def test_segment_errors_use_segment_names() -> None:
    message = _segment(event="E", traits={"deep": {"er": {"x": 1}}}, userId=["list"])
    [candidate] = parsing.parse_segment(orjson.dumps(message), call="identify", received_at=NOW)
    _, errors = _validate([candidate])
    assert {e["field"] for e in errors} == {"traits.deep.er", "userId"}


@pytest.mark.parametrize("body", [b"[]", b'{"batch": 5}', b"{}"])
def test_a_segment_batch_must_be_an_object_with_a_list(body: bytes) -> None:
    with pytest.raises(Rejection) as caught:
        parsing.parse_segment_batch(body, received_at=NOW)
    assert caught.value.status == 400


# --- CloudEvents ---------------------------------------------------------------------------


def _cloudevent(**fields: object) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/shop",
        "type": "com.example.order.completed",
        "time": NOW.isoformat(),
        "datacontenttype": "application/json",
        "data": {"revenue": 5},
        "userid": "u-1",
        **fields,
    }


def test_cloudevent_maps_data_to_properties_and_extensions_to_the_actor() -> None:
    [candidate] = parsing.parse_cloudevent(orjson.dumps(_cloudevent()), received_at=NOW)
    [envelope], errors = _validate([candidate])
    assert errors == []
    assert (envelope.id, envelope.type, envelope.user_id) == (
        "ce-1",
        "com.example.order.completed",
        "u-1",
    )
    assert envelope.properties == {"revenue": 5}


def test_cloudevents_batch_and_its_errors() -> None:
    batch = [
        _cloudevent(),
        _cloudevent(specversion="0.3"),
        _cloudevent(data="text", datacontenttype="text/plain"),
        {k: v for k, v in _cloudevent().items() if k != "source"},
        _cloudevent(data=None, data_base64="AAAA"),
    ]
    candidates = parsing.parse_cloudevents_batch(orjson.dumps(batch), received_at=NOW)
    _, errors = _validate(candidates)
    assert {(e["index"], e["field"]) for e in errors} == {
        (1, "specversion"),
        (2, "datacontenttype"),
        (2, "data"),
        (3, "source"),
        (4, "data_base64"),
    }


def test_cloudevent_binary_mode_reads_attributes_from_headers() -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "b-1",
        "ce-source": "%2Fshop",
        "ce-type": "page_viewed",
        "ce-anonymousid": "a-1",
        "content-type": "application/json",
    }
    [candidate] = parsing.parse_cloudevent_binary(
        b'{"path": "/"}',
        parsing.cloudevent_attributes(headers),
        content_type="application/json",
        received_at=NOW,
    )
    [envelope], errors = _validate([candidate])
    assert (envelope.id, envelope.anonymous_id, envelope.time, errors) == ("b-1", "a-1", NOW, [])


def test_a_cloudevents_batch_must_be_an_array() -> None:
    with pytest.raises(Rejection) as caught:
        parsing.parse_cloudevents_batch(orjson.dumps(_cloudevent()), received_at=NOW)
    assert caught.value.status == 400
