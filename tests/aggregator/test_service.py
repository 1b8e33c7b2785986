"""The aggregator in-process on the real Kafka and PostgreSQL: what is produced to the
topic comes out of kpi_value exactly — duplicates, shuffled order and late events
included; poison and too-late messages land in the DLQ; changes are announced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from services.aggregator.settings import AggregatorSettings
from tests.aggregator import oracle, workload
from tests.aggregator.helpers import running
from tests.conftest import Topics, read_messages, settings_from_env

pytestmark = pytest.mark.integration


async def test_events_come_out_of_kpi_value_exactly(
    service_env: dict[str, str],
    definitions_stored: None,
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
    schema: str,
) -> None:
    settings = settings_from_env(
        AggregatorSettings,
        service_env,
        aggregator_group_id=unique,
        aggregator_topic_partitions=3,
        aggregator_batch_max_wait=0.1,
        allowed_lateness=timedelta(days=1),
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    base = now - timedelta(hours=6)
    events = workload.make_events(1500, seed=7, base=base, span=timedelta(hours=6))
    stream = workload.deliveries(events, seed=7)
    # Late events: four hours behind everything else on their partition, still accepted.
    late = [
        oracle.Raw(
            e.source,
            f"late-{i}",
            e.type,
            e.time - timedelta(hours=4),
            e.user_id,
            e.anonymous_id,
            e.properties,
        )
        for i, e in enumerate(events[:50])
    ]
    too_late = oracle.Raw(
        "web", "ancient", "order", now - timedelta(days=3), "u1", None, {"revenue": 5}
    )
    async with running(settings):
        await workload.produce(kafka_bootstrap, topics.events, stream)
        await workload.produce(kafka_bootstrap, topics.events, late)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for raw in (b"not json", b'{"id": "x"}'):
                await producer.send_and_wait(topics.events, value=raw, key=workload.key(too_late))
            await producer.send_and_wait(
                topics.events, value=workload.value(too_late), key=workload.key(too_late)
            )
        finally:
            await producer.stop()
        total = len(stream) + len(late) + 3
        await workload.wait_consumed(database_url, schema, unique, topics.events, total, within=60)
    truth = oracle.dedupe(stream + late)
    windows = [
        (now - timedelta(days=1), now + timedelta(hours=1)),
        (base + timedelta(minutes=37), base + timedelta(hours=2, minutes=5)),
        (now - timedelta(hours=1), now),
    ]
    assert workload.assert_all_kpis_exact(database_url, schema, truth, windows) > 50

    dead = await read_messages(kafka_bootstrap, topics.dlq, 3)
    reasons = sorted(h["pacekeeper-dlq-reason"].decode().split(":")[0] for _k, _v, h in dead)
    assert reasons == ["not JSON", "too late", "type"]
    updates = await read_messages(kafka_bootstrap, topics.kpi_updates, 1)
    assert {orjson.loads(v)["kpi"] for _k, v, _h in updates} >= {
        "orders",
        "conversion",
        "nps",
        "d1",
    }
