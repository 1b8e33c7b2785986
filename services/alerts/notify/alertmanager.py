"""Alertmanager v2: `POST /api/v2/alerts`, so routing to PagerDuty/Opsgenie stays there.

Alertmanager dedupes by labels, so a resend is harmless. A firing alert carries an
`endsAt` a few repeat intervals ahead, as Prometheus does: we re-send while it fires, and
if we stop (crash, deleted rule) Alertmanager resolves it on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from services.alerts.notify.base import channel_url, dumps, post
from shared.config.alerting import ChannelSpec
from shared.i18n import Locale

RESEND_FACTOR = 4


def alerts(channel: ChannelSpec, payload: Mapping[str, Any], now: datetime) -> list[dict[str, Any]]:
    valid_until = (now + RESEND_FACTOR * channel.effective_repeat_interval).isoformat()
    out = []
    for alert in payload.get("alerts", []):
        firing = alert.get("status") == "firing"
        annotations = dict(alert.get("annotations", {}))
        if alert.get("value") is not None:
            annotations.setdefault("value", f"{alert['value']:.6g}")
        out.append(
            {
                "labels": alert.get("labels", {}),
                "annotations": annotations,
                "startsAt": alert.get("startsAt"),
                "endsAt": valid_until if firing else alert.get("endsAt"),
                "generatorURL": alert.get("generatorURL", ""),
            }
        )
    return out


class AlertmanagerNotifier:
    def __init__(
        self, channel: ChannelSpec, http: httpx.AsyncClient, locale: Locale = Locale.en
    ) -> None:
        # Machine-readable (Alertmanager's own shapes): the same in every locale.
        self.channel = channel
        self._http = http

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        url = channel_url(self.channel).rstrip("/") + "/api/v2/alerts"
        body = alerts(self.channel, payload, datetime.now(UTC))
        await post(self._http, url, dumps(body))
