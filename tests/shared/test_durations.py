from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.durations import format_duration, parse_duration

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
        ("0", timedelta(0)),
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "m", "15", "15x", "1h 30", "-5m", "1.5h"])
def test_rejects_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**8))
def test_format_round_trips(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    "value",
    [-60, -0.5, float("nan"), float("inf"), "99999999999999999d", "522w", 3650 * 86400 + 1],
)
def test_a_duration_field_refuses_negative_endless_and_overflowing_values(value: object) -> None:
    """Each was once accepted by the API and then broke reading the rule back."""
    from pydantic import TypeAdapter, ValidationError

    from shared.durations import Duration

    with pytest.raises(ValidationError) as refused:
        TypeAdapter(Duration).validate_python(value)
    (error,) = refused.value.errors()
    assert "duration" in error["msg"] or "longer than" in error["msg"], error["msg"]


def test_a_duration_field_takes_up_to_ten_years() -> None:
    from pydantic import TypeAdapter

    from shared.durations import MAX_DURATION, Duration

    assert TypeAdapter(Duration).validate_python("3650d") == MAX_DURATION
    assert TypeAdapter(Duration).validate_python(0) == timedelta(0)
