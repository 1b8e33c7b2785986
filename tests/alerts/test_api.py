"""The HTTP API in-process on real PostgreSQL: auth, 422 field paths, CRUD through the
config store, silences, acknowledgements, goals and KPI series."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from services.alerts.app import create_app
from services.alerts.settings import AlertsSettings
from tests.alerts.conftest import ADMIN, READER, minute, put_points

pytestmark = pytest.mark.integration

ADMIN_H = {"Authorization": f"Bearer {ADMIN}"}
READ_H = {"Authorization": f"Bearer {READER}"}

ORDERS = {"name": "orders", "kind": "count", "event": "order_completed", "dimensions": ["source"]}
OPS = {"name": "ops", "type": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "hush"}
RULE = {"name": "orders-low", "kpi": "orders", "window": "15m", "op": "<", "value": 3}


@pytest.fixture
async def api(alerts_settings: AlertsSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(alerts_settings, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://alerts") as client:
            yield client


async def test_auth(api: httpx.AsyncClient) -> None:
    assert (await api.get("/v1/rules")).status_code == 401
    response = await api.get("/v1/rules", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert (await api.get("/v1/rules", headers=READ_H)).status_code == 200
    assert (await api.put("/v1/kpis/orders", json=ORDERS, headers=READ_H)).status_code == 403
    assert (await api.post("/v1/silences", json={}, headers=READ_H)).status_code == 403
    assert (await api.get("/healthz")).status_code == 200  # probes need no token
    assert (await api.get("/docs")).status_code == 200
    assert "/v1/goals" in (await api.get("/openapi.json")).json()["paths"]


def fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 422, response.text
    return [d["field"] for d in response.json()["detail"]]


async def test_validation_errors_name_the_field(api: httpx.AsyncClient) -> None:
    assert (await api.put("/v1/kpis/orders", json=ORDERS, headers=ADMIN_H)).status_code == 201
    bad_window = {**RULE, "window": "soon"}
    assert fields(await api.put("/v1/rules/orders-low", json=bad_window, headers=ADMIN_H)) == [
        "window"
    ]
    bad_sample = {**RULE, "min_sample": {"kpi": "orders", "value": -1}}
    assert fields(await api.post("/v1/rules", json=bad_sample, headers=ADMIN_H)) == [
        "min_sample.value"
    ]
    unknown = {**RULE, "kpi": "nope", "channels": ["ghost"]}
    assert fields(await api.post("/v1/rules", json=unknown, headers=ADMIN_H)) == [
        "kpi",
        "channels[0]",
    ]
    undeclared = {**RULE, "group_by": ["properties.channel"], "dims": {"source": "web"}}
    assert fields(await api.post("/v1/rules", json=undeclared, headers=ADMIN_H)) == ["group_by[0]"]
    mismatch = await api.put("/v1/rules/other", json=RULE, headers=ADMIN_H)
    assert fields(mismatch) == ["name"]
    no_url = {"name": "x", "type": "slack"}
    assert fields(await api.post("/v1/channels", json=no_url, headers=ADMIN_H)) == ["(body)"]


async def test_crud_goes_through_the_config_store(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    assert (await api.post("/v1/kpis", json=ORDERS, headers=ADMIN_H)).status_code == 201
    assert (await api.post("/v1/kpis", json=ORDERS, headers=ADMIN_H)).status_code == 409
    assert (await api.post("/v1/channels", json=OPS, headers=ADMIN_H)).status_code == 201
    rule = {**RULE, "channels": ["ops"], "for": "5m"}
    assert (await api.put("/v1/rules/orders-low", json=rule, headers=ADMIN_H)).status_code == 201
    assert (await api.put("/v1/rules/orders-low", json=rule, headers=ADMIN_H)).status_code == 200
    stored = await api.get("/v1/rules/orders-low", headers=READ_H)
    assert stored.json()["for"] == "5m"
    assert stored.json()["channels"] == ["ops"]
    # The same rows `pacekeeper apply` writes, with the secret kept for the services…
    spec = db.execute("SELECT spec FROM channels WHERE name = 'ops'").fetchone()
    assert spec is not None
    assert spec[0]["secret"] == "hush"
    # …and masked in the API.
    assert (await api.get("/v1/channels/ops", headers=READ_H)).json()["secret"] == "**********"
    assert (await api.delete("/v1/kpis/orders", headers=ADMIN_H)).status_code == 409
    assert (await api.delete("/v1/channels/ops", headers=ADMIN_H)).status_code == 409
    assert (await api.delete("/v1/rules/orders-low", headers=ADMIN_H)).status_code == 204
    assert (await api.delete("/v1/rules/orders-low", headers=ADMIN_H)).status_code == 404
    assert (await api.get("/v1/rules", headers=READ_H)).json() == []


async def test_silences(api: httpx.AsyncClient) -> None:
    ends = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "matchers": [{"name": "alertname", "value": "orders-.*", "type": "=~"}],
        "ends_at": ends,
        "created_by": "amy",
        "comment": "deploy",
    }
    created = await api.post("/v1/silences", json=body, headers=ADMIN_H)
    assert created.status_code == 201
    silence_id = created.json()["id"]
    assert [s["id"] for s in (await api.get("/v1/silences", headers=READ_H)).json()] == [silence_id]
    bad = {**body, "matchers": [{"name": "a", "value": "(", "type": "=~"}]}
    assert fields(await api.post("/v1/silences", json=bad, headers=ADMIN_H)) == ["matchers[0]"]
    assert (await api.delete(f"/v1/silences/{silence_id}", headers=ADMIN_H)).status_code == 204
    assert (await api.get("/v1/silences", headers=READ_H)).json() == []
    expired = (await api.get("/v1/silences?expired=true", headers=READ_H)).json()
    assert [s["id"] for s in expired] == [silence_id]


async def test_ack_of_unknown_alert_is_404(api: httpx.AsyncClient) -> None:
    assert (await api.post("/v1/alerts/999/ack", headers=ADMIN_H)).status_code == 404
    assert (await api.get("/v1/alerts", headers=READ_H)).json() == []
    assert fields(await api.get("/v1/alerts?state=bogus", headers=READ_H)) == ["state"]


async def test_goals_and_series(api: httpx.AsyncClient, db: psycopg.Connection[Any]) -> None:
    await api.post("/v1/kpis", json=ORDERS, headers=ADMIN_H)
    today = datetime.now(UTC).date()
    goal = {
        "name": "orders-push",
        "kpi": "orders",
        "target": 1000,
        "start": str(today - timedelta(days=1)),
        "deadline": str(today + timedelta(days=1)),
    }
    assert (await api.post("/v1/goals", json=goal, headers=ADMIN_H)).status_code == 201
    now = datetime.now(UTC)
    put_points(db, "orders", 40, dims={"source": "web"})
    put_points(db, "orders", 60, dims={"source": "app"}, bucket=now - timedelta(minutes=1))
    (listed,) = (await api.get("/v1/goals", headers=READ_H)).json()
    assert listed["value"] == 100
    assert listed["target"] == 1000
    elapsed = listed["elapsed"]
    assert 1 / 3 < elapsed < 2 / 3
    assert listed["expected"] == pytest.approx(1000 * elapsed, rel=1e-3)
    assert listed["status"] == "off_track"  # 100 by a third of the way projects ~250
    assert listed["gap"] == pytest.approx(100 - listed["expected"])
    one = (await api.get("/v1/goals/orders-push", headers=READ_H)).json()
    assert one["history"] == []
    assert one["status"] == "off_track"

    t_from = minute(now - timedelta(minutes=2))
    series = await api.get(
        "/v1/kpis/orders/series",
        params={
            "from": t_from.isoformat(),
            "to": (t_from + timedelta(minutes=3)).isoformat(),
            "step": "1m",
            "dims": '{"source": "web"}',
        },
        headers=READ_H,
    )
    assert series.status_code == 200, series.text
    assert [p["value"] for p in series.json()["points"]] == [0.0, 0.0, 40.0]
    assert fields(
        await api.get(
            "/v1/kpis/orders/series",
            params={"from": t_from.isoformat(), "to": t_from.isoformat(), "step": "1m"},
            headers=READ_H,
        )
    ) == ["to"]
    assert date.fromisoformat(goal["deadline"]) > today
