"""Slack incoming webhook: one mrkdwn message per notification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from services.alerts.notify import text
from services.alerts.notify.base import channel_url, dumps, post
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale


def message(payload: Mapping[str, Any], locale: Locale = Locale.en) -> dict[str, Any]:
    color = "danger" if payload.get("status") == "firing" else "good"
    content = text.body(payload, markdown=True, locale=locale)
    return {
        "text": text.title(payload, locale),
        "attachments": [{"color": color, "text": content, "mrkdwn_in": ["text"]}],
    }


class SlackNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        self.channel = channel
        self._http = http
        self._locale = locale

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        # Slack has no idempotency key; a resend after a crash can show twice (documented).
        await post(self._http, channel_url(self.channel), dumps(message(payload, self._locale)))
