"""The body every notifier starts from: Alertmanager's webhook body (version 4), so
anything that reads Alertmanager's webhooks reads ours, plus `idempotencyKey`, each
alert's `value` and, for goals, the goal's pacing in `goal`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.alerts.dispatch import Flush, GroupAlert, GroupState

ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's "no end yet"


def webhook_payload(
    channel: str, group: GroupState, flush: Flush, key: str, external_url: str
) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4) plus `idempotencyKey`, each alert's
    `value` and, for goals, the goal's pacing in `goal`."""
    alerts = [*flush.firing, *flush.resolved]
    common_labels = _common([a.labels for a in alerts])
    common_annotations = _common([a.annotations for a in alerts])
    return {
        "version": "4",
        "groupKey": f"{channel}:{group.group_key}",
        "truncatedAlerts": 0,
        "status": "firing" if flush.firing else "resolved",
        "receiver": channel,
        "groupLabels": dict(group.group_labels),
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url,
        "idempotencyKey": key,
        "alerts": [alert_json(a, external_url) for a in alerts],
    }


def alert_json(alert: GroupAlert, external_url: str) -> dict[str, Any]:
    origin = alert.context.get("origin", "rule")
    name = alert.context.get("name", "")
    out: dict[str, Any] = {
        "status": alert.status.value,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": alert.starts_at.isoformat() if alert.starts_at else ZERO_TIME,
        "endsAt": alert.ends_at.isoformat() if alert.ends_at else ZERO_TIME,
        "generatorURL": f"{external_url}/v1/{origin}s/{name}",
        "fingerprint": alert.fingerprint,
        "episode": alert.episode,
        "value": alert.value,
        "acknowledged": alert.acked,
    }
    if "goal" in alert.context:
        out["goal"] = alert.context["goal"]
    return out


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}
