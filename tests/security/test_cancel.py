"""A read whose client went away stops costing the database: the query is cancelled."""

from __future__ import annotations

import time
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import text

from services.alerts.api.deps import Reader, Session
from services.alerts.app import create_app
from tests.alerts.conftest import READER
from tests.live import LiveServer
from tests.security.conftest import LIMITS, alerts_settings_for

pytestmark = [pytest.mark.integration, pytest.mark.security]


def _running(db: psycopg.Connection[Any], marker: str) -> int:
    row = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s"
        " AND pid <> pg_backend_pid()",
        (f"%{marker}%",),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_an_abandoned_read_cancels_its_query(
    service_env: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """A probe's abandoned series request kept PostgreSQL busy for over a minute. The slow
    query here stands in for any expensive read; it runs through the API's own session and
    token dependencies, behind the app's middleware."""
    # A statement timeout longer than the query, so only the cancellation can end it early.
    settings = alerts_settings_for(service_env, alerts_api_statement_timeout_seconds=60)
    app = create_app(settings, run_worker=False)
    marker = "abandoned_read_probe"

    @app.get("/v1/slow-read")
    async def slow_read(session: Session, _: Reader) -> dict[str, bool]:
        await session.execute(text(f"SELECT pg_sleep(30) AS {marker}"))
        return {"done": True}

    server = LiveServer(app, LIMITS)
    url = server.start()
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(
                f"{url}/v1/slow-read", headers={"Authorization": f"Bearer {READER}"}, timeout=2
            )
        assert _running(db, marker) <= 1
        deadline = time.monotonic() + 10
        while _running(db, marker):
            assert time.monotonic() < deadline, "the query ran on after the client left"
            time.sleep(0.1)
        # The pool is usable again: the cancelled connection was returned or replaced.
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
    finally:
        server.stop()
