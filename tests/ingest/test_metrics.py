"""Rejection reasons stay a small fixed set of labels."""

from __future__ import annotations

import pytest

from services.ingest.metrics import rejection_reason
from shared.events import FieldError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (FieldError(0, "time", "older than the allowed lateness of 7 days"), "invalid_too_old"),
        (FieldError(0, "time", "more than 1 day, 0:00:00 ahead of the server clock"),
         "invalid_in_future"),
        (FieldError(0, "time", "time must carry a UTC offset, e.g. ...Z"), "invalid_time"),
        (FieldError(0, "", "event is 40000 bytes, over the 32768 limit"), "invalid_too_large"),
        (FieldError(0, "traits.a.b", "properties may be nested one level deep at most"),
         "invalid_properties"),
        (FieldError(0, "type", "field required"), "invalid"),
    ],
)  # fmt: skip
def test_rejection_reason(error: FieldError, reason: str) -> None:
    assert rejection_reason(error) == reason
