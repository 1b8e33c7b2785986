"""Exactly-once under SIGKILL: the aggregator runs as a real process, is killed at random
moments while a producer sends, and restarted; at the end every KPI equals the oracle.
Also with two processes sharing the partitions and one of them killed (rebalance), and
with every commit wiped from the database under a running process (a restore)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from shared.kafka import ensure_topics
from shared.settings import BaseServiceSettings
from tests.aggregator import oracle, workload
from tests.conftest import Topics, read_messages

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4


def _env(service_env: dict[str, str], group: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **service_env,
        "PACEKEEPER_AGGREGATOR_GROUP_ID": group,
        "PACEKEEPER_AGGREGATOR_HEALTH_PORT": "0",
        "PACEKEEPER_AGGREGATOR_TOPIC_PARTITIONS": str(PARTITIONS),
        "PACEKEEPER_AGGREGATOR_SESSION_TIMEOUT_MS": "6000",
        "PACEKEEPER_AGGREGATOR_HEARTBEAT_INTERVAL_MS": "1000",
        # Small batches: many more commits, so kills land at every stage of a batch.
        "PACEKEEPER_AGGREGATOR_BATCH_MAX_EVENTS": "300",
        "PACEKEEPER_AGGREGATOR_BATCH_MAX_WAIT": "0.05",
        "PACEKEEPER_ALLOWED_LATENESS": "1d",
        "PACEKEEPER_LOG_LEVEL": "INFO",  # a failure shows its rebalances, seeks and drops
        **extra,
    }


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "services.aggregator.main"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its SIGTERM handler (Linux: SigCgt in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """A clean stop. A process spawned a moment ago may still be importing: SIGTERM would
    kill it before its handler exists, which says nothing about its shutdown."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and not _handles_sigterm(proc.pid):
        assert time.monotonic() < deadline, "the aggregator never installed its SIGTERM handler"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def _workload(now: datetime) -> tuple[list[oracle.Raw], list[oracle.Raw]]:
    base = now - timedelta(hours=3)
    events = workload.make_events(8000, seed=11, base=base, span=timedelta(hours=3))
    return events, workload.deliveries(events, seed=11, repeat=0.25)


def _windows(now: datetime) -> list[tuple[datetime, datetime]]:
    return [
        (now - timedelta(days=1), now + timedelta(hours=1)),
        (now - timedelta(hours=2, minutes=13), now - timedelta(minutes=29)),
    ]


async def _ensure_topics(service_env: dict[str, str], topics: Topics) -> None:
    settings = BaseServiceSettings(kafka_bootstrap=service_env["PACEKEEPER_KAFKA_BOOTSTRAP"])
    await ensure_topics(settings, {topics.events: PARTITIONS, topics.dlq: 1, topics.kpi_updates: 1})


@dataclass
class Run:
    """One scenario: the workload, the aggregator processes it starts, their shared log."""

    service_env: dict[str, str]
    topics: Topics
    group: str
    bootstrap: str
    database_url: str
    schema: str
    log: Path
    now: datetime
    stream: list[oracle.Raw]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, **extra: str) -> subprocess.Popen[bytes]:
        proc = _spawn(_env(self.service_env, self.group, **extra), self.log)
        self.processes.append(proc)
        return proc

    def produce(self, rate: int) -> asyncio.Task[None]:
        return asyncio.create_task(
            workload.produce(self.bootstrap, self.topics.events, self.stream, rate=rate)
        )

    async def settle(self, survivor: subprocess.Popen[bytes]) -> int:
        """Wait until every message is committed, stop the survivor cleanly and compare
        every KPI with the oracle; returns how many values were compared."""
        try:
            await workload.wait_consumed(
                self.database_url, self.schema, self.group, self.topics.events,
                len(self.stream), within=60,
            )  # fmt: skip
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log.read_text()[-4000:]}") from None
        finally:
            exit_code = _stop(survivor)
        assert exit_code == 0, self.log.read_text()[-3000:]
        compared = workload.assert_all_kpis_exact(
            self.database_url, self.schema, oracle.dedupe(self.stream), _windows(self.now)
        )
        # End to end, every stored minute was announced on kpi-updates and a clean stop leaves
        # nothing queued. (Shuffled events give every batch a wide range, so this alone would
        # hardly notice one lost announcement: test_updates.py starts from exactly that.)
        updates = [v for _k, v, _h in await read_messages(self.bootstrap, self.topics.kpi_updates)]
        missing = workload.minutes_not_announced(self.database_url, self.schema, updates)
        assert not missing, f"{len(missing)} minutes never announced, e.g. {missing[:5]}"
        assert workload.queued_updates(self.database_url, self.schema) == 0
        return compared


@pytest.fixture
async def run(
    service_env: dict[str, str],
    definitions_stored: None,
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
    schema: str,
    tmp_path: Path,
) -> AsyncIterator[Run]:
    await _ensure_topics(service_env, topics)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    _events, stream = _workload(now)
    scenario = Run(
        service_env, topics, unique, kafka_bootstrap, database_url, schema,
        tmp_path / "aggregator.log", now, stream,
    )  # fmt: skip
    try:
        yield scenario
    finally:
        for proc in scenario.processes:  # a test that failed early leaves them running
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_sigkill_and_restart_lose_and_double_nothing(run: Run) -> None:
    # Static membership: a restarted process takes its partitions back without waiting
    # for the dead one's session to time out.
    instance = {"PACEKEEPER_AGGREGATOR_INSTANCE_ID": f"{run.group}-a"}
    rng = random.Random(5)
    proc = run.spawn(**instance)
    producing = run.produce(rate=800)
    for _ in range(5):
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        proc.kill()  # SIGKILL: no cleanup, mid-batch or mid-commit
        proc.wait()
        proc = run.spawn(**instance)
    await producing
    assert await run.settle(proc) > 30


async def test_two_processes_one_killed_rebalance_is_exact(run: Run) -> None:
    first, second = run.spawn(), run.spawn()
    producing = run.produce(rate=1000)
    # Once both hold partitions and work is under way, kill one mid-stream.
    await asyncio.sleep(random.Random(9).uniform(4.0, 6.0))
    first.kill()
    first.wait()
    await producing
    assert await run.settle(second) > 30


async def test_state_restored_to_empty_under_a_running_aggregator_is_rebuilt_exactly(
    run: Run,
) -> None:
    """Every commit the aggregator made is gone at once, as after restoring a backup taken
    before it started, and its connections drop. It must notice that the database no longer
    holds its offsets (none at all), start those partitions over, forget its caches, and
    end exactly right."""
    proc = run.spawn()
    producing = run.produce(rate=800)
    # Only commits the aggregator has made can be lost: on a busy machine its first batch
    # may come later than a fixed sleep (a CI run truncated before it, and nothing was lost).
    deadline = asyncio.get_running_loop().time() + 60
    while workload.consumed(run.database_url, run.schema, run.group, run.topics.events) == 0:
        assert asyncio.get_running_loop().time() < deadline, "no batch committed in 60 s"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)
    _lose_every_commit(run)
    await producing
    assert await run.settle(proc) > 30
    assert "the database lost commits" in run.log.read_text()


async def test_commits_lost_after_the_stream_went_quiet_are_read_again(run: Run) -> None:
    """The database loses every commit once the aggregator has read everything and the
    stream is quiet. No batch is left to reveal the gap: the periodic position check must,
    or those events would wait for the next restart."""
    proc = run.spawn(PACEKEEPER_AGGREGATOR_POSITION_CHECK_INTERVAL="1")
    await run.produce(rate=0)
    await workload.wait_consumed(
        run.database_url, run.schema, run.group, run.topics.events, len(run.stream), within=60
    )
    _lose_every_commit(run)
    assert workload.consumed(run.database_url, run.schema, run.group, run.topics.events) == 0
    assert await run.settle(proc) > 30
    assert "the database lost commits" in run.log.read_text()


def _lose_every_commit(run: Run) -> None:
    """Empty what the aggregator stored, as a restore of a backup taken before it started
    would, and drop its connections."""
    url = run.database_url.replace("postgresql+psycopg", "postgresql")
    tables = (
        "events, event_dedupe, kpi_points, kpi_distinct, kpi_funnel_steps,"
        " kpi_retention_cohorts, kpi_retention_returns, kpi_dimension_values, consumer_offsets"
    )
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={run.schema}") as conn:
        # Every batch transaction locks its consumer_offsets rows first; taking that table
        # first too means TRUNCATE waits for a running batch instead of deadlocking with it
        # (the relay and the dedupe purge touch one table each).
        with conn.transaction():
            conn.execute("LOCK TABLE consumer_offsets IN ACCESS EXCLUSIVE MODE")
            conn.execute(f"TRUNCATE {tables}")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'pacekeeper-aggregator' AND pid <> pg_backend_pid()"
        )
