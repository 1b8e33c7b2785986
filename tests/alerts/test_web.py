"""The web scorecard over HTTP, on a real alerts service and PostgreSQL: the login, the
numbers against `kpi_value`, and who may acknowledge and silence. What a browser does with
the pages (live refresh, buttons) is in test_web_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.alerts.conftest import (
    ADMIN,
    READER,
    ServeScorecard,
    Service,
    minute,
    put_points,
    wait_until,
)
from tests.conftest import libpq_url

pytestmark = pytest.mark.e2e


_open: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def browser(service: Service) -> httpx.Client:
    """A client that keeps cookies and does not follow redirects, as the tests look at them."""
    client = httpx.Client(base_url=service.url, timeout=10)
    _open.append(client)
    return client


def log_in(service: Service, token: str) -> httpx.Client:
    client = browser(service)
    answer = client.post("/login", data={"token": token, "next": "/"})
    assert answer.status_code == 303, answer.text
    return client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "an admin page carries the form token"
    return match.group(1)


async def test_the_scorecard_needs_a_login_and_shows_what_kpi_value_answers(
    db: psycopg.Connection[Any], serve_scorecard: ServeScorecard
) -> None:
    now = minute()
    for back, count, source in ((30, 3, "web"), (20, 4, "app"), (1, 2, "web")):
        put_points(
            db, "orders", count, bucket=now - timedelta(minutes=back), dims={"source": source}
        )
        put_points(db, "revenue", count, bucket=now - timedelta(minutes=back), total=count * 25.5)
    put_points(db, "orders", 9, bucket=now - timedelta(days=1, minutes=10), dims={"source": "web"})
    mark = now - timedelta(minutes=2)  # the last orders are past it: not shown yet
    service = await serve_scorecard(now, mark)

    stranger = browser(service)
    anonymous = stranger.get("/?period=day")
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=/%3Fperiod%3Dday"
    wrong = stranger.post("/login", data={"token": "guess"})
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    evil = browser(service).post("/login", data={"token": READER, "next": "//evil.example/"})
    assert evil.headers["location"] == "/"  # never sent off-site after a login
    cookie = evil.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert READER not in cookie  # the cookie names the role, it never carries the token

    viewer = log_in(service, READER)
    page = viewer.get("/")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    day_start = datetime.combine(mark.date(), datetime.min.time(), UTC)
    shown = {
        kpi: re.search(rf'data-kpi="{kpi}".*?data-value="([^"]*)"', page.text, re.S)
        for kpi in ("orders", "revenue")
    }
    for kpi, match in shown.items():
        assert match, f"{kpi} has a tile"
        (expected,) = db.execute(
            "SELECT kpi_value(%s, %s, %s, NULL)", (kpi, day_start, mark)
        ).fetchone()  # type: ignore[misc]
        assert float(match.group(1)) == pytest.approx(float(expected or 0))
    assert "$" in page.text  # revenue shown as money
    assert 'data-goal="refunds-cap"' in page.text
    assert "Acknowledge" not in page.text  # a viewer gets no buttons

    fragment = viewer.get("/", params={"fragment": "1"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert 'data-kpi="orders"' in fragment.text

    kpi_page = viewer.get(
        "/kpis/orders", params={"window": "24h", "step": "1h", "dim.source": "web"}
    )
    assert kpi_page.status_code == 200
    total = re.search(r'data-testid="kpi-total">([^<]*)<', kpi_page.text)
    (web_orders,) = db.execute(
        "SELECT kpi_value('orders', %s, %s, '{\"source\": \"web\"}')",
        (mark - timedelta(hours=24), mark),
    ).fetchone()  # type: ignore[misc]
    assert total
    assert total.group(1) == f"{web_orders:,.0f}"
    bad_step = viewer.get("/kpis/orders", params={"step": "soon"})
    assert bad_step.status_code == 200  # said on the page, not a 500
    assert "step:" in bad_step.text
    assert viewer.get("/goals/refunds-cap").status_code == 200
    assert viewer.get("/goals/nope").status_code == 404


async def test_only_an_admin_session_with_the_form_token_acknowledges_or_silences(
    db: psycopg.Connection[Any], serve_scorecard: ServeScorecard
) -> None:
    now = minute()
    put_points(db, "orders", 9, bucket=now)
    service = await serve_scorecard(now, now + timedelta(minutes=1))
    wait_until(lambda: db.execute("SELECT id FROM alerts WHERE state = 'firing'").fetchone(), 15)
    (alert_id,) = db.execute("SELECT id FROM alerts WHERE state = 'firing'").fetchone()  # type: ignore[misc]

    viewer = log_in(service, READER)
    assert viewer.post(f"/alerts/{alert_id}/ack", data={"csrf": "x"}).status_code == 403
    admin = log_in(service, ADMIN)
    page = admin.get("/")
    assert f'action="/alerts/{alert_id}/ack"' in page.text
    token = csrf_of(page.text)
    assert csrf_of(admin.get("/").text) == token  # stable for the session
    assert admin.post(f"/alerts/{alert_id}/ack", data={"csrf": "forged"}).status_code == 403
    # Another site's form posting with the admin's cookie lacks the token.
    assert admin.post(f"/alerts/{alert_id}/ack", data={}).status_code == 422
    assert db.execute("SELECT count(*) FROM acknowledgements").fetchone() == (0,)

    acked = admin.post(f"/alerts/{alert_id}/ack", data={"csrf": token, "comment": "on it"})
    assert acked.status_code == 303
    assert db.execute("SELECT acked_by, comment FROM acknowledgements").fetchall() == [
        ("web scorecard (admin)", "on it")
    ]
    silenced = admin.post(f"/alerts/{alert_id}/silence", data={"csrf": token, "hours": "4"})
    assert silenced.status_code == 303
    ((matchers, starts, ends),) = db.execute(
        "SELECT matchers, starts_at, ends_at FROM silences"
    ).fetchall()
    assert {m["name"]: m["value"] for m in matchers} == {
        "alertname": "orders-high",
        "severity": "page",
        "kpi": "orders",
        "team": "shop",
    }
    assert ends - starts == timedelta(hours=4)
    assert "acknowledged" in admin.get("/").text

    admin.post("/logout")
    admin.cookies.clear()
    assert admin.get("/").status_code == 303


async def test_a_read_the_database_cancels_is_said_on_the_page_not_a_500(
    db: psycopg.Connection[Any], database_url: str, schema: str, serve_scorecard: ServeScorecard
) -> None:
    now = minute()
    put_points(db, "orders", 4, bucket=now - timedelta(minutes=5))
    service = await serve_scorecard(
        now, now + timedelta(minutes=1), PACEKEEPER_ALERTS_API_STATEMENT_TIMEOUT_SECONDS="1"
    )
    viewer = log_in(service, READER)
    assert 'data-value="4.0"' in viewer.get("/").text
    # Someone holds the KPI minutes locked: every read of them waits past the timeout.
    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as lock:
        lock.execute("LOCK TABLE kpi_points IN ACCESS EXCLUSIVE MODE")
        page = viewer.get("/")
        assert page.status_code == 200
        assert "The database did not answer this reading" in page.text
        assert "statement timeout" in page.text
        detail = viewer.get("/kpis/orders")
        assert detail.status_code == 200
        assert "statement timeout" in detail.text
        lock.rollback()
    assert 'data-value="4.0"' in viewer.get("/").text  # and back, once the lock is gone
