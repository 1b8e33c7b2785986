"""JSON parameters for jsonb columns: orjson, as text that the statements CAST."""

from __future__ import annotations

from typing import Any

import orjson


def jsonb(value: Any) -> str:
    return orjson.dumps(value).decode()
