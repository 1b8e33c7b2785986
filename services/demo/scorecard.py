"""The scorecard: KPIs with sparklines, goals against target and pace, firing alerts, and
the pipeline's rates and lag — read from a running deployment's public surface.

`collect` turns the alerts API and the services' `/metrics` into a `Snapshot`; `render`
turns a snapshot into rich renderables. `pacekeeper scorecard` prints one snapshot; the demo
redraws it live.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from services.demo.api import (
    AlertsApi,
    AlertState,
    ApiError,
    GoalState,
    Samples,
    metric_sum,
    scrape,
)
from services.demo.formatting import format_value

# The KPIs an operations team looks at first, in this order, when the config has them.
HEADLINE_KPIS = (
    "visitors",
    "page_views",
    "signups",
    "orders",
    "revenue",
    "conversion",
    "aov",
    "active_users",
    "csat",
    "nps",
    "first_response_p90",
    "ad_spend",
)
MAX_KPIS = 12
RATE_WINDOW = 30.0  # seconds
WIDE = 140  # columns from which KPIs and goals sit side by side
SPARK = "▁▂▃▄▅▆▇█"
STATUS_STYLE = {
    "achieved": "bold green",
    "on_track": "green",
    "at_risk": "bold yellow",
    "off_track": "bold red",
}


def sparkline(values: Sequence[float | None], width: int | None = None) -> str:
    """Unicode bars scaled between the series' min and max; gaps stay blank."""
    points = list(values)
    if width and len(points) > width:  # average neighbours down to the width
        size = len(points) / width
        buckets = [points[int(i * size) : int((i + 1) * size)] for i in range(width)]
        points = [
            sum(v for v in b if v is not None) / len(known)
            if (known := [v for v in b if v is not None])
            else None
            for b in buckets
        ]
    known = [v for v in points if v is not None]
    if not known:
        return " " * len(points)
    low, high = min(known), max(known)
    span = high - low
    out = []
    for v in points:
        if v is None:
            out.append(" ")
        elif span == 0:
            out.append(SPARK[3])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))])
    return "".join(out)


@dataclass(frozen=True, slots=True)
class KpiTile:
    name: str
    unit: str
    value: float | None
    series: list[float | None]


@dataclass(frozen=True, slots=True)
class Pipeline:
    up: dict[str, bool]
    ingest_rate: float | None  # events/s accepted by ingest
    applied_rate: float | None  # events/s applied by the aggregator
    lag: float | None  # messages not yet consumed, all partitions
    dlq: float | None
    notifications_sent: float | None
    alerts_firing: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: datetime
    window: timedelta
    kpis: list[KpiTile]
    goals: list[GoalState]
    alerts: list[AlertState]
    pipeline: Pipeline
    problems: list[str] = field(default_factory=list)

    @property
    def firing(self) -> list[AlertState]:
        return [a for a in self.alerts if a.firing]


@dataclass(frozen=True, slots=True)
class Endpoints:
    alerts: str = "http://127.0.0.1:8082"
    ingest: str = "http://127.0.0.1:8080"
    aggregator: str = "http://127.0.0.1:8081"


def window_step(window: timedelta) -> timedelta:
    """A step that makes `kpi_series` return the window [now - window, now) as one point.

    Day steps align to local midnight and the first bucket is clipped to `from`, so a step
    of whole days reaching past `now` from the first midnight yields exactly one bucket —
    the same number `kpi_value` gives for the window, which the API does not expose alone."""
    return timedelta(days=math.ceil(window / timedelta(days=1)) + 1)


def _unit(spec: dict[str, Any]) -> str:
    unit = spec.get("unit")
    if isinstance(unit, str) and unit:
        return unit
    return "ratio" if spec.get("kind") in {"ratio", "funnel", "retention"} else ""


class ScorecardCollector:
    """Keeps the previous scrape so counters become rates between two snapshots."""

    def __init__(
        self,
        api: AlertsApi,
        endpoints: Endpoints,
        *,
        kpis: Sequence[str] | None = None,
        window: timedelta = timedelta(hours=1),
        history: timedelta = timedelta(hours=2),
        step: timedelta = timedelta(minutes=5),
    ) -> None:
        self.api = api
        self.endpoints = endpoints
        self.wanted = list(kpis) if kpis else None
        self.window = window
        self.history = history
        self.step = step
        self._http = httpx.AsyncClient(timeout=3.0)
        # Recent scrapes: rates are taken over ~RATE_WINDOW, so a sender's 1-second bursts
        # do not make the rate jump between redraws.
        self._scrapes: deque[tuple[float, dict[str, Samples | None]]] = deque()
        self._units: dict[str, str] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _kpi_names(self, problems: list[str]) -> list[str]:
        if self.wanted:
            return self.wanted
        try:
            specs = await self.api.kpis()
        except ApiError as exc:
            problems.append(str(exc))
            return []
        self._units = {str(s.get("name")): _unit(s) for s in specs}
        names = [n for n in HEADLINE_KPIS if n in self._units]
        return names or sorted(self._units)[:MAX_KPIS]

    async def _tile(self, name: str, now: datetime) -> KpiTile:
        # Whole steps, so the last bar is a complete step rather than a sliver.
        end = datetime.fromtimestamp(
            now.timestamp() // self.step.total_seconds() * self.step.total_seconds(), tz=UTC
        )
        history, current = await asyncio.gather(
            self.api.series(name, end - self.history, end, self.step),
            self.api.series(name, now - self.window, now, window_step(self.window)),
        )
        value = current[-1][1] if current else None
        return KpiTile(name, self._units.get(name, ""), value, [v for _, v in history])

    async def _scrape_all(self) -> dict[str, Samples | None]:
        urls = {
            "ingest": f"{self.endpoints.ingest}/metrics",
            "aggregator": f"{self.endpoints.aggregator}/metrics",
            "alerts": f"{self.endpoints.alerts}/metrics",
        }
        results = await asyncio.gather(*(scrape(self._http, u) for u in urls.values()))
        return dict(zip(urls, results, strict=True))

    def _pipeline(self, scraped: dict[str, Samples | None]) -> Pipeline:
        now = time.monotonic()
        while self._scrapes and now - self._scrapes[0][0] > RATE_WINDOW:
            self._scrapes.popleft()
        previous = self._scrapes[0] if self._scrapes else None
        self._scrapes.append((now, scraped))

        def rate(service: str, name: str) -> float | None:
            current = scraped.get(service)
            if previous is None or current is None:
                return None
            before = previous[1].get(service)
            if before is None:
                return None
            a, b = metric_sum(before, name), metric_sum(current, name)
            if a is None or b is None or now <= previous[0]:
                return None
            return max(0.0, b - a) / (now - previous[0])

        def gauge(service: str, name: str, **labels: str) -> float | None:
            samples = scraped.get(service)
            return None if samples is None else metric_sum(samples, name, **labels)

        return Pipeline(
            up={name: samples is not None for name, samples in scraped.items()},
            ingest_rate=rate("ingest", "pacekeeper_ingest_events_accepted_total"),
            applied_rate=rate("aggregator", "pacekeeper_aggregator_events_applied_total"),
            lag=gauge("aggregator", "pacekeeper_aggregator_consumer_lag"),
            dlq=gauge("aggregator", "pacekeeper_aggregator_dlq_messages_total"),
            notifications_sent=gauge("alerts", "pacekeeper_alerts_notifications_sent_total"),
            alerts_firing=gauge("alerts", "pacekeeper_alerts_alerts", state="firing"),
        )

    async def collect(self) -> Snapshot:
        now = datetime.now(UTC)
        problems: list[str] = []
        names = await self._kpi_names(problems)
        tiles: list[KpiTile] = []
        for name in names[:MAX_KPIS]:
            try:
                tiles.append(await self._tile(name, now))
            except ApiError as exc:
                problems.append(str(exc))
                tiles.append(KpiTile(name, self._units.get(name, ""), None, []))
        goals: list[GoalState] = []
        alerts: list[AlertState] = []
        try:
            goals = await self.api.goals()
        except ApiError as exc:
            problems.append(str(exc))
        try:
            alerts = await self.api.alerts({"state": "firing"})
        except ApiError as exc:
            problems.append(str(exc))
        pipeline = self._pipeline(await self._scrape_all())
        return Snapshot(now, self.window, tiles, goals, alerts, pipeline, problems)


# -- rendering ------------------------------------------------------------------------------


def _rate(value: float | None, suffix: str = "/s") -> str:
    return "—" if value is None else f"{value:,.0f}{suffix}"


def kpi_table(snapshot: Snapshot, *, spark_width: int = 24) -> Table:
    table = Table(title=f"KPIs · last {_span(snapshot.window)}", title_justify="left", expand=True)
    table.add_column("KPI", style="bold")
    table.add_column("value", justify="right")
    table.add_column("trend", no_wrap=True, style="cyan")
    for tile in snapshot.kpis:
        table.add_row(
            tile.name, format_value(tile.value, tile.unit), sparkline(tile.series, spark_width)
        )
    if not snapshot.kpis:
        table.add_row("(no KPIs yet)", "", "")
    return table


def _kpi_unit(snapshot: Snapshot, kpi: str) -> str:
    return next((t.unit for t in snapshot.kpis if t.name == kpi), "")


def goal_table(snapshot: Snapshot) -> Table:
    table = Table(title="Goals", title_justify="left", expand=True)
    for column, justify in (
        ("goal", "left"),
        ("target", "right"),
        ("value", "right"),
        ("expected", "right"),
        ("projection", "right"),
        ("status", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]  # rich's JustifyMethod literal
    for goal in snapshot.goals:
        unit = _kpi_unit(snapshot, goal.kpi)
        status = Text(goal.status.replace("_", " "), style=STATUS_STYLE.get(goal.status, "dim"))
        table.add_row(
            goal.name,
            format_value(goal.target, unit),
            format_value(goal.value, unit),
            format_value(goal.expected, unit),
            format_value(goal.projection, unit),
            status,
        )
    if not snapshot.goals:
        table.add_row("(no goals)", "", "", "", "", "")
    return table


def alert_table(snapshot: Snapshot) -> Table:
    firing = snapshot.firing
    table = Table(title=f"Firing alerts · {len(firing)}", title_justify="left", expand=True)
    table.add_column("alert", style="bold")
    table.add_column("severity")
    table.add_column("since")
    table.add_column("summary", overflow="fold")
    for alert in firing:
        since = f"{_span(snapshot.taken_at - alert.started_at)} ago" if alert.started_at else "—"
        style = "bold red" if alert.severity == "page" else "yellow"
        table.add_row(
            Text(alert.name), Text(alert.severity, style=style), since, Text(alert.summary)
        )
    if not firing:
        table.add_row(Text("all clear", style="green"), "", "", "")
    return table


def pipeline_table(snapshot: Snapshot, extra: dict[str, str] | None = None) -> Table:
    p = snapshot.pipeline
    table = Table(title="Pipeline", title_justify="left", expand=True)
    for column in ("ingest", "aggregated", "consumer lag", "DLQ", "notified", *(extra or {})):
        table.add_column(column, justify="right")
    up = {k: ("" if v else " [red](down)[/red]") for k, v in p.up.items()}
    table.add_row(
        _rate(p.ingest_rate) + up.get("ingest", ""),
        _rate(p.applied_rate) + up.get("aggregator", ""),
        "—" if p.lag is None else f"{p.lag:,.0f}",
        "—" if p.dlq is None else f"{p.dlq:,.0f}",
        ("—" if p.notifications_sent is None else f"{p.notifications_sent:,.0f}")
        + up.get("alerts", ""),
        *(extra or {}).values(),
    )
    return table


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def render(
    snapshot: Snapshot,
    *,
    title: str = "Pacekeeper scorecard",
    extra: dict[str, str] | None = None,
    log: Sequence[str] = (),
    width: int = 160,
) -> RenderableType:
    """The whole scorecard: KPIs beside goals and alerts (one below the other on a console
    narrower than WIDE), the pipeline and a log below."""
    header = Text.assemble(
        (title, "bold"),
        f"  ·  {snapshot.taken_at.astimezone():%Y-%m-%d %H:%M:%S %Z}",
        style="white on blue",
    )
    body: RenderableType
    if width >= WIDE:
        body = Table.grid(expand=True, padding=(0, 1))
        body.add_column(ratio=2)
        body.add_column(ratio=3)
        body.add_row(kpi_table(snapshot), Group(goal_table(snapshot), alert_table(snapshot)))
    else:
        body = Group(kpi_table(snapshot), goal_table(snapshot), alert_table(snapshot))
    parts: list[RenderableType] = [header, body, pipeline_table(snapshot, extra)]
    if log:
        parts.append(Panel(Text("\n".join(log)), title="webhook receiver", title_align="left"))
    if snapshot.problems:
        shown = list(dict.fromkeys(snapshot.problems))[:3]
        parts.append(Text("\n".join(f"! {p}" for p in shown), style="dim red"))
    return Group(*parts)
