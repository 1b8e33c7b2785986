"""Publishing against a broker that goes away: 503 while it is down, and every event that
got 202 is on the topic after it is back.

This test stops a broker, so it starts a private one on other ports (deploy/local/kafka.sh);
the shared broker on 9092 that other tests use is never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.ingest.app import create_app
from tests.conftest import Topics
from tests.ingest.conftest import LiveServer, event, make_settings, read_topic

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "deploy" / "local" / "kafka.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateBroker:
    def __init__(self) -> None:
        self.port, self.controller_port = _free_port(), _free_port()
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_HEAP_OPTS": "-Xmx256m -Xms128m",
            "KAFKA_STOP_TIMEOUT": "20",
        }
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _run(self, command: str) -> None:
        subprocess.run([str(KAFKA_SH), command], env=self.env, check=True, timeout=180)

    def up(self) -> None:
        self._run("up")

    def down(self) -> None:
        self._run("down")

    def forget(self) -> None:
        state = Path(os.environ.get("PACEKEEPER_STATE_DIR", REPO / ".local"))
        shutil.rmtree(state / "kafka" / f"broker-{self.port}", ignore_errors=True)


@pytest.fixture
def private_broker() -> Iterator[PrivateBroker]:
    if not KAFKA_SH.exists():
        pytest.fail("deploy/local/kafka.sh is missing")
    broker = PrivateBroker()
    broker.up()
    try:
        yield broker
    finally:
        broker.down()
        broker.forget()


async def _post(http: httpx.AsyncClient, body: dict[str, object]) -> httpx.Response:
    return await http.post("/v1/events", json=body)


async def test_broker_down_gives_503_and_every_202_survives_a_restart(
    private_broker: PrivateBroker, service_env: dict[str, str], api_key: str, topics: Topics
) -> None:
    settings = make_settings(
        service_env,
        kafka_bootstrap=private_broker.bootstrap,
        ingest_produce_timeout=3.0,
        ingest_broker_probe_interval=0.5,
        ingest_retry_after=2,
    )
    server = LiveServer(create_app(settings))
    url = server.start()
    acknowledged: list[str] = []
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
        ) as http:
            for i in range(20):
                response = await _post(http, event(id=f"before-{i}", user_id=f"u{i}"))
                assert response.status_code == 202
                acknowledged.append(f"before-{i}")

            await asyncio.to_thread(private_broker.down)
            refused = []
            for i in range(5):
                response = await _post(http, event(id=f"during-{i}"))
                refused.append(response)
                assert response.status_code == 503, response.text
                assert response.headers["Retry-After"] == "2"
            assert (await http.get("/readyz")).status_code == 503
            # The first request waited for the deadline; the others were refused at once.
            assert refused[-1].elapsed.total_seconds() < 1.0

            await asyncio.to_thread(private_broker.up)
            deadline = time.monotonic() + 60
            while True:
                response = await _post(http, event(id="after-0"))
                if response.status_code == 202:
                    acknowledged.append("after-0")
                    break
                assert response.status_code == 503
                assert time.monotonic() < deadline, "ingest did not recover"
                await asyncio.sleep(0.5)
            for i in range(1, 20):
                response = await _post(http, event(id=f"after-{i}", user_id=f"u{i}"))
                assert response.status_code == 202
                acknowledged.append(f"after-{i}")
            assert (await http.get("/readyz")).status_code == 200
    finally:
        server.stop()

    on_topic = {
        envelope.id
        for _, envelope in await read_topic(
            private_broker.bootstrap, topics.events, len(acknowledged), within=15
        )
    }
    assert set(acknowledged) <= on_topic
