"""Turn one batch of Kafka records into what the transaction writes — pure.

Decodes every value, judges lateness against each partition's watermark in offset order,
drops in-batch duplicates (first occurrence wins) and works out the next offset per
partition. Nothing here touches Kafka or the database, so a batch retried after a
database error is judged exactly as the first time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from services.aggregator.records import Event, decode_event, to_us
from services.aggregator.watermark import Lateness, Watermark
from shared.events import PoisonMessage


class Record(Protocol):
    """The parts of an aiokafka ConsumerRecord a batch needs."""

    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class Rejected:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


@dataclass(frozen=True, slots=True)
class Policy:
    watermark_delay_us: int
    allowed_lateness_us: int


@dataclass(slots=True)
class Batch:
    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    first_offsets: dict[int, int] = field(default_factory=dict)
    # Partitions whose first offset continues a commit this process knows of: the database
    # must hold their offsets (set by the service before the batch is written).
    resumes: frozenset[int] = frozenset()
    next_offsets: dict[int, int] = field(default_factory=dict)
    marks: dict[int, Watermark] = field(default_factory=dict)
    late: int = 0
    too_late: int = 0
    duplicates_in_batch: int = 0
    records: int = 0

    @property
    def poison(self) -> int:
        return len(self.rejected) - self.too_late


def assemble(records: Sequence[Record], marks: Mapping[int, Watermark], policy: Policy) -> Batch:
    """Records must be in offset order within each partition (as aiokafka returns them)."""
    out = Batch(records=len(records))
    current = dict(marks)
    seen: set[tuple[str, str]] = set()
    for record in records:
        partition = record.partition
        out.first_offsets.setdefault(partition, record.offset)
        out.next_offsets[partition] = record.offset + 1
        try:
            event = decode_event(record.value)
        except PoisonMessage as exc:
            out.rejected.append(
                Rejected(partition, record.offset, record.key, record.value, str(exc))
            )
            continue
        mark = current.get(partition) or Watermark()
        verdict = mark.judge(event, policy.watermark_delay_us, policy.allowed_lateness_us)
        current[partition] = mark.advance(event, to_us(event.received_at))
        if verdict is Lateness.too_late:
            out.too_late += 1
            out.rejected.append(
                Rejected(
                    partition,
                    record.offset,
                    record.key,
                    record.value,
                    "too late: event time is older than the allowed lateness behind the "
                    "partition watermark",
                )
            )
            continue
        identity = (event.source, event.id)
        if identity in seen:
            out.duplicates_in_batch += 1
            continue
        seen.add(identity)
        if verdict is Lateness.late:
            out.late += 1
        out.events.append(event)
    out.marks = {p: m for p, m in current.items() if p in out.next_offsets}
    return out
