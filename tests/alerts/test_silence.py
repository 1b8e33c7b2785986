"""Silences and acknowledgements share `mutes(labels)`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.alerts.evaluation.rules import fingerprint
from services.alerts.silence import Acknowledger, Matcher, Silence, Silencer, any_mutes

pytestmark = pytest.mark.unit
NOW = datetime(2027, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def silence(*matchers: Matcher, start: datetime = NOW - H, end: datetime = NOW + H) -> Silence:
    return Silence(1, matchers, start, end)


def test_matchers() -> None:
    labels = {"alertname": "orders-drop", "source": "web-shop"}
    assert Matcher(name="source", value="web-shop").matches(labels)
    assert Matcher(name="source", value="app", type="!=").matches(labels)
    assert Matcher(name="alertname", value="orders-.*", type="=~").matches(labels)
    assert not Matcher(name="alertname", value="orders", type="=~").matches(labels)  # anchored
    assert Matcher(name="team", value="", type="=").matches(labels)  # missing = empty
    assert Matcher(name="source", value="web.*", type="!~").matches({"source": "app"})


def test_bad_regex_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        Matcher(name="a", value="(", type="=~")


def test_silence_mutes_only_while_active_and_when_all_matchers_hold() -> None:
    labels = {"alertname": "x", "source": "web"}
    both = silence(Matcher(name="alertname", value="x"), Matcher(name="source", value="web"))
    assert Silencer((both,), NOW).mutes(labels)
    assert not Silencer((both,), NOW + 2 * H).mutes(labels)
    other = silence(Matcher(name="alertname", value="x"), Matcher(name="source", value="app"))
    assert not Silencer((other,), NOW).mutes(labels)


def test_acknowledgement_mutes_by_fingerprint() -> None:
    labels = {"alertname": "x"}
    acks = Acknowledger(frozenset({fingerprint(labels)}))
    assert acks.mutes(labels)
    assert not acks.mutes({"alertname": "y"})
    assert any_mutes([Silencer((), NOW), acks], labels)
