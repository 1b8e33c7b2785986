"""Grouping and notification timing, and the pipeline's delivery invariants (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.alerts.dispatch import (
    GroupAlert,
    GroupState,
    Reason,
    Status,
    Timing,
    group_of,
    plan,
    route,
)
from services.alerts.evaluation.lifecycle import AlertState, State, Transition, step
from shared.config.alerting import ChannelSpec

pytestmark = pytest.mark.unit

T0 = datetime(2027, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)
TIMING = Timing(group_wait=30 * S, group_interval=300 * S, repeat_interval=3600 * S)


def alert(fp: str, status: Status = Status.firing, episode: int = 1, **kw: object) -> GroupAlert:
    return GroupAlert(fp, episode, status, {"alertname": "r", "fp": fp}, **kw)  # type: ignore[arg-type]


def group(**kw: object) -> GroupState:
    return GroupState("ops", '{alertname="r"}', {"alertname": "r"}, T0, **kw)  # type: ignore[arg-type]


def test_a_new_group_waits_group_wait() -> None:
    g = group()
    assert plan(g, [alert("a")], T0 + 29 * S, TIMING) is None
    flush = plan(g, [alert("a"), alert("b")], T0 + 30 * S, TIMING)
    assert flush is not None
    assert flush.reason is Reason.first
    assert [a.fingerprint for a in flush.firing] == ["a", "b"]
    assert flush.notified == {("a", 1), ("b", 1)}


def test_changes_wait_group_interval_and_resolves_go_once() -> None:
    g = group(last_flush_at=T0, notified=frozenset({("a", 1)}))
    resolved = [alert("a", Status.resolved)]
    assert plan(g, resolved, T0 + 299 * S, TIMING) is None
    flush = plan(g, resolved, T0 + 300 * S, TIMING)
    assert flush is not None
    assert flush.reason is Reason.changed
    assert [a.fingerprint for a in flush.resolved] == ["a"]
    assert not flush.firing
    after = replace(g, last_flush_at=T0 + 300 * S, notified=flush.notified)
    assert plan(after, resolved, T0 + 10_000 * S, TIMING) is None


def test_unchanged_firing_group_repeats_unless_all_acknowledged() -> None:
    g = group(last_flush_at=T0, notified=frozenset({("a", 1)}))
    assert plan(g, [alert("a")], T0 + 3599 * S, TIMING) is None
    flush = plan(g, [alert("a")], T0 + 3600 * S, TIMING)
    assert flush is not None
    assert flush.reason is Reason.repeat
    assert plan(g, [alert("a", acked=True)], T0 + 3600 * S, TIMING) is None


def test_silenced_alerts_are_left_out_and_never_resolved() -> None:
    g = group()
    flush = plan(g, [alert("a", silenced=True)], T0 + 30 * S, TIMING)
    assert flush is None  # nothing visible changed from the empty notified set


def test_resolve_without_a_shown_firing_is_never_sent() -> None:
    g = group()
    assert plan(g, [alert("a", Status.resolved)], T0 + 30 * S, TIMING) is None


def test_reopened_episode_closes_the_old_one() -> None:
    g = group(last_flush_at=T0, notified=frozenset({("a", 1)}))
    flush = plan(g, [alert("a", episode=2)], T0 + 300 * S, TIMING)
    assert flush is not None
    assert [(a.fingerprint, a.episode, a.status) for a in flush.resolved] == [
        ("a", 1, Status.resolved)
    ]
    assert [(a.fingerprint, a.episode) for a in flush.firing] == [("a", 2)]


def test_send_resolved_false_drops_resolves() -> None:
    g = group(last_flush_at=T0, notified=frozenset({("a", 1)}))
    flush = plan(
        g, [alert("a", Status.resolved)], T0 + 300 * S, replace(TIMING, send_resolved=False)
    )
    assert flush is not None
    assert not flush.send
    assert flush.notified == frozenset()


def test_routing_and_group_keys() -> None:
    channels = {
        "ops": ChannelSpec.model_validate({"name": "ops", "type": "webhook", "url": "http://h/x"}),
        "pager": ChannelSpec.model_validate(
            {
                "name": "pager",
                "type": "webhook",
                "url": "http://h/y",
                "match": {"severity": ["page"]},
            }
        ),
        "growth": ChannelSpec.model_validate(
            {
                "name": "growth",
                "type": "webhook",
                "url": "http://h/z",
                "match": {"labels": {"team": "growth"}},
            }
        ),
    }
    assert route({"severity": "page"}, ["ops"], channels) == ["ops", "pager"]
    assert route({"severity": "info", "team": "growth"}, [], channels) == ["growth"]
    assert route({"severity": "info"}, ["gone"], channels) == []
    key, labels = group_of({"alertname": "r", "source": "web"}, ["source", "alertname"])
    assert key == '{alertname="r",source="web"}'
    assert labels == {"alertname": "r", "source": "web"}


# --- the pipeline's invariants ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 2),  # which alert the verdict is for
            st.sampled_from([True, False, None]),
            st.integers(1, 200),  # seconds until this evaluation
        ),
        max_size=80,
    ),
    for_=st.integers(0, 120),
    wait=st.integers(0, 60),
    interval=st.integers(1, 120),
    repeat=st.integers(1, 1000),
)
def test_notifications_follow_transitions(
    steps: list[tuple[int, bool | None, int]],
    for_: int,
    wait: int,
    interval: int,
    repeat: int,
) -> None:
    """Lifecycle + dispatch as the evaluator runs them: an alert is shown firing only in an
    episode that fired, each shown episode is resolved exactly once, and only after it was
    shown firing; once everything recovers, every shown episode has been resolved."""
    timing = Timing(wait * S, interval * S, repeat * S)
    states = {f"a{i}": AlertState() for i in range(3)}
    fired: set[tuple[str, int]] = set()
    shown: set[tuple[str, int]] = set()
    resolved_sent: list[tuple[str, int]] = []
    g: GroupState | None = None
    now = T0

    def dispatch() -> None:
        nonlocal g
        members = [
            GroupAlert(
                fp,
                s.episode,
                Status.firing if s.state is State.firing else Status.resolved,
                {"alertname": "r", "fp": fp},
            )
            for fp, s in states.items()
            if s.state is State.firing or (g is not None and fp in {k[0] for k in g.notified})
        ]
        if g is None:
            if not any(m.status is Status.firing for m in members):
                return
            g = GroupState("ops", "k", {}, now)
        flush = plan(g, members, now, timing)
        if flush is not None:
            for a in flush.firing:
                assert a.key in fired
                shown.add(a.key)
            for a in flush.resolved:
                assert a.key in shown
                assert a.key not in resolved_sent
                resolved_sent.append(a.key)
            g = replace(
                g, notified=flush.notified, last_flush_at=now if flush.send else g.last_flush_at
            )
        if not g.notified and not any(m.status is Status.firing for m in members):
            g = None

    for index, verdict, gap in steps:
        now += gap * S
        fp = f"a{index}"
        states[fp], transition = step(states[fp], verdict, now, for_=for_ * S)
        if transition is Transition.fired:
            fired.add((fp, states[fp].episode))
        dispatch()
    # Everything recovers; time passes well beyond every timer.
    now += S
    for fp in states:
        states[fp], _ = step(states[fp], False, now)
    for _ in range(3):
        now += (wait + interval + repeat + 1) * S
        dispatch()
    assert sorted(resolved_sent) == sorted(shown)
