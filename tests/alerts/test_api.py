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


async def test_a_kpi_changed_through_the_api_is_a_version_the_api_applied(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    assert (await api.put("/v1/kpis/orders", json=ORDERS, headers=ADMIN_H)).status_code == 201
    changed = {**ORDERS, "where": {"source": "web"}}
    assert (await api.put("/v1/kpis/orders", json=changed, headers=ADMIN_H)).status_code == 200
    rows = db.execute(
        "SELECT version, applied_by FROM kpi_versions WHERE kpi = 'orders' ORDER BY version"
    ).fetchall()
    assert rows == [(1, "admin API"), (2, "admin API")]
    shown = (await api.get("/v1/kpis/orders", headers=READ_H)).json()
    assert [v["version"] for v in shown["versions"]] == [1, 2]


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


async def test_one_poisoned_write_is_refused_and_an_old_bad_row_stops_nothing(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    """A hostile probe's writes: each was accepted (201), could not be read back, and then
    every GET/POST/DELETE of the section answered 422 for everyone."""
    assert (await api.put("/v1/kpis/orders", json=ORDERS, headers=ADMIN_H)).status_code == 201
    assert fields(await api.post("/v1/rules", json={**RULE, "for": -60}, headers=ADMIN_H)) == [
        "for"
    ]
    huge = {**RULE, "for": "99999999999999999d"}
    assert fields(await api.post("/v1/rules", json=huge, headers=ADMIN_H)) == ["for"]
    nan = '{"name": "nan", "kpi": "orders", "window": "15m", "op": "<", "value": NaN}'
    headers = {**ADMIN_H, "Content-Type": "application/json"}
    assert fields(await api.post("/v1/rules", content=nan, headers=headers)) == ["value"]
    goal = {"name": "g", "kpi": "orders", "direction": "at_least"}
    infinite = '{"name": "g", "kpi": "orders", "target": Infinity, "period": "month"}'
    assert fields(await api.post("/v1/goals", content=infinite, headers=headers)) == ["target"]
    forever = {**goal, "target": 5, "start": "0001-01-01", "deadline": "9999-12-31"}
    assert fields(await api.post("/v1/goals", json=forever, headers=ADMIN_H)) == [
        "start",
        "deadline",
    ]
    assert (await api.get("/v1/rules", headers=READ_H)).json() == []

    # A row an older version stored with looser checks: left out and counted, never
    # the whole section; it can still be deleted.
    assert (await api.post("/v1/rules", json=RULE, headers=ADMIN_H)).status_code == 201
    db.execute(
        "INSERT INTO rules (name, spec) VALUES ('legacy', %s::jsonb)",
        ('{"name": "legacy", "kpi": "orders", "window": "15m", "op": "<", "for": -60}',),
    )
    listed = await api.get("/v1/rules", headers=READ_H)
    assert listed.status_code == 200
    assert [r["name"] for r in listed.json()] == ["orders-low"]
    assert (await api.get("/v1/rules/legacy", headers=READ_H)).status_code == 404
    assert (await api.delete("/v1/rules/legacy", headers=ADMIN_H)).status_code == 204
    metrics = (await api.get("/metrics")).text
    assert 'pacekeeper_config_rows_invalid_total{section="rules"}' in metrics


async def test_credential_bearing_urls_are_masked_for_readers_and_kept_for_the_services(
    api: httpx.AsyncClient, db: psycopg.Connection[Any]
) -> None:
    slack = {"name": "chat", "type": "slack", "url": "https://hooks.slack.com/services/T0/B0/XyZ"}
    hook = {
        "name": "hook",
        "type": "webhook",
        "url": "https://ops:pw@hooks.example:8443/in?token=abc",
    }
    for channel in (slack, hook):
        created = await api.post("/v1/channels", json=channel, headers=ADMIN_H)
        assert created.status_code == 201, created.text
        assert "XyZ" not in created.text
        assert "abc" not in created.text
    listed = {c["name"]: c["url"] for c in (await api.get("/v1/channels", headers=READ_H)).json()}
    assert listed == {
        "chat": "https://hooks.slack.com/**********",
        "hook": "https://**********@hooks.example:8443/in?token=**********",
    }
    stored = dict(db.execute("SELECT name, spec->>'url' FROM channels").fetchall())
    assert stored == {"chat": slack["url"], "hook": hook["url"]}


async def test_series_refuses_endless_steps_and_unknown_or_nul_dimensions(
    api: httpx.AsyncClient,
) -> None:
    """Each of these was a 500 for any holder of the read-only token."""
    assert (await api.put("/v1/kpis/orders", json=ORDERS, headers=ADMIN_H)).status_code == 201
    window = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}

    async def refused(**params: str) -> list[str]:
        response = await api.get(
            "/v1/kpis/orders/series", params={**window, **params}, headers=READ_H
        )
        return fields(response)

    assert await refused(step="9999999999d") == ["step"]
    assert await refused(step="999999999d") == ["step"]
    assert await refused(dims='{"nope": "x"}') == ["dims.nope"]
    assert await refused(dims='{"source": "web\\u0000"}') == ["dims"]
    fine = await api.get(
        "/v1/kpis/orders/series",
        params={**window, "step": "1d", "dims": '{"source": "web"}'},
        headers=READ_H,
    )
    assert fine.status_code == 200, fine.text
    assert len(fine.json()["points"]) == 30


async def test_a_read_that_asks_too_much_is_cancelled_with_a_clear_answer(
    alerts_settings: AlertsSettings,
) -> None:
    """The cost bound of one request (PACEKEEPER_ALERTS_API_STATEMENT_TIMEOUT_SECONDS, on the
    API's own connections): the server cancels the statement, the client is told why."""
    settings = alerts_settings.model_copy(update={"alerts_api_statement_timeout_seconds": 0.001})
    app = create_app(settings, run_worker=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://alerts") as api:
            await api.put("/v1/kpis/orders", json=ORDERS, headers=ADMIN_H)
            response = await api.get(
                "/v1/kpis/orders/series",
                params={"from": "2026-11-01T00:00:00Z", "to": "2026-11-14T00:00:00Z", "step": "1m"},
                headers=READ_H,
            )
    assert response.status_code == 503, response.text
    assert "cancelled" in response.json()["detail"]
    assert response.headers["retry-after"] == "5"
