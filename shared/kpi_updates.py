"""The message on `pacekeeper.kpi-updates.v1`: which minutes of a KPI a commit changed.

The aggregator publishes one per changed KPI after its transaction commits (key = KPI
name); the alerts service reads them to evaluate between ticks. Value:
`{"kpi": "orders", "from": "2026-11-27T10:00:00Z", "to": "2026-11-27T10:05:00Z"}` —
`kpi_value`/`kpi_series` may differ for windows overlapping [from, to).
"""

from __future__ import annotations

from datetime import datetime

import orjson


def encode_update(kpi: str, t_from: datetime, t_to: datetime) -> bytes:
    return orjson.dumps({"kpi": kpi, "from": t_from, "to": t_to}, option=orjson.OPT_UTC_Z)


def updated_kpi(value: bytes | None) -> str | None:
    """The KPI a message names, or None when it is unreadable (evaluate everything then)."""
    if not value:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    name = doc.get("kpi") if isinstance(doc, dict) else None
    return name if isinstance(name, str) and name else None
