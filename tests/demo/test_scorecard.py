"""The scorecard reads the alerts API and /metrics, and renders what a person needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from rich.console import Console

from services.demo.api import AlertsApi, AlertState, GoalState, metric_sum, parse_metrics
from services.demo.scorecard import (
    Endpoints,
    ScorecardCollector,
    render,
    sparkline,
    window_step,
)

pytestmark = pytest.mark.unit

METRICS = {
    "ingest": 'pacekeeper_ingest_events_accepted_total{source="web-shop"} %d\n'
    'pacekeeper_ingest_events_accepted_total{source="ads"} 5\n',
    "aggregator": "pacekeeper_aggregator_events_applied_total %d\n"
    'pacekeeper_aggregator_consumer_lag{partition="0"} 3\n'
    'pacekeeper_aggregator_consumer_lag{partition="1"} 4\n',
    "alerts": 'pacekeeper_alerts_notifications_sent_total{channel="ops"} 2\n'
    'pacekeeper_alerts_alerts{state="firing"} 1\n',
}


def fake_deployment(scrapes: list[int]) -> httpx.MockTransport:
    """The alerts API and three /metrics endpoints; counters grow by 100 per scrape."""

    def handler(request: httpx.Request) -> httpx.Response:
        path, port = request.url.path, request.url.port
        if path == "/metrics":
            service = {8080: "ingest", 8081: "aggregator", 8082: "alerts"}[port or 0]
            if service == "ingest":
                scrapes.append(1)
            n = 100 * len(scrapes)
            text = METRICS[service] % n if "%d" in METRICS[service] else METRICS[service]
            return httpx.Response(200, text=text)
        assert request.headers["authorization"] == "Bearer token"
        if path == "/v1/kpis":
            return httpx.Response(
                200,
                json=[
                    {"name": "orders", "kind": "count"},
                    {"name": "conversion", "kind": "ratio"},
                    {"name": "revenue", "kind": "sum", "unit": "USD"},
                ],
            )
        if path.endswith("/series"):
            step = request.url.params["step"]
            if step.endswith("d"):  # the whole-window reading
                return httpx.Response(
                    200, json={"points": [{"time": "2026-11-27T09:00:00Z", "value": 0.031}]}
                )
            points = [
                {"time": f"2026-11-27T09:{m:02d}:00Z", "value": m / 100} for m in range(0, 60, 5)
            ]
            return httpx.Response(200, json={"kpi": "x", "points": points})
        if path == "/v1/goals":
            return httpx.Response(
                200,
                json=[
                    {"name": "conversion-monthly", "kpi": "conversion", "status": "at_risk",
                     "value": 0.028, "target": 0.03, "expected": 0.03, "projection": 0.028},
                ],
            )  # fmt: skip
        if path == "/v1/alerts":
            assert request.url.params["state"] == "firing"
            return httpx.Response(
                200,
                json=[
                    {"id": 1, "name": "checkout-conversion-collapse", "state": "firing",
                     "labels": {"severity": "page"}, "fired_at": "2026-11-27T09:58:00+00:00",
                     "resolved_at": None,
                     "annotations": {"summary": "Checkout conversion under 1%"}},
                ],
            )  # fmt: skip
        return httpx.Response(404)

    return httpx.MockTransport(handler)


def test_sparkline() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, 5, 5]) == " ▄▄"
    assert sparkline([]) == ""
    assert len(sparkline(list(range(100)), width=20)) == 20


def test_window_step_reaches_past_the_window() -> None:
    assert window_step(timedelta(hours=1)) == timedelta(days=2)
    assert window_step(timedelta(days=7)) == timedelta(days=8)


def test_metrics_parsing_sums_label_sets() -> None:
    samples = parse_metrics(METRICS["aggregator"] % 7)
    assert metric_sum(samples, "pacekeeper_aggregator_consumer_lag") == 7
    assert metric_sum(samples, "pacekeeper_aggregator_consumer_lag", partition="1") == 4
    assert metric_sum(samples, "missing") is None


def test_alert_and_goal_payloads_are_read_tolerantly() -> None:
    alert = AlertState.parse(
        {"name": "x", "state": "resolved", "labels": {"severity": "page"},
         "fired_at": "2026-11-27T09:00:00Z", "resolved_at": "2026-11-27T09:30:00Z"}
    )  # fmt: skip
    assert alert.time_to_resolve == timedelta(minutes=30)
    assert alert.severity == "page"
    manager = AlertState.parse(
        {"labels": {"alertname": "y"}, "status": {"state": "active"},
         "startsAt": "2026-11-27T09:00:00Z", "endsAt": "0001-01-01T00:00:00Z"}
    )  # fmt: skip
    assert (manager.name, manager.firing, manager.resolved_at) == ("y", True, None)
    goal = GoalState.parse({"name": "g", "kpi": "k", "status": None, "target": "0.5"})
    assert (goal.status, goal.target, goal.value) == ("unknown", 0.5, None)


async def test_collect_and_render() -> None:
    scrapes: list[int] = []
    transport = fake_deployment(scrapes)
    api = AlertsApi("http://127.0.0.1:8082", "token", transport=transport)
    collector = ScorecardCollector(api, Endpoints())
    collector._http = httpx.AsyncClient(transport=transport)  # the fake /metrics too
    try:
        first = await collector.collect()
        second = await collector.collect()
    finally:
        await collector.aclose()
        await api.aclose()
    assert first.pipeline.ingest_rate is None  # a rate needs two scrapes
    assert second.pipeline.ingest_rate is not None
    assert second.pipeline.ingest_rate > 0
    assert second.pipeline.lag == 7
    assert [t.name for t in second.kpis] == ["orders", "revenue", "conversion"]
    conversion = second.kpis[2]
    assert conversion.unit == "ratio"
    assert conversion.value == 0.031
    assert len(conversion.series) == 12
    assert [a.name for a in second.firing] == ["checkout-conversion-collapse"]
    assert not second.problems

    console = Console(record=True, width=160)
    console.print(
        render(second, extra={"simulator sent": "1,000"}, log=["10:00 webhook firing [page]"])
    )
    text = console.export_text()
    for expected in (
        "Pacekeeper scorecard",
        "conversion-monthly",
        "at risk",
        "3.1%",
        "checkout-conversion-collapse",
        "Checkout conversion under 1%",
        "simulator sent",
        "webhook firing [page]",
    ):
        assert expected in text


async def test_an_unreachable_deployment_is_reported_not_raised() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport = httpx.MockTransport(down)
    api = AlertsApi("http://127.0.0.1:8082", "token", transport=transport)
    collector = ScorecardCollector(api, Endpoints())
    collector._http = httpx.AsyncClient(transport=transport)
    try:
        snapshot = await collector.collect()
    finally:
        await collector.aclose()
        await api.aclose()
    assert snapshot.problems
    assert snapshot.pipeline.up == {"ingest": False, "aggregator": False, "alerts": False}
    Console(record=True).print(render(snapshot))
    assert snapshot.taken_at <= datetime.now(UTC)
