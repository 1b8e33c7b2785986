"""Clients for a running deployment: the alerts API (:8082) and the services' `/metrics`.

The scorecard and the review read a deployment only through its public surface, so they
work against any installation, not just the demo's. Payloads are read tolerantly (a list,
or an object holding the list; snake_case or Alertmanager's camelCase), so a field the API
adds later never breaks the scorecard.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from shared.durations import format_duration


class ApiError(RuntimeError):
    pass


def _items(payload: Any, *keys: str) -> list[dict[str, Any]]:
    if isinstance(payload, dict):
        for key in (*keys, "items", "data", "results"):
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    return [item for item in payload if isinstance(item, dict)] if isinstance(payload, list) else []


def _first(item: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = item.get(key)
        if value is not None and value != "":
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if isinstance(value, dict):  # {"value": 0.93, ...}
        return _number(_first(value, "value", "projected", "at_deadline"))
    return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None  # Alertmanager's zero time means "not set"
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class GoalState:
    name: str
    kpi: str
    status: str
    value: float | None
    target: float | None
    expected: float | None
    projection: float | None
    direction: str = "at_least"
    window: str = ""

    @classmethod
    def parse(cls, item: dict[str, Any]) -> GoalState:
        start, end = _first(item, "period_start", "start"), _first(item, "period_end", "deadline")
        return cls(
            name=str(_first(item, "name", "goal") or "?"),
            kpi=str(_first(item, "kpi") or ""),
            status=str(_first(item, "status", "state") or "unknown"),
            value=_number(_first(item, "value", "current")),
            target=_number(_first(item, "target")),
            expected=_number(_first(item, "expected", "expected_now", "expected_value")),
            projection=_number(_first(item, "projection", "projected", "forecast")),
            direction=str(_first(item, "direction") or "at_least"),
            window=f"{str(start)[:10]} → {str(end)[:10]}" if start and end else "",
        )


@dataclass(frozen=True, slots=True)
class AlertState:
    name: str
    state: str
    severity: str
    started_at: datetime | None
    resolved_at: datetime | None
    summary: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def firing(self) -> bool:
        return self.state in {"firing", "active"}

    @property
    def time_to_resolve(self) -> timedelta | None:
        if self.started_at and self.resolved_at and self.resolved_at >= self.started_at:
            return self.resolved_at - self.started_at
        return None

    @classmethod
    def parse(cls, item: dict[str, Any]) -> AlertState:
        labels = item.get("labels") if isinstance(item.get("labels"), dict) else {}
        annotations = item.get("annotations") if isinstance(item.get("annotations"), dict) else {}
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        state = _first(item, "state", "status")
        if isinstance(state, dict):  # Alertmanager v2: {"state": "active", ...}
            state = state.get("state")
        return cls(
            name=str(
                _first(item, "rule", "goal", "name", "alertname")
                or _first(labels, "alertname", "rule", "goal")
                or "alert"
            ),
            state=str(state or "unknown").lower(),
            severity=str(_first(item, "severity") or _first(labels, "severity") or "-"),
            started_at=_time(
                _first(item, "started_at", "startsAt", "starts_at", "fired_at", "active_at")
            ),
            resolved_at=_time(_first(item, "resolved_at", "endsAt", "ends_at", "ended_at")),
            summary=str(_first(item, "summary") or _first(annotations, "summary") or ""),
            labels={str(k): str(v) for k, v in labels.items()},
        )


class AlertsApi:
    """The alerts service's HTTP API, authenticated with the admin (or read-only) token."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise ApiError(f"{self.base_url}{path}: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise ApiError(f"{self.base_url}{path}: HTTP {response.status_code}")
        return orjson.loads(response.content)

    async def goals(self) -> list[GoalState]:
        return [GoalState.parse(i) for i in _items(await self._get("/v1/goals"), "goals")]

    async def alerts(self, params: dict[str, str] | None = None) -> list[AlertState]:
        payload = await self._get("/v1/alerts", params)
        return [AlertState.parse(i) for i in _items(payload, "alerts")]

    async def kpis(self) -> list[dict[str, Any]]:
        return _items(await self._get("/v1/kpis"), "kpis")

    async def series(
        self, name: str, start: datetime, end: datetime, step: timedelta
    ) -> list[tuple[datetime, float | None]]:
        payload = await self._get(
            f"/v1/kpis/{name}/series",
            {"from": start.isoformat(), "to": end.isoformat(), "step": format_duration(step)},
        )
        points: list[tuple[datetime, float | None]] = []
        for item in _items(payload, "points", "series", "values"):
            t = _time(_first(item, "time", "t", "timestamp"))
            if t is not None:
                points.append((t, _number(item.get("value"))))
        if not points and isinstance(payload, dict):
            points = _pairs(payload.get("points") or payload.get("values") or [])
        return points


def _pairs(raw: Iterable[Any]) -> list[tuple[datetime, float | None]]:
    """`[[time, value], ...]`, the other common shape of a series."""
    out: list[tuple[datetime, float | None]] = []
    for pair in raw:
        if isinstance(pair, list | tuple) and len(pair) == 2:
            t = _time(pair[0]) if isinstance(pair[0], str) else None
            if t is None and isinstance(pair[0], int | float):
                t = datetime.fromtimestamp(pair[0], tz=UTC)
            if t is not None:
                out.append((t, _number(pair[1])))
    return out


Samples = dict[str, float]


def parse_metrics(text: str) -> Samples:
    """Prometheus text → `{"name{label="v",...}": value}` for every sample."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return samples


def metric_sum(samples: Samples, name: str, **labels: str) -> float | None:
    """Sum of every sample of `name` (any labels, or those given); None if none exist."""
    total, found = 0.0, False
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if any(f'{k}="{v}"' not in rest for k, v in labels.items()):
            continue
        total += value
        found = True
    return total if found else None


async def scrape(client: httpx.AsyncClient, url: str) -> Samples | None:
    """One `/metrics` scrape; None when the service does not answer."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    try:
        return parse_metrics(response.text)
    except ValueError:
        return None
