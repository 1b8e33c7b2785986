"""Ingest with several worker processes on one port: the kernel spreads connections over
them, `/metrics` on any worker answers for all of them, and a worker that dies is replaced
while the others keep serving."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.ingest.settings import IngestSettings
from tests.conftest import Topics
from tests.ingest.conftest import event, read_topic
from tests.ingest.test_main import _free_port

pytestmark = pytest.mark.e2e

_REQUESTS = re.compile(
    rb'^pacekeeper_ingest_requests_total\{route="/v1/events",status="202"\} (\S+)$', re.M
)


@dataclass
class Running:
    process: asyncio.subprocess.Process
    url: str
    tmp: Path

    def worker_pids(self) -> set[int]:
        """The supervisor's children that are workers (multiprocessing also starts a
        resource tracker)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = set()
        for pid in children.read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.add(int(pid))
            except FileNotFoundError:
                pass  # exited meanwhile
        return pids

    def listening_pids(self) -> set[int]:
        """Workers whose socket on the port listens: uvicorn listens once the app's startup
        (producer connected) is complete."""
        port = int(self.url.rsplit(":", 1)[1])
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
        listening = set()
        for pid in self.worker_pids():
            try:
                links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
            except OSError:  # exited, or a descriptor closed while we looked
                continue
            if any(f"socket:[{inode}]" in links for inode in inodes):
                listening.add(pid)
        return listening

    def metric_files_by_pid(self) -> set[int]:
        """Workers that wrote a counter (prometheus-client names the file after the pid)."""
        files = self.tmp.glob("pacekeeper-ingest-metrics-*/counter_*.db")
        return {int(f.stem.removeprefix("counter_")) for f in files}


@pytest.fixture
async def running(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Running]:
    port = _free_port()
    env = {
        **os.environ,
        **service_env,
        "PACEKEEPER_INGEST_PORT": str(port),
        "PACEKEEPER_INGEST_WORKERS": "2",
        "TMPDIR": str(tmp_path),  # where the supervisor makes its metrics directory
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from services.cli import main; main()", "run", "ingest", env=env
    )
    run = Running(process, f"http://127.0.0.1:{port}", tmp_path)
    try:
        await _wait_ready(run, 2)
        yield run
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _wait_ready(run: Running, workers: int, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=run.url) as http:
        while True:
            ready = False
            try:
                ready = (await http.get("/readyz")).status_code == 200
            except httpx.TransportError:
                pass
            pids = run.worker_pids()
            if ready and len(pids) == workers and run.listening_pids() == pids:
                return
            assert run.process.returncode is None, "the supervisor exited"
            assert time.monotonic() < deadline, "ingest workers not ready"
            await asyncio.sleep(0.2)


async def _send(url: str, api_key: str, ids: list[str]) -> list[int]:
    """Each event on a connection of its own, so the kernel picks a worker for each."""

    async def one(event_id: str) -> int:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {api_key}"}
        ) as http:
            return (await http.post("/v1/events", json=event(id=event_id))).status_code

    return list(await asyncio.gather(*(one(i) for i in ids)))


async def _accepted_in_metrics(url: str) -> float:
    async with httpx.AsyncClient(base_url=url) as http:
        body = (await http.get("/metrics")).content
    found = _REQUESTS.search(body)
    return float(found.group(1)) if found else 0.0


async def test_workers_share_the_port_and_metrics_answer_for_all_of_them(
    running: Running, api_key: str, ingest_settings: IngestSettings, topics: Topics
) -> None:
    ids = [f"w{i}" for i in range(60)]
    assert await _send(running.url, api_key, ids) == [202] * len(ids)
    # Both workers served requests (each wrote its own counter file) ...
    assert running.metric_files_by_pid() == running.worker_pids()
    # ... and any worker's /metrics counts all 60, whichever worker answers the scrape.
    for _ in range(6):
        assert await _accepted_in_metrics(running.url) == len(ids)
    got = await read_topic(ingest_settings.kafka_bootstrap, topics.events, len(ids))
    assert sorted(e.id for _, e in got) == sorted(ids)


async def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(
    running: Running, api_key: str, ingest_settings: IngestSettings, topics: Topics
) -> None:
    before = running.worker_pids()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    # The survivor answers new connections at once: the dead worker's socket left the
    # port's group when the kernel closed it.
    await asyncio.sleep(0.2)
    first = [f"a{i}" for i in range(20)]
    assert await _send(running.url, api_key, first) == [202] * len(first)
    await _wait_ready(running, 2)
    after = running.worker_pids()
    assert victim not in after
    assert len(after - before) == 1
    second = [f"b{i}" for i in range(20)]
    assert await _send(running.url, api_key, second) == [202] * len(second)
    # The dead worker's counts stay in the sum; nothing was counted twice.
    assert await _accepted_in_metrics(running.url) == len(first) + len(second)
    got = await read_topic(ingest_settings.kafka_bootstrap, topics.events, 40)
    assert sorted(e.id for _, e in got) == sorted(first + second)
