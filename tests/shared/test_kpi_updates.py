from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from shared.kpi_updates import encode_update, updated_kpi

pytestmark = pytest.mark.unit


def test_round_trip() -> None:
    value = encode_update(
        "orders", datetime(2026, 11, 27, 10, tzinfo=UTC), datetime(2026, 11, 27, 10, 5, tzinfo=UTC)
    )
    assert orjson.loads(value) == {
        "kpi": "orders",
        "from": "2026-11-27T10:00:00Z",
        "to": "2026-11-27T10:05:00Z",
    }
    assert updated_kpi(value) == "orders"


@pytest.mark.parametrize("value", [None, b"", b"{nope", b"[1]", b'{"kpi": 3}', b'{"kpi": ""}'])
def test_unreadable_messages_name_no_kpi(value: bytes | None) -> None:
    assert updated_kpi(value) is None
