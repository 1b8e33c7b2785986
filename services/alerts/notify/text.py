"""Plain-text and Markdown renderings of a notification, for chat bots and email."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def title(payload: Mapping[str, Any]) -> str:
    firing = sum(1 for a in payload.get("alerts", []) if a.get("status") == "firing")
    resolved = len(payload.get("alerts", [])) - firing
    labels = payload.get("groupLabels") or {}
    name = labels.get("alertname") or ", ".join(f"{k}={v}" for k, v in labels.items())
    parts = []
    if firing:
        parts.append(f"FIRING:{firing}")
    if resolved:
        parts.append(f"RESOLVED:{resolved}")
    return f"[{' '.join(parts)}] {name}".strip()


def _alert_line(alert: Mapping[str, Any], *, markdown: bool) -> str:
    labels = alert.get("labels", {})
    annotations = alert.get("annotations", {})
    summary = annotations.get("summary") or labels.get("alertname", "")
    extra = {k: v for k, v in labels.items() if k not in ("alertname",)}
    status = alert.get("status", "")
    value = alert.get("value")
    head = f"**{status}** {summary}" if markdown else f"{status.upper()} {summary}"
    line = f"- {head}"
    if value is not None:
        line += f" (value {value:.6g})"
    if extra:
        line += " " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    goal = alert.get("goal")
    if goal:
        line += (
            f"\n  goal {goal.get('name')}: {goal.get('status')}, value {goal.get('value')},"
            f" expected {goal.get('expected')}, target {goal.get('target')},"
            f" projection {goal.get('projection')}"
        )
        drivers = goal.get("contributors") or []
        if drivers:
            line += "\n  most behind: " + ", ".join(
                f"{d['dims']} ({d['delta']:+.6g})" for d in drivers
            )
    description = annotations.get("description")
    if description:
        line += f"\n  {description}"
    return line


def body(payload: Mapping[str, Any], *, markdown: bool = False) -> str:
    lines = [_alert_line(a, markdown=markdown) for a in payload.get("alerts", [])]
    link = payload.get("externalURL")
    if link:
        lines.append(f"{link}/v1/alerts")
    return "\n".join(lines)
