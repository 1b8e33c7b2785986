"""Generic webhook: Alertmanager's webhook body (plus goal context), signed with HMAC-SHA256.

`X-Pacekeeper-Signature: sha256=<hex>` is the HMAC of the exact body bytes with the
channel's secret, as GitHub's `X-Hub-Signature-256`. `Idempotency-Key` (also in the body as
`idempotencyKey`) is the same on every retry of one notification: a receiver that keeps the
keys it has seen gets each notification exactly once, even after a crash made us resend.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import httpx

from services.alerts.notify.base import IDEMPOTENCY_HEADER, channel_url, dumps, post
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale

SIGNATURE_HEADER = "X-Pacekeeper-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


class WebhookNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        # Machine-readable (Alertmanager's own shapes): the same in every locale.
        self.channel = channel
        self._http = http

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        body = dumps(payload)
        headers = {IDEMPOTENCY_HEADER: key}
        if self.channel.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.channel.secret.get_secret_value(), body)
        await post(self._http, channel_url(self.channel), body, headers=headers)
