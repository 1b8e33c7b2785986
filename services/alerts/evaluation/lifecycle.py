"""The alert lifecycle `inactive → pending → firing → resolved`, one fingerprint at a time.

Modelled on Prometheus' rule evaluation: a breach must last `for` before the alert fires,
`keep_firing_for` holds a firing alert through short recoveries, and a verdict of `None`
(no judgement: too few samples, no data past the watermark) changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum


class State(StrEnum):
    inactive = "inactive"
    pending = "pending"
    firing = "firing"
    resolved = "resolved"


class Transition(StrEnum):
    none = "none"
    pending = "pending"  # breach seen, waiting for `for`
    cleared = "cleared"  # pending breach went away before it fired: nothing to notify
    fired = "fired"
    resolved = "resolved"


@dataclass(frozen=True, slots=True)
class AlertState:
    state: State = State.inactive
    episode: int = 0
    active_at: datetime | None = None
    fired_at: datetime | None = None
    resolved_at: datetime | None = None
    last_breach_at: datetime | None = None

    @property
    def is_active(self) -> bool:
        return self.state in (State.pending, State.firing)


def step(
    current: AlertState,
    breaching: bool | None,
    now: datetime,
    *,
    for_: timedelta = timedelta(0),
    keep_firing_for: timedelta = timedelta(0),
) -> tuple[AlertState, Transition]:
    """The next state for one verdict at `now`; only `fired` and `resolved` are notified."""
    if breaching is None:
        return current, Transition.none
    state = current.state
    if breaching:
        if state in (State.inactive, State.resolved):
            # A new episode starts; with `for: 0` it fires on this very evaluation.
            started = AlertState(
                state=State.pending,
                episode=current.episode + 1,
                active_at=now,
                last_breach_at=now,
            )
            if for_ <= timedelta(0):
                return replace(started, state=State.firing, fired_at=now), Transition.fired
            return started, Transition.pending
        if state is State.pending:
            assert current.active_at is not None
            if now - current.active_at >= for_:
                fired = replace(current, state=State.firing, fired_at=now, last_breach_at=now)
                return fired, Transition.fired
            return replace(current, last_breach_at=now), Transition.none
        return replace(current, last_breach_at=now), Transition.none
    # Not breaching.
    if state is State.pending:
        return replace(current, state=State.inactive, active_at=None), Transition.cleared
    if state is State.firing:
        last = current.last_breach_at or current.fired_at or now
        if keep_firing_for > timedelta(0) and now - last < keep_firing_for:
            return current, Transition.none
        return replace(current, state=State.resolved, resolved_at=now), Transition.resolved
    return current, Transition.none
