"""The demo's child processes: the services as `pacekeeper run …` and the key commands,
each from this very installation, started, awaited until healthy, and stopped in order."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from services.demo.settings import DemoSettings
from services.ingest import keys
from shared.db import make_engine

STOP_TIMEOUT = 15.0  # the services' own shutdown timeouts are 10 s


class DemoError(RuntimeError):
    pass


def pacekeeper_command() -> list[str]:
    """The CLI of this very installation (the venv's entry point beside its python)."""
    beside = Path(sys.executable).with_name("pacekeeper")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("pacekeeper")
    if found:
        return [found]
    return [sys.executable, "-c", "from services.cli import main; main()"]


@dataclass
class ServiceProcess:
    name: str
    env: Mapping[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *pacekeeper_command(),
            "run",
            self.name,
            env=dict(self.env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            # Its own session: Ctrl-C reaches only the demo, which stops services in order.
            start_new_session=True,
        )

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    async def stop(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def child_env(settings: DemoSettings, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    # A livelier alerts service unless the caller chose its own tick.
    env.setdefault("PACEKEEPER_ALERTS_TICK_SECONDS", str(settings.demo_alerts_tick_seconds))
    env.setdefault("PYTHONUNBUFFERED", "1")
    # The demo's webhook receiver listens on 127.0.0.1.
    env.setdefault("PACEKEEPER_ALERTS_ALLOW_PRIVATE_TARGETS", "true")
    # The demo's shop sends a few events a minute: on one partition each of them moves the
    # watermark. Spread over six, a partition that sees nothing but the demo's late orders
    # would hold the topic's watermark back at yesterday (each partition's watermark follows
    # its own newest event), and every goal would be judged as of then.
    env.setdefault("PACEKEEPER_INGEST_TOPIC_PARTITIONS", "1")
    env.setdefault("PACEKEEPER_AGGREGATOR_TOPIC_PARTITIONS", "1")
    return env


async def create_keys(settings: DemoSettings, sources: Sequence[str]) -> dict[str, str]:
    """A key per source, made as `pacekeeper keys create` makes them, in one transaction:
    five CLI runs cost ~7 s of CPU while the history loads on the same two cores."""
    engine = make_engine(settings, application_name="pacekeeper-demo", pool_size=1)
    try:
        async with engine.begin() as conn:
            return {source: (await keys.create(conn, source))[1].key for source in sources}
    finally:
        await engine.dispose()


async def revoke_keys(settings: DemoSettings, made: Sequence[str]) -> None:
    engine = make_engine(settings, application_name="pacekeeper-demo", pool_size=1)
    try:
        async with engine.begin() as conn:
            for key in made:
                await keys.revoke(conn, key)
    finally:
        await engine.dispose()


async def create_key(env: Mapping[str, str], source: str) -> str:
    """`pacekeeper keys create --source S` prints the key alone on its last line."""
    process = await asyncio.create_subprocess_exec(
        *pacekeeper_command(),
        "keys",
        "create",
        "--source",
        source,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    lines = [line.strip() for line in out.decode().splitlines() if line.strip()]
    if process.returncode != 0 or not lines:
        raise DemoError(f"could not create an API key for {source}: {err.decode().strip()}")
    return lines[-1]


async def revoke_key(env: Mapping[str, str], key: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *pacekeeper_command(),
        "keys",
        "revoke",
        key,
        env=dict(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await process.wait()


async def wait_ready(
    services: dict[str, ServiceProcess], urls: dict[str, str], limit: float
) -> None:
    """Until every service answers its health URL; fail fast when one exits."""
    deadline = time.monotonic() + limit
    pending = dict(urls)
    async with httpx.AsyncClient(timeout=2.0) as client:
        while pending:
            for name, url in list(pending.items()):
                if services[name].exited:
                    raise DemoError(
                        f"{name} exited during start-up; its log ends with:\n"
                        + services[name].tail()
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        del pending[name]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise DemoError(f"not ready after {limit:.0f} s: {', '.join(pending)}")
            await asyncio.sleep(0.5)
