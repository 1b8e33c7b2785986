"""The webhook receiver accepts only correctly signed deliveries and summarises them."""

from __future__ import annotations

import httpx
import orjson
import pytest

from services.demo.receiver import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    Delivery,
    WebhookReceiver,
    sign,
    summarize,
    verify_signature,
)

pytestmark = pytest.mark.unit

SECRET = "s3cret"
PAYLOAD = {
    "version": "4",
    "status": "firing",
    "receiver": "ops",
    "groupLabels": {"alertname": "checkout-conversion-collapse"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "checkout-conversion-collapse", "severity": "page"},
            "annotations": {"summary": "Checkout conversion under 1%"},
            "startsAt": "2026-11-27T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
        }
    ],
}


def test_signature_forms() -> None:
    body = orjson.dumps(PAYLOAD)
    header = sign(SECRET, body)
    assert header.startswith("sha256=")
    assert verify_signature(SECRET, body, header)
    assert verify_signature(SECRET, body, header.removeprefix("sha256=").upper())
    assert not verify_signature("other", body, header)
    assert not verify_signature(SECRET, body + b" ", header)
    assert not verify_signature(SECRET, body, None)
    stamped = sign(SECRET, b"1700000000." + body)
    assert verify_signature(SECRET, body, stamped, "1700000000")


def test_summary_of_an_alertmanager_payload() -> None:
    status, notes = summarize(PAYLOAD)
    assert status == "firing"
    assert [(n.name, n.status, n.severity) for n in notes] == [
        ("checkout-conversion-collapse", "firing", "page")
    ]
    assert summarize("not a payload") == ("unknown", ())


async def test_receiver_checks_the_signature_of_each_delivery() -> None:
    seen: list[Delivery] = []
    receiver = WebhookReceiver(SECRET, port=0, on_delivery=seen.append)
    body = orjson.dumps(PAYLOAD)
    transport = httpx.ASGITransport(app=receiver.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        good = await client.post(
            "/hook", content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
        )
        bad = await client.post("/hook", content=body, headers={SIGNATURE_HEADER: sign("x", body)})
        unsigned = await client.post("/hook", content=body)
    assert good.status_code == 200
    assert bad.status_code == 401
    assert unsigned.status_code == 401
    assert [d.verified for d in seen] == [True, False, False]
    assert "FIRING [page] checkout-conversion-collapse" in seen[0].line()
    assert "signature ok" in seen[0].line()
    assert "BAD SIGNATURE" in seen[1].line()


async def test_a_retried_notification_is_acted_on_once() -> None:
    receiver = WebhookReceiver(SECRET, port=0)
    body = orjson.dumps(PAYLOAD)
    headers = {SIGNATURE_HEADER: sign(SECRET, body), IDEMPOTENCY_HEADER: "ops:g1:1"}
    transport = httpx.ASGITransport(app=receiver.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        for _ in range(2):
            assert (await client.post("/hook", content=body, headers=headers)).status_code == 200
    assert [d.repeat for d in receiver.deliveries] == [False, True]
    assert "a repeat: ignored" in receiver.deliveries[1].line()


async def test_receiver_serves_on_loopback_and_stops() -> None:
    receiver = WebhookReceiver(SECRET, port=0)
    await receiver.start()
    try:
        assert receiver.port != 0
        body = orjson.dumps(PAYLOAD)
        async with httpx.AsyncClient() as client:
            response = await client.post(
                receiver.url, content=body, headers={SIGNATURE_HEADER: sign(SECRET, body)}
            )
        assert response.status_code == 200
        assert len(receiver.deliveries) == 1
    finally:
        await receiver.stop()
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.post(receiver.url, content=b"{}")
