"""The provisioned Grafana dashboards as data: their SQL, and that SQL rendered as Grafana does."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"
POSTGRES_TYPE = "grafana-postgresql-datasource"


@dataclass(frozen=True)
class SqlQuery:
    where: str  # "pacekeeper-kpis.json: panel 'orders' A", for assertion messages
    sql: str
    fmt: str  # "table" | "time_series"; a template variable's query is "variable"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS_DIR.glob("*.json"))
    }


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def sql_queries(name: str, dashboard: dict[str, Any]) -> Iterator[SqlQuery]:
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query" and _is_postgres(variable.get("datasource")):
            query = variable["query"]
            sql = query if isinstance(query, str) else query["rawSql"]
            yield SqlQuery(f"{name}: variable {variable['name']}", sql, "variable")
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if _is_postgres(target.get("datasource") or panel.get("datasource")):
                yield SqlQuery(
                    f"{name}: panel {panel.get('title')!r} {target['refId']}",
                    target["rawSql"],
                    target.get("format", "time_series"),
                )


def _is_postgres(datasource: Any) -> bool:
    return isinstance(datasource, dict) and datasource.get("type") == POSTGRES_TYPE


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def render(
    sql: str,
    *,
    time_from: str,
    time_to: str,
    interval: str,
    variables: dict[str, list[str]],
) -> str:
    """Interpolate as Grafana's PostgreSQL data source does, for the macros and formats we use.

    `$__timeFrom()`/`$__timeTo()` become quoted RFC 3339 literals; `${v:sqlstring}` quotes
    and escapes every value; `${v:raw}` and `$v` insert the first value as it is.
    """
    sql = sql.replace("$__timeFrom()", f"'{time_from}'").replace("$__timeTo()", f"'{time_to}'")

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2) or "raw"
        if name == "__interval":
            return interval
        values = variables[name]
        if fmt == "sqlstring":
            return ",".join("'" + value.replace("'", "''") + "'" for value in values)
        if fmt == "raw":
            return values[0]
        raise ValueError(f"format {fmt!r} of ${{{name}}} is not rendered by this helper")

    rendered = _VARIABLE.sub(substitute, sql)
    if "$" in rendered:
        raise ValueError(f"unrendered macro left in {rendered!r}")
    return rendered
