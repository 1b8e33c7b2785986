"""Poison and too-late messages go to the DLQ topic, untouched, with the reason in headers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.aggregator import metrics
from services.aggregator.batch import Rejected

REASON_HEADER = "pacekeeper-dlq-reason"


def headers(rejected: Rejected, topic: str) -> list[tuple[str, bytes]]:
    return [
        (REASON_HEADER, rejected.reason.encode()),
        ("pacekeeper-source-topic", topic.encode()),
        ("pacekeeper-source-partition", str(rejected.partition).encode()),
        ("pacekeeper-source-offset", str(rejected.offset).encode()),
    ]


async def publish(
    producer: AIOKafkaProducer, dlq_topic: str, source_topic: str, rejected: Sequence[Rejected]
) -> None:
    """Send and wait for every ack: the batch's offsets must not pass a message the DLQ lacks.

    A crash after this and before the commit sends them again (at-least-once in the DLQ).
    """
    if not rejected:
        return
    futures = [
        await producer.send(
            dlq_topic,
            value=r.value if r.value is not None else b"",
            key=r.key,
            headers=headers(r, source_topic),
        )
        for r in rejected
    ]
    await asyncio.gather(*futures)
    for r in rejected:
        metrics.dlq_messages.labels(
            reason="too_late" if r.reason.startswith("too late") else "poison"
        ).inc()
