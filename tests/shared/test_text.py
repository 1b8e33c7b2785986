"""NUL is found wherever it hides in a JSON-like value, without recursion."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.text import NUL, RefusesNul, nul_path

pytestmark = pytest.mark.unit

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _holds_nul(value: Any) -> bool:  # the oracle: plain recursion over the same shapes
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


@given(JSON)
def test_finds_nul_exactly_when_there_is_one(value: Any) -> None:
    assert (nul_path(value) is not None) == _holds_nul(value)


def test_the_path_names_the_field() -> None:
    assert nul_path({"a": [{"b": "ok"}, {"c": "x\x00"}]}) == "a[1].c"
    assert nul_path({"k\x00": 1}) == "k?"
    assert nul_path("\x00") == ""
    assert nul_path({"a": "b"}) is None


def test_deep_nesting_does_not_recurse() -> None:
    deep: Any = "\x00"
    for _ in range(100_000):
        deep = [deep]
    assert nul_path(deep) == "[0]" * 100_000


class _Model(RefusesNul):
    note: str


def test_a_model_refuses_nul_naming_the_field() -> None:
    with pytest.raises(ValidationError, match=r"note cannot contain NUL"):
        _Model.model_validate({"note": "a\x00b"})
    assert _Model(note="fine").note == "fine"
