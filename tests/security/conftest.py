"""Both HTTP services as they run in production (guarded httptools on uvloop), in threads, on
the real broker and database: ingest with an API key, the alerts API with its two tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from services.alerts.app import create_app as create_alerts_app
from services.alerts.settings import AlertsSettings
from services.ingest.app import create_app as create_ingest_app
from shared.http_server import HttpLimits
from tests.alerts.conftest import ADMIN, READER
from tests.conftest import settings_from_env
from tests.ingest.conftest import create_key, make_settings
from tests.live import LiveServer

# Short enough for a test to watch the server cut a slow client off.
LIMITS = HttpLimits(header_timeout=2.0, body_timeout=3.0, linger_timeout=2.0)


@dataclass(frozen=True)
class Port:
    """One service's front door: where to POST, and with which credentials."""

    name: str
    url: str
    post_path: str
    headers: dict[str, str] = field(default_factory=dict)


def alerts_settings_for(env: dict[str, str], **overrides: Any) -> AlertsSettings:
    defaults = {
        "admin_token": ADMIN,
        "alerts_read_token": READER,
        "alerts_allow_private_targets": True,
    }
    return settings_from_env(AlertsSettings, env, **(defaults | overrides))


@pytest.fixture
def ingest_port(service_env: dict[str, str]) -> Iterator[Port]:
    settings = make_settings(service_env)
    key = asyncio.run(create_key(settings))
    server = LiveServer(create_ingest_app(settings), LIMITS)
    url = server.start()
    try:
        yield Port("ingest", url, "/v1/events", {"Authorization": f"Bearer {key}"})
    finally:
        server.stop()


@pytest.fixture
def alerts_port(service_env: dict[str, str]) -> Iterator[Port]:
    app = create_alerts_app(alerts_settings_for(service_env), run_worker=False)
    server = LiveServer(app, LIMITS)
    url = server.start()
    try:
        yield Port("alerts", url, "/v1/kpis", {"Authorization": f"Bearer {ADMIN}"})
    finally:
        server.stop()


@pytest.fixture(params=["ingest", "alerts"])
def port(request: pytest.FixtureRequest) -> Port:
    """Each test that takes `port` runs against both services."""
    return request.getfixturevalue(f"{request.param}_port")  # type: ignore[no-any-return]
