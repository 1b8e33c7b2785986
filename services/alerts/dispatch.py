"""Dispatch: route alerts to channels, group them, and decide when a group is notified.

As Alertmanager's dispatcher and dedup stage: a new group waits `group_wait` so that alerts
breaking together arrive in one notification; a changed group waits `group_interval` after
its last notification; an unchanged group that still fires is repeated every
`repeat_interval` unless every firing alert in it is acknowledged. A group remembers which
(fingerprint, episode) it last showed firing: that is what makes each resolve go out once,
and never for an alert whose firing was never shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.config.alerting import ChannelSpec

Key = tuple[str, int]  # (fingerprint, episode)


class Status(StrEnum):
    firing = "firing"
    resolved = "resolved"


@dataclass(frozen=True, slots=True)
class GroupAlert:
    fingerprint: str
    episode: int
    status: Status
    labels: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    value: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    silenced: bool = False
    acked: bool = False

    @property
    def key(self) -> Key:
        return (self.fingerprint, self.episode)


@dataclass(frozen=True, slots=True)
class Timing:
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    send_resolved: bool = True

    @classmethod
    def of(cls, channel: ChannelSpec) -> Timing:
        return cls(
            channel.group_wait,
            channel.group_interval,
            channel.effective_repeat_interval,
            channel.send_resolved,
        )


@dataclass(frozen=True, slots=True)
class GroupState:
    channel: str
    group_key: str
    group_labels: Mapping[str, str]
    created_at: datetime
    last_flush_at: datetime | None = None
    notified: frozenset[Key] = frozenset()
    seq: int = 0


class Reason(StrEnum):
    first = "first"
    changed = "changed"
    repeat = "repeat"


@dataclass(frozen=True, slots=True)
class Flush:
    """What a due group does now: send `firing` + `resolved` (if `send`) and remember
    `notified` as the set it last showed firing."""

    reason: Reason
    firing: tuple[GroupAlert, ...]
    resolved: tuple[GroupAlert, ...]
    notified: frozenset[Key]

    @property
    def send(self) -> bool:
        return bool(self.firing or self.resolved)


def route(
    labels: Mapping[str, str], named: Iterable[str], channels: Mapping[str, ChannelSpec]
) -> list[str]:
    """The channels an alert goes to: those its rule or goal names, plus every channel whose
    `match` (severity list, label values; all given parts must hold) takes it."""
    out = [name for name in named if name in channels]
    for name, channel in channels.items():
        if name in out or channel.match is None:
            continue
        match = channel.match
        if match.severity and labels.get("severity") not in {s.value for s in match.severity}:
            continue
        if any(labels.get(k) != v for k, v in match.labels.items()):
            continue
        out.append(name)
    return out


def group_of(labels: Mapping[str, str], group_by: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The group key and labels of an alert in a channel, in Alertmanager's spelling."""
    group_labels = {name: labels.get(name, "") for name in sorted(group_by)}
    body = ",".join(f'{k}="{v}"' for k, v in group_labels.items())
    return "{" + body + "}", group_labels


def plan(
    group: GroupState, alerts: Sequence[GroupAlert], now: datetime, timing: Timing
) -> Flush | None:
    """The flush due now for one group, or None when nothing is due yet."""
    firing = tuple(a for a in alerts if a.status is Status.firing and not a.silenced)
    current = frozenset(a.key for a in firing)
    by_fingerprint = {a.fingerprint: a for a in alerts}
    resolved: list[GroupAlert] = []
    for fp, episode in sorted(group.notified - current):
        alert = by_fingerprint.get(fp)
        if alert is None:
            continue  # gone without a resolve we can describe: forgotten quietly
        if alert.episode == episode and alert.status is Status.resolved:
            resolved.append(alert)
        elif alert.episode > episode:
            # Resolved and broke again (or went pending) between two flushes: close the
            # old episode too.
            ended = alert.ends_at or now
            resolved.append(replace(alert, episode=episode, status=Status.resolved, ends_at=ended))
    if current == group.notified:
        if not current or group.last_flush_at is None:
            return None
        if all(a.acked for a in firing):
            return None
        due = group.last_flush_at + timing.repeat_interval
        reason = Reason.repeat
    elif group.last_flush_at is None:
        due = group.created_at + timing.group_wait
        reason = Reason.first
    else:
        due = group.last_flush_at + timing.group_interval
        reason = Reason.changed
    if now < due:
        return None
    return Flush(
        reason,
        firing,
        tuple(resolved) if timing.send_resolved else (),
        current,
    )
