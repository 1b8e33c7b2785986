"""WeCom (WeChat Work) group robot. Its scheme is the secret `key` in the webhook URL
(`.../cgi-bin/webhook/send?key=...`); there is no request signature to add."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from services.alerts.notify import text
from services.alerts.notify.base import bot_errcode, channel_url, dumps, post
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale

# 45009: API frequency limit (20 messages per minute per robot).
_THROTTLED = {45009}
# WeCom rejects markdown content over 4096 bytes.
_MAX_BYTES = 4096


def message(payload: Mapping[str, Any], locale: Locale = Locale.en) -> dict[str, Any]:
    title = text.title(payload, locale)
    content = f"**{title}**\n{text.body(payload, markdown=True, locale=locale)}"
    encoded = content.encode()
    if len(encoded) > _MAX_BYTES:
        content = encoded[: _MAX_BYTES - 3].decode(errors="ignore") + "..."
    return {"msgtype": "markdown", "markdown": {"content": content}}


class WeComNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        self.channel = channel
        self._http = http
        self._locale = locale

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        response = await post(
            self._http, channel_url(self.channel), dumps(message(payload, self._locale))
        )
        bot_errcode(response, code_keys=("errcode",), throttled=_THROTTLED)
