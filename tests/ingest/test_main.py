"""`pacekeeper run ingest` as a process, with one worker or several: it serves, and on
SIGTERM finishes in-flight work, flushes the producers and exits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time

import httpx
import pytest

from services.ingest.settings import IngestSettings
from tests.conftest import Topics
from tests.ingest.conftest import event, read_topic

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_run_ingest_serves_then_shuts_down_gracefully(
    service_env: dict[str, str],
    api_key: str,
    ingest_settings: IngestSettings,
    topics: Topics,
    workers: str,
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        **service_env,
        "PACEKEEPER_INGEST_PORT": str(port),
        "PACEKEEPER_INGEST_WORKERS": workers,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from services.cli import main; main()",
        "run",
        "ingest",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api_key}"}
        ) as http:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert process.returncode is None
                assert time.monotonic() < deadline
                await asyncio.sleep(0.2)
            # Open ten keep-alive connections, then have requests in flight on them at SIGTERM.
            warm = [http.post("/v1/events", json=event(id=f"w{i}")) for i in range(10)]
            assert {a.status_code for a in await asyncio.gather(*warm)} == {202}
            sends = [http.post("/v1/events", json=event(id=f"e{i}")) for i in range(10)]
            in_flight = asyncio.gather(*sends, return_exceptions=True)
            await asyncio.sleep(0)
            process.send_signal(signal.SIGTERM)
            answers = await in_flight
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
    # Uvicorn re-raises the signal once shutdown is complete, so supervisors see why it ended.
    assert process.returncode in (0, -signal.SIGTERM)
    # Every worker flushed its producer.
    assert stderr.count(b"ingest stopped: producer flushed and closed") == int(workers)
    # A request either finished (202) or got no answer at all: a new connection refused, or
    # the keep-alive race (the server closed an idle connection as the request was sent),
    # which a client retries and the (source, id) dedupe absorbs. Never an error status, and
    # every 202 is on the topic.
    unanswered = (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)
    accepted = {f"w{i}" for i in range(10)}
    for i, answer in enumerate(answers):
        if isinstance(answer, httpx.Response):
            assert answer.status_code == 202
            accepted.add(f"e{i}")
        else:
            assert isinstance(answer, unanswered), answer
    got = await read_topic(ingest_settings.kafka_bootstrap, topics.events, len(accepted))
    assert accepted <= {e.id for _, e in got}
