"""Fixtures for the alerts tests: a local webhook receiver, KPI points written straight into
`kpi_points` (read back through the aggregator's `kpi_value`), config applied through the
store, and the alerts service as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.alerts.settings import AlertsSettings
from shared.config import load_config_text
from shared.config.store import apply_config
from shared.db import make_engine, make_sessionmaker, transaction

ADMIN = "test-admin-token"
READER = "test-read-token"
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def get_json(url: str, *, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=5).json()


# --- webhook receiver -----------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A tiny HTTP server that records every request. `statuses` are answered in order
    (then 200); `delay` holds each answer back, to kill a sender mid-request."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[Received]:
        """Requests answered 2xx, one per idempotency key (what a deduping receiver keeps)."""
        with self.lock:
            seen: dict[str, Received] = {}
            for r in self.requests:
                if r.headers.get("x-answer", "200").startswith("2"):
                    seen.setdefault(r.headers.get("idempotency-key", str(id(r))), r)
            return list(seen.values())

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                status = state.statuses.pop(0) if state.statuses else 200
                headers = {k.lower(): v for k, v in self.headers.items()}
                headers["x-answer"] = str(status)
                state.requests.append(Received(self.path, headers, body, time.time()))
            if state.delay:
                time.sleep(state.delay)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- database -------------------------------------------------------------------------


def minute(at: datetime | None = None) -> datetime:
    return (at or datetime.now(UTC)).replace(second=0, microsecond=0)


def put_points(
    db: psycopg.Connection[Any],
    kpi: str,
    count: float,
    *,
    bucket: datetime | None = None,
    dims: dict[str, str] | None = None,
    total: float | None = None,
) -> None:
    """Set one minute of a count/sum KPI, as the aggregator would have committed it."""
    db.execute(
        "INSERT INTO kpi_points (kpi, dims, bucket, count, sum) VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (kpi, dims, bucket) DO UPDATE SET count = EXCLUDED.count,"
        " sum = EXCLUDED.sum, updated_at = now()",
        (kpi, json.dumps(dims or {}), minute(bucket), count, count if total is None else total),
    )


@pytest.fixture
def alerts_settings(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AlertsSettings:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    # The receivers of these tests listen on 127.0.0.1; test_targets.py covers the refusal.
    return AlertsSettings(
        admin_token=ADMIN,  # type: ignore[arg-type]
        alerts_read_token=READER,  # type: ignore[arg-type]
        alerts_allow_private_targets=True,
    )


@pytest.fixture
async def sessions(
    alerts_settings: AlertsSettings,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine: AsyncEngine = make_engine(alerts_settings, application_name="alerts-test", pool_size=2)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


ApplyConfig = Callable[[str], Any]


@pytest.fixture
def apply_yaml(sessions: async_sessionmaker[AsyncSession]) -> ApplyConfig:
    async def apply(text: str) -> None:
        config = load_config_text(text)
        async with transaction(sessions) as session:
            await apply_config(session, config)

    return apply


# --- the service as a subprocess ------------------------------------------------------


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def health(self) -> dict[str, Any] | None:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            return None

    def leading(self) -> bool:
        health = self.health()
        return bool(health and health.get("leader"))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


StartService = Callable[..., Service]


@pytest.fixture
def alerts_env(service_env: dict[str, str]) -> dict[str, str]:
    """Fast timers for tests: 1 s ticks, 0.2 s dispatch passes, short backoff."""
    return {
        **service_env,
        "PACEKEEPER_ADMIN_TOKEN": ADMIN,
        "PACEKEEPER_ALERTS_READ_TOKEN": READER,
        "PACEKEEPER_ALERTS_TICK_SECONDS": "1",
        "PACEKEEPER_ALERTS_DISPATCH_SECONDS": "0.2",
        "PACEKEEPER_ALERTS_STANDBY_POLL_SECONDS": "1",
        "PACEKEEPER_ALERTS_DELIVERY_BACKOFF_SECONDS": "0.2",
        "PACEKEEPER_ALERTS_DELIVERY_BACKOFF_MAX_SECONDS": "1",
        "PACEKEEPER_ALERTS_DELIVERY_TIMEOUT_SECONDS": "10",
        "PACEKEEPER_ALERTS_ALLOW_PRIVATE_TARGETS": "true",
        "PACEKEEPER_LOG_LEVEL": "INFO",
    }


@pytest.fixture
def start_service(alerts_env: dict[str, str], tmp_path: Path) -> Iterator[StartService]:
    started: list[Service] = []

    def start(**overrides: str) -> Service:
        port = free_port()
        env = {**os.environ, **alerts_env, "PACEKEEPER_ALERTS_PORT": str(port), **overrides}
        log = tmp_path / f"alerts-{len(started)}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "services.alerts.main"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        service = Service(process, port, log)
        started.append(service)
        try:
            wait_until(service.health, 20)
        except AssertionError:
            raise AssertionError(f"alerts service did not start:\n{log.read_text()}") from None
        return service

    yield start
    for service in started:
        service.stop()


# --- the web scorecard ----------------------------------------------------------------


def web_config(today: date) -> str:
    return f"""
kpis:
  - {{name: orders, kind: count, event: order_completed, dimensions: [source]}}
  - {{name: revenue, kind: sum, event: order_completed, field: properties.amount, unit: USD}}
  - {{name: refunds, kind: count, event: refund_issued}}
rules:
  - {{name: orders-high, kpi: orders, window: 5m, op: ">", value: 5, labels: {{team: shop}},
     annotations: {{summary: "{{{{ value }}}} orders in 5m"}}}}
goals:
  - {{name: refunds-cap, kpi: refunds, direction: at_most, target: 10,
     start: "{today - timedelta(days=1)}", deadline: "{today}"}}
"""


def set_watermark(db: psycopg.Connection[Any], topic: str, at: datetime) -> None:
    """Where the aggregator says every partition is complete, as it commits it."""
    db.execute(
        "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, watermark)"
        " VALUES ('pacekeeper-aggregator', %s, 0, 1, %s)"
        " ON CONFLICT (group_id, topic, partition) DO UPDATE SET watermark = EXCLUDED.watermark",
        (topic, at),
    )


ServeScorecard = Callable[..., Awaitable[Service]]


@pytest.fixture
def serve_scorecard(
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    service_env: dict[str, str],
    start_service: StartService,
) -> ServeScorecard:
    """The shop's config applied, the aggregator's watermark set, the service started with
    a fresh reading on every page."""

    async def serve(now: datetime, watermark: datetime, **env: str) -> Service:
        await apply_yaml(web_config(now.date()))
        set_watermark(db, service_env["PACEKEEPER_EVENTS_TOPIC"], watermark)
        return start_service(PACEKEEPER_ALERTS_WEB_CACHE_SECONDS="0", **env)

    return serve
