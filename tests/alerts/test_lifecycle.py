"""The alert lifecycle: `for`, keep-firing, no-judgement, and its invariants (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.alerts.evaluation.lifecycle import AlertState, State, Transition, step

pytestmark = pytest.mark.unit

T0 = datetime(2027, 1, 1, tzinfo=UTC)
S = timedelta(seconds=1)


def run(verdicts: list[bool | None], *, for_: int = 0, keep: int = 0) -> list[Transition]:
    state, out = AlertState(), []
    for i, verdict in enumerate(verdicts):
        state, transition = step(
            state, verdict, T0 + i * 10 * S, for_=for_ * S, keep_firing_for=keep * S
        )
        out.append(transition)
    return out


def test_for_zero_fires_on_first_breach() -> None:
    assert run([True]) == [Transition.fired]


def test_for_waits_until_the_breach_lasted_long_enough() -> None:
    # Evaluations every 10 s, for 25 s: pending at 0, 10, 20; fires at 30.
    assert run([True, True, True, True], for_=25) == [
        Transition.pending,
        Transition.none,
        Transition.none,
        Transition.fired,
    ]


def test_a_pending_breach_that_goes_away_clears_without_notice() -> None:
    assert run([True, False], for_=60) == [Transition.pending, Transition.cleared]


def test_recovery_resolves_once() -> None:
    assert run([True, False, False]) == [Transition.fired, Transition.resolved, Transition.none]


def test_keep_firing_for_holds_through_a_short_recovery() -> None:
    assert run([True, False, True, False, False, False], keep=15) == [
        Transition.fired,
        Transition.none,  # 10 s after the last breach < 15 s
        Transition.none,
        Transition.none,
        Transition.resolved,  # 20 s after the last breach
        Transition.none,
    ]


def test_no_judgement_changes_nothing() -> None:
    assert run([True, None, None, False], for_=0) == [
        Transition.fired,
        Transition.none,
        Transition.none,
        Transition.resolved,
    ]


def test_each_firing_is_a_new_episode() -> None:
    state = AlertState()
    for verdict in (True, False, True):
        state, _ = step(state, verdict, T0)
    assert (state.state, state.episode) == (State.firing, 2)


@settings(max_examples=400, deadline=None)
@given(
    verdicts=st.lists(st.sampled_from([True, False, None]), max_size=60),
    gaps=st.lists(st.integers(1, 120), min_size=60, max_size=60),
    for_=st.integers(0, 300),
    keep=st.integers(0, 300),
)
def test_lifecycle_invariants(
    verdicts: list[bool | None], gaps: list[int], for_: int, keep: int
) -> None:
    """Fires only after a breach lasting `for`; resolves alternate with fires, one each."""
    state, now = AlertState(), T0
    breach_since: datetime | None = None
    firing = False
    fired = resolved = 0
    for verdict, gap in zip(verdicts, gaps, strict=False):
        now += gap * S
        if verdict is True and breach_since is None:
            breach_since = now
        state, transition = step(state, verdict, now, for_=for_ * S, keep_firing_for=keep * S)
        if transition is Transition.fired:
            assert not firing
            assert verdict is True
            assert breach_since is not None
            assert now - breach_since >= for_ * S
            firing, fired = True, fired + 1
        elif transition is Transition.resolved:
            assert firing
            assert verdict is False
            firing, resolved = False, resolved + 1
        assert (state.state is State.firing) == firing
        if verdict is False and state.state is not State.firing:
            breach_since = None
    assert resolved <= fired <= resolved + 1
    assert state.episode >= fired
