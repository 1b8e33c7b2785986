"""Rejection reasons stay a small fixed set of labels, from each error's code, never from
its wording."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from services.ingest import parsing
from shared.events import MAX_EVENT_BYTES, TimePolicy
from tests.ingest.test_parsing import NOW, _segment

pytestmark = pytest.mark.unit


def _event(**overrides: Any) -> dict[str, Any]:
    return {"id": "e-1", "type": "order", "time": NOW.isoformat(), **overrides}


@pytest.mark.parametrize(
    ("event", "label"),
    [
        (_event(time=(NOW - timedelta(days=8)).isoformat()), "invalid_too_old"),
        (_event(time=(NOW + timedelta(days=2)).isoformat()), "invalid_in_future"),
        (_event(time="2026-11-27T09:00:00"), "invalid_time"),
        (_event(time="0001-01-01T00:00:05+00:03"), "invalid_time"),
        (_event(properties={"big": "x" * MAX_EVENT_BYTES}), "invalid_too_large"),
        (_event(properties={"a": {"b": {"c": 1}}}), "invalid_properties"),
        (_event(type=None), "invalid"),
    ],
)
def test_each_refusal_has_its_label(event: dict[str, Any], label: str) -> None:
    [candidate] = parsing.parse_events(orjson.dumps(event))
    _, errors = parsing.validate(
        [candidate], source="web-shop", received_at=NOW, policy=TimePolicy()
    )
    assert [e.kind for e in errors] == [label]
    assert errors[0].as_dict()["code"] == label


def test_a_renamed_field_keeps_its_label() -> None:
    """Segment's `traits` are our `properties`: the label follows the error, not the name."""
    message = _segment(traits={"deep": {"er": {"x": 1}}})
    [candidate] = parsing.parse_segment(orjson.dumps(message), call="identify", received_at=NOW)
    _, errors = parsing.validate(
        [candidate], source="web-shop", received_at=NOW, policy=TimePolicy()
    )
    assert [(e.field, e.kind) for e in errors] == [("traits.deep.er", "invalid_properties")]
