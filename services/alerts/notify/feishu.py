"""Feishu (Lark) custom bot. Signed bots check `sign` = base64(HMAC-SHA256 with key
`"{timestamp}\\n{secret}"` over an empty message), timestamp in seconds, within an hour."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import httpx

from services.alerts.notify import text
from services.alerts.notify.base import bot_errcode, channel_url, dumps, post
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale

# 9499: too many requests; 11232: message rate limit.
_THROTTLED = {9499, 11232}


def sign(secret: str, timestamp: int) -> str:
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def message(
    payload: Mapping[str, Any], secret: str | None, timestamp: int, locale: Locale = Locale.en
) -> dict[str, Any]:
    content = f"{text.title(payload, locale)}\n{text.body(payload, locale=locale)}"
    out: dict[str, Any] = {"msg_type": "text", "content": {"text": content}}
    if secret:
        out["timestamp"] = str(timestamp)
        out["sign"] = sign(secret, timestamp)
    return out


class FeishuNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        self.channel = channel
        self._http = http
        self._locale = locale

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        secret = self.channel.secret.get_secret_value() if self.channel.secret else None
        body = message(payload, secret, int(time.time()), self._locale)
        response = await post(self._http, channel_url(self.channel), dumps(body))
        bot_errcode(response, code_keys=("code", "StatusCode"), throttled=_THROTTLED)
