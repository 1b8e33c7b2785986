"""DingTalk group robot. Signed robots take `timestamp` (ms) and `sign` = base64(HMAC-SHA256
with the secret over `"{timestamp}\\n{secret}"`) as query parameters."""

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

# 130101: sending too fast; 660026: daily quota (try again tomorrow, i.e. later).
_THROTTLED = {130101, 660026}


def sign(secret: str, timestamp_ms: int) -> str:
    message = f"{timestamp_ms}\n{secret}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


def message(payload: Mapping[str, Any], locale: Locale = Locale.en) -> dict[str, Any]:
    title = text.title(payload, locale)
    return {
        "msgtype": "markdown",
        "markdown": {
            "title": title,
            "text": f"### {title}\n{text.body(payload, markdown=True, locale=locale)}",
        },
    }


class DingTalkNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        self.channel = channel
        self._http = http
        self._locale = locale

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        params = None
        if self.channel.secret is not None:
            timestamp = int(time.time() * 1000)
            params = {
                "timestamp": str(timestamp),
                "sign": sign(self.channel.secret.get_secret_value(), timestamp),
            }
        response = await post(
            self._http,
            channel_url(self.channel),
            dumps(message(payload, self._locale)),
            params=params,
        )
        bot_errcode(response, code_keys=("errcode",), throttled=_THROTTLED)
