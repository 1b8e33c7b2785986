"""Notifier formats, signatures and the retryable classification (no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.alerts.notify import alertmanager, dingtalk, email, feishu, slack, webhook, wecom
from services.alerts.notify.base import NotifyError, bot_errcode, check_response, retryable_status
from shared.config.alerting import ChannelSpec

pytestmark = pytest.mark.unit

PAYLOAD = {
    "status": "firing",
    "groupLabels": {"alertname": "orders-drop"},
    "externalURL": "http://alerts",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "orders-drop", "source": "web"},
            "annotations": {"summary": "orders fell"},
            "startsAt": "2027-01-01T00:00:00+00:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "value": 3.0,
            "goal": {
                "name": "g",
                "status": "at_risk",
                "value": 1,
                "expected": 2,
                "target": 3,
                "projection": 2,
                "contributors": [{"dims": {"source": "web"}, "delta": -4.0}],
            },
        },
        {"status": "resolved", "labels": {"alertname": "orders-drop"}, "annotations": {}},
    ],
}


def channel(**kw: object) -> ChannelSpec:
    return ChannelSpec.model_validate({"name": "c", "type": "webhook", "url": "http://h/", **kw})


def test_webhook_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"a":1}'
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert webhook.sign("s3cret", body) == expected
    assert webhook.verify("s3cret", body, expected)
    assert not webhook.verify("other", body, expected)


def test_dingtalk_and_feishu_signatures() -> None:
    ts = 1700000000000
    key = hmac.new(b"sec", f"{ts}\nsec".encode(), hashlib.sha256).digest()
    assert dingtalk.sign("sec", ts) == base64.b64encode(key).decode()
    feishu_digest = hmac.new(f"{1700000000}\nsec".encode(), b"", hashlib.sha256).digest()
    assert feishu.sign("sec", 1700000000) == base64.b64encode(feishu_digest).decode()
    signed = feishu.message(PAYLOAD, "sec", 1700000000)
    assert signed["timestamp"] == "1700000000"
    assert "sign" in signed
    assert "sign" not in feishu.message(PAYLOAD, None, 1700000000)


def test_chat_messages_carry_the_alerts() -> None:
    text = slack.message(PAYLOAD)["attachments"][0]["text"]
    assert "orders fell" in text
    assert "value 3" in text
    assert "most behind" in text
    assert slack.message(PAYLOAD)["text"] == "[FIRING:1 RESOLVED:1] orders-drop"
    assert "orders fell" in dingtalk.message(PAYLOAD)["markdown"]["text"]
    assert wecom.message(PAYLOAD)["msgtype"] == "markdown"
    huge = {**PAYLOAD, "alerts": PAYLOAD["alerts"] * 200}
    assert len(wecom.message(huge)["markdown"]["content"].encode()) <= 4096


def test_email_message() -> None:
    spec = ChannelSpec.model_validate(
        {"name": "mail", "type": "email", "to": ["ops@example.com"], "smtp_host": "smtp.local"}
    )
    msg = email.message(spec, PAYLOAD, "k1")
    assert msg["To"] == "ops@example.com"
    assert msg["Message-ID"] == "<k1@pacekeeper>"
    assert "orders fell" in msg.get_content()


def test_alertmanager_alerts_keep_firing_ones_alive_a_few_repeats() -> None:
    now = datetime(2027, 1, 1, tzinfo=UTC)
    spec = channel(type="alertmanager")
    out = alertmanager.alerts(spec, PAYLOAD, now)
    assert out[0]["endsAt"] == (now + timedelta(minutes=4)).isoformat()
    assert out[0]["annotations"]["value"] == "3"
    assert out[1]["labels"] == {"alertname": "orders-drop"}


def test_retryable_classification() -> None:
    assert retryable_status(500)
    assert retryable_status(503)
    assert retryable_status(429)
    assert not retryable_status(400)
    assert not retryable_status(404)
    with pytest.raises(NotifyError) as err:
        check_response(httpx.Response(500, text="boom"))
    assert err.value.retryable
    assert err.value.http_status == 500
    with pytest.raises(NotifyError) as err:
        bot_errcode(
            httpx.Response(200, json={"errcode": 45009, "errmsg": "limit"}),
            code_keys=("errcode",),
            throttled={45009},
        )
    assert err.value.retryable
    bot_errcode(httpx.Response(200, json={"errcode": 0}), code_keys=("errcode",), throttled=set())
