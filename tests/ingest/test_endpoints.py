"""Every answer of the ingest API, produced by real requests on the real broker and database."""

from __future__ import annotations

import asyncio
import base64
import gzip
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.events import MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES
from tests.conftest import Topics
from tests.ingest.conftest import (
    SOURCE,
    LiveServer,
    event,
    make_settings,
    read_topic,
    revoke_key,
)

pytestmark = pytest.mark.integration

NDJSON = {"Content-Type": "application/x-ndjson"}


async def test_one_event_is_acknowledged_and_on_the_topic(
    client: httpx.AsyncClient, ingest_settings: IngestSettings, topics: Topics
) -> None:
    before = datetime.now(UTC)
    response = await client.post("/v1/events", json=event(id="order-1", user_id="u-7"))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1}

    [(key, envelope)] = await read_topic(ingest_settings.kafka_bootstrap, topics.events, 1)
    assert key == f"{SOURCE}\x1fu-7".encode()
    assert envelope.id == "order-1"
    assert envelope.source == SOURCE
    assert before <= envelope.received_at <= datetime.now(UTC)
    assert envelope.properties == {"revenue": 59.9, "channel": "seo"}


async def test_the_source_comes_from_the_key_not_the_body(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=event(source="someone-else"))
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"index": 0, "field": "source", "reason": "unknown field", "code": "invalid"}
    ]


async def test_array_ndjson_and_gzip_bodies(
    client: httpx.AsyncClient, ingest_settings: IngestSettings, topics: Topics
) -> None:
    array = [event(id=f"a{i}", user_id=f"u{i}") for i in range(3)]
    ndjson = b"\n".join(orjson.dumps(event(id=f"n{i}")) for i in range(2)) + b"\n\n"
    zipped = gzip.compress(orjson.dumps([event(id="g0"), event(id="g1")]))

    answers = [
        await client.post("/v1/events", json=array),
        await client.post("/v1/events", content=ndjson, headers=NDJSON),
        await client.post(
            "/v1/events",
            content=zipped,
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ),
    ]
    assert [(a.status_code, a.json()) for a in answers] == [
        (202, {"accepted": 3}),
        (202, {"accepted": 2}),
        (202, {"accepted": 2}),
    ]
    got = await read_topic(ingest_settings.kafka_bootstrap, topics.events, 7)
    assert sorted(envelope.id for _, envelope in got) == ["a0", "a1", "a2", "g0", "g1", "n0", "n1"]
    keys = {envelope.id: key for key, envelope in got}
    assert keys["a2"] == f"{SOURCE}\x1fu2".encode()


async def test_an_empty_batch_accepts_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json=[])
    assert (response.status_code, response.json()) == (202, {"accepted": 0})


# --- 400 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", {"Content-Type": "application/json"}),
        (b"", {"Content-Type": "application/json"}),
        (b'{"id": "1"}\n{oops', NDJSON),
        (b"\x1f\x8b\x08not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"}),
        (gzip.compress(b"[1, 2")[:-6], {"Content-Encoding": "gzip"}),
        (b"[" * 40 + b"]" * 40, {"Content-Type": "application/json"}),
    ],
    ids=["bad-json", "empty", "bad-ndjson-line", "bad-gzip", "truncated-gzip", "too-deep"],
)
async def test_malformed_bodies_get_400(
    client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] in {"bad_json", "bad_encoding"}


# --- 401 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer pk_" + "x" * 43,
        "Bearer not-a-key",
        "Basic " + base64.b64encode(b"pk_" + b"y" * 43 + b":").decode(),
        "Basic !!!",
        "Token abc",
    ],
    ids=["missing", "unknown", "malformed", "basic-unknown", "basic-garbage", "other-scheme"],
)
async def test_missing_or_unknown_keys_get_401(live: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=live) as http:
        response = await http.post("/v1/events", json=event(), headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "Bearer" in response.headers["WWW-Authenticate"]


async def test_a_revoked_key_is_refused_within_ten_seconds(
    client: httpx.AsyncClient, ingest_settings: IngestSettings, api_key: str
) -> None:
    assert (await client.post("/v1/events", json=event())).status_code == 202
    await revoke_key(ingest_settings, api_key)
    revoked_at = time.monotonic()
    while (await client.post("/v1/events", json=event())).status_code == 202:
        assert time.monotonic() - revoked_at < 10, "revocation not seen within 10 s"
        await asyncio.sleep(0.25)
    assert (await client.post("/v1/events", json=event())).status_code == 401


async def test_the_key_also_works_as_basic_user(live: str, api_key: str) -> None:
    async with httpx.AsyncClient(base_url=live, auth=(api_key, "")) as http:
        response = await http.post("/v1/events", json=event())
    assert response.status_code == 202


# --- 413 -----------------------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_gets_413_before_reading(
    client: httpx.AsyncClient,
) -> None:
    body = b"[" + b" " * MAX_REQUEST_BYTES + b"]"
    response = await client.post(
        "/v1/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_a_50_mb_stream_is_cut_off_while_reading(live: str, api_key: str) -> None:
    """Chunked, so no length up front: the server must stop after 512 KiB, not read 50 MB."""
    url = urlsplit(live)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(
        b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nAuthorization: Bearer " + api_key.encode() + b"\r\n\r\n"
    )
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"  # 64 KiB per chunk
    total = 50 * 1024 * 1024
    sent = 0
    response = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        while sent < total and not response.done():
            writer.write(chunk)
            sent += 0x10000
            await writer.drain()
    except ConnectionError:
        pass  # the server closed the connection after answering
    head = await asyncio.wait_for(response, 10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head
    # Socket buffers hold a few MB at most; the rest of the 50 MB was never sent.
    assert sent < 16 * 1024 * 1024


async def test_a_gzip_bomb_gets_413(client: httpx.AsyncClient) -> None:
    bomb = gzip.compress(b"[" + b" " * (64 * 1024 * 1024) + b"]", compresslevel=9)
    assert len(bomb) < MAX_REQUEST_BYTES
    response = await client.post(
        "/v1/events",
        content=bomb,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 413
    assert "decompressed" in response.json()["message"]


async def test_more_than_1000_events_get_413(client: httpx.AsyncClient) -> None:
    small = {"id": "x", "type": "t", "time": "2026-01-01T00:00:00Z"}
    response = await client.post("/v1/events", json=[small] * (MAX_EVENTS_PER_REQUEST + 1))
    assert response.status_code == 413
    assert response.json()["code"] == "too_many_events"


# --- 415 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/csv"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/json; charset=latin-1"},
        {"Content-Type": "application/json", "Content-Encoding": "br"},
    ],
    ids=["csv", "form", "latin-1", "brotli"],
)
async def test_unsupported_types_and_encodings_get_415(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/v1/events", content=orjson.dumps(event()), headers=headers)
    assert response.status_code == 415
    assert response.json()["code"] in {"unsupported_media_type", "unsupported_encoding"}


# --- 422 -----------------------------------------------------------------------------------


async def test_invalid_events_are_named_and_nothing_is_published(
    client: httpx.AsyncClient, ingest_settings: IngestSettings, topics: Topics
) -> None:
    now = datetime.now(UTC)
    batch = [
        event(id="fine"),
        event(id="late", time=(now - timedelta(days=8)).isoformat()),
        event(id="future", time=(now + timedelta(hours=25)).isoformat()),
        event(id="deep", properties={"a": {"b": {"c": 1}}}),
        {"id": "no-type", "time": now.isoformat()},
        "not an object",
        event(id="huge", properties={"blob": "x" * (33 * 1024)}),
        event(id="nul\x00"),  # was a 202, then a dead letter: PostgreSQL cannot store NUL
    ]
    response = await client.post("/v1/events", json=batch)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_events"
    by_index = {error["index"]: error for error in body["errors"]}
    assert sorted(by_index) == [1, 2, 3, 4, 5, 6, 7]
    assert by_index[1]["field"] == "time"
    assert "lateness" in by_index[1]["reason"]
    assert by_index[1]["code"] == "invalid_too_old"
    assert by_index[2]["field"] == "time"
    assert "ahead" in by_index[2]["reason"]
    assert by_index[2]["code"] == "invalid_in_future"
    assert by_index[3]["field"] == "properties.a.b"
    assert by_index[4] == {
        "index": 4,
        "field": "type",
        "reason": "field required",
        "code": "invalid",
    }
    assert by_index[5]["reason"] == "an event must be a JSON object"
    assert "32768" in by_index[6]["reason"]
    assert by_index[6]["code"] == "invalid_too_large"
    assert by_index[7] == {
        "index": 7,
        "field": "id",
        "reason": "text cannot contain NUL (U+0000)",
        "code": "invalid",
    }

    marker = await client.post("/v1/events", json=event(id="marker"))
    assert marker.status_code == 202
    got = await read_topic(ingest_settings.kafka_bootstrap, topics.events, 1)
    assert [envelope.id for _, envelope in got] == ["marker"]


# --- 429 -----------------------------------------------------------------------------------


async def test_over_the_rate_gets_429_with_retry_after(
    service_env: dict[str, str], api_key: str
) -> None:
    settings = make_settings(
        service_env, ingest_rate_per_second=0.5, ingest_rate_burst=MAX_EVENTS_PER_REQUEST
    )
    server = LiveServer(create_app(settings))
    url = server.start()
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}
        ) as http:
            full = await http.post("/v1/events", json=[event() for _ in range(1000)])
            over = await http.post("/v1/events", json=[event() for _ in range(2)])
    finally:
        server.stop()
    assert full.status_code == 202
    assert over.status_code == 429
    assert over.json()["code"] == "rate_limited"
    assert 1 <= int(over.headers["Retry-After"]) <= 5


# --- 503 -----------------------------------------------------------------------------------


async def test_an_unreachable_key_store_gets_503(service_env: dict[str, str], api_key: str) -> None:
    settings = make_settings(
        service_env, database_url="postgresql+psycopg://nobody:x@127.0.0.1:1/nothing"
    )
    server = LiveServer(create_app(settings))
    url = server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post(
                "/v1/events", json=event(), headers={"Authorization": f"Bearer {api_key}"}
            )
    finally:
        server.stop()
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1


# --- everything else -----------------------------------------------------------------------


async def test_health_readiness_and_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=event())
    await client.post("/v1/events", content=b"{", headers={"Content-Type": "application/json"})
    assert (await client.get("/healthz")).json() == {"status": "ok", "service": "ingest"}
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"ready": True, "broker": True})
    metrics = (await client.get("/metrics")).text
    assert 'pacekeeper_ingest_requests_total{route="/v1/events",status="202"}' in metrics
    assert 'pacekeeper_ingest_requests_total{route="/v1/events",status="400"}' in metrics
    assert f'pacekeeper_ingest_events_accepted_total{{source="{SOURCE}"}}' in metrics
    assert 'pacekeeper_ingest_events_rejected_total{reason="bad_json"}' in metrics
    for name in (
        "pacekeeper_ingest_produce_seconds_bucket",
        "pacekeeper_ingest_request_bytes_bucket",
        "pacekeeper_ingest_in_flight_requests",
    ):
        assert name in metrics


async def test_unknown_routes_and_methods(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/events")).status_code == 405
    assert (await client.post("/v2/events", json=event())).status_code == 404


async def _slow_body() -> AsyncIterator[bytes]:
    yield b'{"id": "slow", "type": "t", '
    await asyncio.sleep(0.05)
    yield b'"time": "' + datetime.now(UTC).isoformat().encode() + b'"}'


async def test_a_body_in_pieces_is_read_whole(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", content=_slow_body(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 202, response.text


# --- the official clients ------------------------------------------------------------------


async def test_the_official_segment_client_delivers_unchanged(
    live: str, api_key: str, ingest_settings: IngestSettings, topics: Topics
) -> None:
    from segment.analytics import Client

    failures: list[Exception] = []
    segment = Client(
        write_key=api_key,
        host=live,
        gzip=True,
        max_retries=0,
        on_error=lambda error, batch: failures.append(error),
    )
    segment.track(
        user_id="u-1",
        event="Order Completed",
        properties={"revenue": 59.9, "channel": "seo"},
        message_id="seg-track-1",
    )
    segment.page(
        anonymous_id="a-1", name="Pricing", properties={"path": "/pricing"}, message_id="seg-page-1"
    )
    segment.identify(user_id="u-1", traits={"plan": "pro"}, message_id="seg-identify-1")
    await asyncio.to_thread(segment.flush)
    await asyncio.to_thread(segment.join)
    assert failures == []

    got = {
        e.id: (key, e)
        for key, e in await read_topic(ingest_settings.kafka_bootstrap, topics.events, 3)
    }
    assert set(got) == {"seg-track-1", "seg-page-1", "seg-identify-1"}
    key, track = got["seg-track-1"]
    assert (track.type, track.user_id, track.source) == ("Order Completed", "u-1", SOURCE)
    assert track.properties == {"revenue": 59.9, "channel": "seo"}
    assert key == f"{SOURCE}\x1fu-1".encode()
    _, page = got["seg-page-1"]
    assert (page.type, page.anonymous_id) == ("page_viewed", "a-1")
    assert page.properties == {"path": "/pricing", "name": "Pricing"}
    assert got["seg-identify-1"][1].properties == {"plan": "pro"}


async def test_segment_single_calls_with_the_write_key_as_basic_user(
    live: str, api_key: str
) -> None:
    async with httpx.AsyncClient(base_url=live, auth=(api_key, "")) as http:
        track = await http.post(
            "/v1/track", json={"messageId": "t-1", "event": "Signed Up", "userId": "u"}
        )
        bad = await http.post("/v1/identify", json={"userId": "u", "traits": {"a": {"b": {}}}})
    assert (track.status_code, track.json()) == (202, {"accepted": 1})
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"messageId", "traits.a.b"}


async def test_cloudevents_sdk_structured_batch_and_binary(
    client: httpx.AsyncClient, ingest_settings: IngestSettings, topics: Topics
) -> None:
    from cloudevents.core.bindings.http import to_binary_event, to_structured_event
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    def cloudevent(event_id: str, **data: object) -> CloudEvent:
        attributes = {"id": event_id, "type": "order_completed", "source": "/shop", "userid": "u-9"}
        return CloudEvent(attributes=attributes, data=data)

    structured = to_structured_event(cloudevent("ce-1", revenue=5))
    binary = to_binary_event(cloudevent("ce-2", revenue=6))
    batch = b"[" + b",".join(JSONFormat().write(cloudevent(f"ce-{i}")) for i in (3, 4)) + b"]"

    answers = [
        await client.post("/v1/events", content=structured.body, headers=structured.headers),
        await client.post("/v1/events", content=binary.body, headers=binary.headers),
        await client.post(
            "/v1/events",
            content=batch,
            headers={"Content-Type": "application/cloudevents-batch+json"},
        ),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    got = {e.id: e for _, e in await read_topic(ingest_settings.kafka_bootstrap, topics.events, 4)}
    assert set(got) == {"ce-1", "ce-2", "ce-3", "ce-4"}
    assert got["ce-1"].properties == {"revenue": 5}
    assert got["ce-2"].properties == {"revenue": 6}
    assert (got["ce-2"].type, got["ce-2"].user_id) == ("order_completed", "u-9")
