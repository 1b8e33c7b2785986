"""Per-partition watermark: the minute before which a partition's data is complete.

The watermark follows the newest event time seen on the partition, capped by the newest
`received_at` (set by ingest's clock, so one event stamped a day ahead cannot declare
the present complete), minus the expected out-of-orderness. It advances event by event in
offset order and is stored with the offsets, so after a crash the same events are judged
late or too late exactly as before — no wall clock is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from services.aggregator.records import US_PER_MINUTE, Event


class Lateness(Enum):
    on_time = "on_time"
    late = "late"  # behind the watermark, still applied to its (old) minute
    too_late = "too_late"  # older than the allowed lateness: refused, sent to the DLQ


@dataclass(frozen=True, slots=True)
class Watermark:
    max_event: int | None = None  # epoch µs
    max_received: int | None = None

    def complete_before(self, delay_us: int) -> int | None:
        """Epoch µs of the first minute that may still change; every earlier minute is complete."""
        if self.max_event is None or self.max_received is None:
            return None
        newest = min(self.max_event, self.max_received) - delay_us
        return newest - newest % US_PER_MINUTE

    def judge(self, event: Event, delay_us: int, allowed_lateness_us: int) -> Lateness:
        mark = self.complete_before(delay_us)
        if mark is None or event.ts >= mark:
            return Lateness.on_time
        if event.ts < mark - allowed_lateness_us:
            return Lateness.too_late
        return Lateness.late

    def advance(self, event: Event, received_us: int) -> Watermark:
        max_event = event.ts if self.max_event is None else max(self.max_event, event.ts)
        max_received = (
            received_us if self.max_received is None else max(self.max_received, received_us)
        )
        if max_event == self.max_event and max_received == self.max_received:
            return self
        return Watermark(max_event, max_received)
