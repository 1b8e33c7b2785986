"""The body every notifier starts from: Alertmanager's webhook body (version 4), so
anything that reads Alertmanager's webhooks reads ours, plus `idempotencyKey`, each
alert's `value`, for goals the goal's pacing in `goal` and for anomaly rules the usual
band in `band`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.alerts.dispatch import Flush, GroupAlert, GroupState
from services.alerts.store.results import ResultRow

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


def restatement_payload(
    channel: str,
    labels: Mapping[str, str],
    result: ResultRow,
    key: str,
    external_url: str,
    *,
    previous: Mapping[str, Any],
) -> dict[str, Any]:
    """A closed goal period restated by late events, in the same body: one firing alert
    (labels `event="restated"`, the period's start in `period`, so Alertmanager keeps each
    period's restatement apart and lets it expire), the figures in `restatement`."""
    assert result.restated_at is not None
    restatement = {
        "goal": result.goal,
        "kpi": result.kpi,
        "direction": result.direction,
        "period_start": result.period_start.isoformat(),
        "period_end": result.period_end.isoformat(),
        "number": result.restatements,
        "restated_at": result.restated_at.isoformat(),
        "reported": {
            "value": result.reported_value,
            "target": result.reported_target,
            "status": result.reported_status,
            "at": result.reported_at.isoformat(),
        },
        "restated": {"value": result.value, "target": result.target, "status": result.status},
        "previous": dict(previous),
        "delta": result.restated_delta,
        "relative": result.restated_relative,
    }
    alert_labels = {**labels, "period": result.period_start.isoformat()}
    summary = (
        f"goal {result.goal}: {result.kpi} for the period from {result.period_start:%Y-%m-%d}"
        f" restated from {_num(result.reported_value)} ({result.reported_status or 'n/a'})"
        f" to {_num(result.value)} ({result.status or 'n/a'})"
    )
    alert = {
        "status": "firing",
        "labels": alert_labels,
        "annotations": {"summary": summary},
        "startsAt": result.restated_at.isoformat(),
        "endsAt": ZERO_TIME,
        "generatorURL": f"{external_url}/v1/goals/{result.goal}",
        "fingerprint": key,
        "episode": result.restatements,
        "value": result.value,
        "acknowledged": False,
        "restatement": restatement,
    }
    return {
        "version": "4",
        "groupKey": f"{channel}:restated:{result.goal}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": channel,
        "groupLabels": {"alertname": result.goal},
        "commonLabels": alert_labels,
        "commonAnnotations": {"summary": summary},
        "externalURL": external_url,
        "idempotencyKey": key,
        "restatement": restatement,
        "alerts": [alert],
    }


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


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
    if "band" in alert.context:
        out["band"] = alert.context["band"]
    return out


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = dict(maps[0])
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}
