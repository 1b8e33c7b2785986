"""What the benchmarks share: how busy the machine was, dropping their throw-away schemas,
and writing their figures. Imported as `common`: each benchmark runs as a script from
bench/ (`python bench/<name>.py`), so this folder is first on its path."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import orjson

from shared.db import make_sync_engine
from shared.settings import BaseServiceSettings
from shared.timescaledb import drop_schema


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(load_before: list[float], **extra: Any) -> dict[str, Any]:
    """The machine a run had: the bench shares it with whatever else runs, so say how busy
    it was before and after."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        **extra,
    }


def drop_schemas(settings: BaseServiceSettings, *names: str) -> None:
    """Drop the throw-away schemas, their policy jobs first (shared.timescaledb.drop_schema)."""
    engine = make_sync_engine(settings, application_name="bench-cleanup")
    try:
        with engine.connect() as conn:
            for name in names:
                drop_schema(conn, name)
    finally:
        engine.dispose()


def write_result(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
