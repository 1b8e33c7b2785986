"""The pipeline on a replicated Kafka cluster under faults: three KRaft nodes, topics with 3
replicas and min.insync.replicas=2, ingest and the aggregator running throughout while a
sender posts events at a steady rate and, like a well-behaved client, resends a refused
batch with the same ids.

- The leader of a busy partition is SIGKILLed, then a second broker: below min ISR ingest
  answers 503 with Retry-After quickly (never a hang, never a 202); both come back.
- The active controller is SIGKILLed and restarted; a partition leader is paused (SIGSTOP)
  for longer than the broker session timeout, then resumed.

At the end every acknowledged event is counted exactly once in kpi_value and stored once,
ingest and the aggregator recovered without a restart, and the alerts service (on the same
cluster, with a rule that fires while events flow) notified exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer

from services.aggregator.settings import AggregatorSettings
from services.ingest.app import create_app
from tests.aggregator.helpers import running, store_kpis
from tests.alerts.conftest import ApplyConfig, Receiver, StartService, wait_until
from tests.chaos.cluster import MIN_INSYNC_REPLICAS, REPLICATION_FACTOR, KafkaCluster
from tests.conftest import settings_from_env
from tests.ingest.conftest import create_key, event, make_settings
from tests.live import LiveServer

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(900)]
PRODUCE_TIMEOUT = 3.0  # ingest's bound on one request's wait for the brokers
BATCH = 10
Db = psycopg.Connection[tuple[Any, ...]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    kafka = KafkaCluster(tmp_path_factory.mktemp("cluster"))
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()


@dataclass
class Sender:
    """Posts batches of BATCH events every `interval` seconds; a 503 or a timeout puts the
    batch back to be sent again with the same ids, as the API asks of clients."""

    http: httpx.AsyncClient
    interval: float = 0.1
    acknowledged: set[str] = field(default_factory=set)
    outcomes: list[tuple[float, int, float]] = field(default_factory=list)  # at, status, took
    _pending: list[list[dict[str, Any]]] = field(default_factory=list)
    _sequence: int = 0

    def _next(self) -> list[dict[str, Any]]:
        if self._pending:
            return self._pending.pop(0)
        self._sequence += 1
        return [
            event(id=f"e{self._sequence}-{i}", user_id=f"u{(self._sequence * BATCH + i) % 97}")
            for i in range(BATCH)
        ]

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        started = time.monotonic()
        try:
            response = await self.http.post("/v1/events", json=batch)
            status = response.status_code
        except httpx.TimeoutException:
            status = 0
        took = time.monotonic() - started
        self.outcomes.append((started, status, took))
        if status == 202:
            self.acknowledged.update(e["id"] for e in batch)
            return
        assert status in (0, 503), f"unexpected {status}: {response.text}"
        if status == 503:
            assert response.headers.get("Retry-After"), "a 503 must say when to retry"
        self._pending.append(batch)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self._send(self._next())
            await asyncio.sleep(self.interval)

    async def drain(self, within: float = 120.0) -> None:
        deadline = time.monotonic() + within
        while self._pending:
            assert time.monotonic() < deadline, f"{len(self._pending)} batches never accepted"
            await self._send(self._pending.pop(0))
            await asyncio.sleep(0.2)

    def between(self, start: float, end: float) -> list[tuple[int, float]]:
        return [(status, took) for at, status, took in self.outcomes if start <= at < end]


@dataclass
class Pipeline:
    sender: Sender
    ingest_url: str
    events_topic: str
    bootstrap: str
    stopping: asyncio.Event
    sending: asyncio.Task[None]

    async def stop_sending(self) -> None:
        self.stopping.set()
        await self.sending


@pytest.fixture
async def pipeline(cluster: KafkaCluster, service_env: dict[str, str]) -> AsyncIterator[Pipeline]:
    """Ingest (in a thread) and an aggregator on the cluster, and a sender posting to ingest."""
    env = service_env | {
        "PACEKEEPER_KAFKA_BOOTSTRAP": cluster.bootstrap,
        "PACEKEEPER_KAFKA_TOPIC_REPLICATION_FACTOR": str(REPLICATION_FACTOR),
        "PACEKEEPER_KAFKA_TOPIC_MIN_INSYNC_REPLICAS": str(MIN_INSYNC_REPLICAS),
    }
    await store_kpis(env, {"name": "orders", "kind": "count", "event": "order_completed"})
    ingest_settings = make_settings(
        env,
        ingest_produce_timeout=PRODUCE_TIMEOUT,
        ingest_broker_probe_interval=0.5,
        ingest_retry_after=1,
        ingest_topic_partitions=6,
    )
    key = await create_key(ingest_settings)
    server = LiveServer(create_app(ingest_settings))
    url = server.start()
    aggregator_settings = settings_from_env(
        AggregatorSettings,
        env,
        aggregator_topic_partitions=6,
        aggregator_session_timeout_ms=10_000,
        aggregator_heartbeat_interval_ms=1_000,
    )
    stopping = asyncio.Event()
    try:
        async with (
            httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            ) as http,
            running(aggregator_settings),
        ):
            sender = Sender(http)
            task = asyncio.create_task(sender.run(stopping))
            pipeline = Pipeline(
                sender, url, ingest_settings.events_topic, cluster.bootstrap, stopping, task
            )
            try:
                yield pipeline
            finally:
                await pipeline.stop_sending()
    finally:
        server.stop()


async def counted_once(db: Db, pipeline: Pipeline, within: float = 240.0) -> None:
    """Stop the sender, resend what is still refused, then wait until kpi_value counts every
    acknowledged event; it must then equal the acknowledged set exactly, and each event is
    stored once."""
    await pipeline.stop_sending()
    await pipeline.sender.drain()
    acknowledged = pipeline.sender.acknowledged
    lo, hi = datetime.now(UTC) - timedelta(hours=2), datetime.now(UTC) + timedelta(hours=1)
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        row = db.execute("SELECT kpi_value('orders', %s, %s, NULL)", (lo, hi)).fetchone()
        value = row[0] if row else None
        if value is not None and value >= len(acknowledged):
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(3)  # anything counted twice would show up by now
    row = db.execute("SELECT kpi_value('orders', %s, %s, NULL)", (lo, hi)).fetchone()
    assert row is not None
    stored_ids = {r[0] for r in db.execute("SELECT id FROM events")}
    missing = sorted(acknowledged - stored_ids)
    if missing:
        on_topic = await _ids_on_topic(pipeline)
        missing_on_topic = [m for m in missing if m in on_topic]
        raise AssertionError(
            f"{len(missing)} acknowledged events not stored: {missing[:20]}; "
            f"{len(missing_on_topic)} of them are on the topic; topic has {len(on_topic)} ids"
            f"; kpi {row[0]} vs {len(acknowledged)}"
        )
    assert row[0] == len(acknowledged)
    stored = db.execute("SELECT count(*), count(DISTINCT id) FROM events").fetchone()
    assert stored == (len(acknowledged), len(acknowledged))
    statuses = [status for _, status, _ in pipeline.sender.outcomes]
    refused = [took for _, status, took in pipeline.sender.outcomes if status == 503]
    print(  # the figures of a run, for docs/guarantees.md (pytest -s shows them)
        f"\nchaos: {len(acknowledged)} events acknowledged and counted once;"
        f" {len(statuses)} requests: {statuses.count(202)} x 202, {len(refused)} x 503"
        f" (slowest {max(refused, default=0):.2f} s), {statuses.count(0)} client timeouts"
    )


async def _ids_on_topic(pipeline: Pipeline) -> set[str]:
    consumer = AIOKafkaConsumer(
        pipeline.events_topic,
        bootstrap_servers=pipeline.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    ids: set[str] = set()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=3000)
            if not batch:
                break
            for messages in batch.values():
                for m in messages:
                    ids.add(orjson.loads(m.value)["id"])
    finally:
        await consumer.stop()
    return ids


def _first_202(sender: Sender, since: float) -> float:
    return min(
        (at - since for at, status, _ in sender.outcomes if at >= since and status == 202),
        default=float("nan"),
    )


async def accepted_after(sender: Sender, since: float, *, within: float) -> bool:
    """Whether ingest answers 202 to a request sent after `since`, waiting up to `within`
    seconds past it."""
    while True:
        if any(status == 202 for status, _ in sender.between(since, time.monotonic())):
            return True
        if time.monotonic() > since + within:
            return False
        await asyncio.sleep(0.2)


async def sending(seconds: float) -> None:
    await asyncio.sleep(seconds)


def alerting(webhook: Receiver) -> str:
    """A rule that fires while the sender's ~100 events/s flow and stays firing through the
    faults (its window outlasts the refused stretch); a repeat would take an hour."""
    return f"""
kpis:
  - {{name: orders, kind: count, event: order_completed}}
channels:
  - {{name: ops, type: webhook, url: "{webhook.url}", secret: chaos,
     group_wait: 0s, group_interval: 1s, repeat_interval: 1h}}
rules:
  - {{name: orders-flowing, kpi: orders, window: 2m, op: ">", value: 5, for: 1s,
     channels: [ops]}}
"""


async def test_leader_killed_then_below_min_isr_refuses_with_503_and_counts_each_event_once(
    cluster: KafkaCluster,
    pipeline: Pipeline,
    db: Db,
    receiver: Receiver,
    apply_yaml: ApplyConfig,
    start_service: StartService,
) -> None:
    await apply_yaml(alerting(receiver))
    await asyncio.to_thread(start_service, PACEKEEPER_KAFKA_BOOTSTRAP=cluster.bootstrap)
    sender = pipeline.sender
    await sending(6)
    assert sender.acknowledged, "nothing was accepted before the faults"
    await asyncio.to_thread(wait_until, lambda: receiver.all(), 30)

    partitions = await cluster.partitions(pipeline.events_topic)
    assert [len(p["replicas"]) for p in partitions] == [REPLICATION_FACTOR] * 6
    leader = int(partitions[0]["leader"])
    cluster.nodes[leader].kill()
    killed = time.monotonic()
    await sending(10)
    print(f"\nchaos: first 202 {_first_202(sender, killed):.2f} s after the leader was killed")
    after_first = time.monotonic()
    await sending(6)
    # One broker down of three: every partition still has two in-sync replicas.
    accepted = [s for s, _ in sender.between(after_first, time.monotonic()) if s == 202]
    assert accepted, "one dead broker of three must not stop ingest"

    second = next(node for node in cluster.alive() if node != leader)
    cluster.nodes[second].kill()
    below = time.monotonic()
    await sending(15)
    # Below min ISR: refused, quickly. The first seconds may still finish requests that
    # were already acknowledged by two replicas.
    window = sender.between(below + PRODUCE_TIMEOUT + 2, time.monotonic())
    assert window, "the sender kept sending"
    assert [s for s, _ in window if s == 202] == []
    assert any(s == 503 for s, _ in window)
    assert max(took for _, took in window) < PRODUCE_TIMEOUT + 5, "ingest must not hang"

    await asyncio.to_thread(cluster.restart, leader, second)
    back = time.monotonic()
    await sending(15)
    print(f"\nchaos: first 202 {_first_202(sender, back):.2f} s after both brokers were back")
    assert any(s == 202 for s, _ in sender.between(back, time.monotonic())), (
        "ingest did not recover after the brokers came back"
    )
    # Through both faults and the recovery the alert stayed firing: one notification.
    notified = receiver.all()
    assert [r.json["status"] for r in notified] == ["firing"]
    await counted_once(db, pipeline)
    async with httpx.AsyncClient(base_url=pipeline.ingest_url) as http:
        assert (await http.get("/readyz")).status_code == 200


async def test_controller_failover_and_a_paused_broker_count_each_event_once(
    cluster: KafkaCluster, pipeline: Pipeline, db: Db
) -> None:
    sender = pipeline.sender
    await sending(6)
    assert sender.acknowledged

    controller = await asyncio.to_thread(cluster.active_controller)
    cluster.nodes[controller].kill()
    killed = time.monotonic()
    # On a loaded machine the election and the clients' metadata refresh can take longer
    # than a fixed pause: wait for the first 202 (the node stays down meanwhile).
    assert await accepted_after(sender, killed + 5, within=30), (
        "ingest must keep accepting while the quorum elects another controller"
    )
    print(f"\nchaos: first 202 {_first_202(sender, killed + 5) + 5:.2f} s after the kill")
    await asyncio.to_thread(cluster.restart, controller)
    assert await asyncio.to_thread(cluster.active_controller) in cluster.nodes

    # Longer than broker.session.timeout.ms (6 s): the controller fences the paused broker
    # and moves its leaderships; when it wakes it must catch up, not serve stale data.
    paused = await cluster.leader(pipeline.events_topic, 0)
    cluster.nodes[paused].pause()
    try:
        await sending(15)
    finally:
        cluster.nodes[paused].resume()
    await sending(10)
    await counted_once(db, pipeline)
