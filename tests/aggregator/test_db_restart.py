"""The database restarts or crashes under a running aggregator: it waits, resumes, and every
KPI is still exact. Uses a private PostgreSQL cluster (initdb under /tmp, its own port) so the
shared server on 5432 is never touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.aggregator.settings import AggregatorSettings
from shared.db import make_engine, make_sessionmaker, transaction
from shared.migrations import upgrade
from tests.aggregator import oracle, workload
from tests.aggregator.helpers import store_definitions
from tests.aggregator.test_crash import PARTITIONS, _ensure_topics, _env, _spawn, _stop
from tests.conftest import Topics

pytestmark = pytest.mark.e2e
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql+psycopg://pacekeeper:pacekeeper@127.0.0.1:{port}/pacekeeper"

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True)

    def psql(self, *commands: str) -> None:
        args = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        for command in commands:
            args += ["-c", command]
        self._as_postgres(*args)

    def pg_ctl(self, action: str, *extra: str) -> None:
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.data.parent / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 -c fsync=off",
            action,
            *extra,
        )


@pytest.fixture
def private_postgres() -> Iterator[Cluster]:
    if os.geteuid() != 0 or not (PG_BIN / "initdb").exists() or not shutil.which("runuser"):
        pytest.skip("needs root and the Debian PostgreSQL 15 binaries to run a private cluster")
    root = Path(tempfile.mkdtemp(prefix="pacekeeper-pg-"))
    shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(root, _free_port())
    try:
        cluster._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        cluster.pg_ctl("start")
        cluster.psql(
            "CREATE ROLE pacekeeper LOGIN PASSWORD 'pacekeeper'",
            "CREATE DATABASE pacekeeper OWNER pacekeeper",
        )
        yield cluster
    finally:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(cluster.data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("mode", "synchronous_commit"),
    [
        ("fast", "on"),  # a clean restart: every commit is on disk
        ("immediate", "on"),  # a crash: acknowledged commits survive it
        # A crash that loses acknowledged commits, as a failover to a lagging replica would:
        # the aggregator's positions are past what the database holds. It must notice, go
        # back to the stored offsets and forget what it cached about the lost commits.
        ("immediate", "off"),
    ],
)
async def test_database_restart_while_consuming(
    private_postgres: Cluster,
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    mode: str,
    synchronous_commit: str,
) -> None:
    private_postgres.psql(
        f"ALTER SYSTEM SET synchronous_commit = {synchronous_commit}", "SELECT pg_reload_conf()"
    )
    url = private_postgres.url
    upgrade(AggregatorSettings(database_url=url, database_schema=unique))
    engine = make_engine(
        AggregatorSettings(database_url=url, database_schema=unique), application_name="t"
    )
    async with transaction(make_sessionmaker(engine)) as session:
        await store_definitions(session, oracle.SPECS.values())
    await engine.dispose()
    service_env = {
        "PACEKEEPER_ENVIRONMENT": "test",
        "PACEKEEPER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PACEKEEPER_DATABASE_URL": url,
        "PACEKEEPER_DATABASE_SCHEMA": unique,
        "PACEKEEPER_EVENTS_TOPIC": topics.events,
        "PACEKEEPER_DLQ_TOPIC": topics.dlq,
        "PACEKEEPER_KPI_UPDATES_TOPIC": topics.kpi_updates,
    }
    await _ensure_topics(service_env, topics)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    events = workload.make_events(
        5000, seed=3, base=now - timedelta(hours=2), span=timedelta(hours=2)
    )
    stream = workload.deliveries(events, seed=3)
    log = tmp_path / "aggregator.log"
    proc = _spawn(_env(service_env, unique), log)
    producing = asyncio.create_task(
        workload.produce(kafka_bootstrap, topics.events, stream, rate=700)
    )
    try:
        await asyncio.sleep(3)
        private_postgres.pg_ctl("stop", "-m", mode)  # every connection dropped
        await asyncio.sleep(5)  # events keep arriving in Kafka meanwhile
        assert proc.poll() is None, "the aggregator must wait for the database, not exit"
        private_postgres.pg_ctl("start")
        await producing
        try:
            await workload.wait_consumed(url, unique, unique, topics.events, len(stream), within=60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-6000:]}") from None
    finally:
        exit_code = _stop(proc)
    assert exit_code == 0, log.read_text()[-3000:]
    assert "retrying" in log.read_text()  # it did notice the outage

    windows = [(now - timedelta(days=1), now + timedelta(hours=1))]
    workload.assert_all_kpis_exact(url, unique, oracle.dedupe(stream), windows)
    assert PARTITIONS > 1
