"""WeCom (WeChat Work) group robot. Its scheme is the secret `key` in the webhook URL
(`.../cgi-bin/webhook/send?key=...`); there is no request signature to add."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from services.alerts.notify import text
from services.alerts.notify.base import bot_errcode, channel_url, dumps, post
from shared.config.alerting import ChannelSpec

# 45009: API frequency limit (20 messages per minute per robot).
_THROTTLED = {45009}
# WeCom rejects markdown content over 4096 bytes.
_MAX_BYTES = 4096


def message(payload: Mapping[str, Any]) -> dict[str, Any]:
    content = f"**{text.title(payload)}**\n{text.body(payload, markdown=True)}"
    encoded = content.encode()
    if len(encoded) > _MAX_BYTES:
        content = encoded[: _MAX_BYTES - 3].decode(errors="ignore") + "..."
    return {"msgtype": "markdown", "markdown": {"content": content}}


class WeComNotifier:
    def __init__(self, channel: ChannelSpec, http: httpx.AsyncClient) -> None:
        self.channel = channel
        self._http = http

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        response = await post(self._http, channel_url(self.channel), dumps(message(payload)))
        bot_errcode(response, code_keys=("errcode",), throttled=_THROTTLED)
