"""Aggregator settings: `PACEKEEPER_AGGREGATOR_*` on top of the shared base."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator

from shared.settings import BaseServiceSettings


class AggregatorSettings(BaseServiceSettings):
    aggregator_group_id: str = "pacekeeper-aggregator"
    # Static group membership (KIP-345): a restarted process with the same id gets its
    # partitions back at once instead of after a session timeout. Set it per replica
    # (e.g. the pod name of a StatefulSet); leave it empty for dynamic membership.
    aggregator_instance_id: str | None = None
    # Up to 15,000 events per transaction when the stream is busy: on the 2-core bench
    # 22,100 events/s against 19,100 with 5,000 (and 23,300 with 30,000), a full batch
    # committing in ~0.7 s. A normal stream fills batches only up to max_wait, so this
    # bounds catch-up work, not freshness.
    aggregator_batch_max_events: int = Field(15_000, ge=1, le=100_000)
    # Upper bound a quiet stream waits to fill a batch; it bounds freshness.
    aggregator_batch_max_wait: float = Field(0.2, gt=0, le=10)
    # Distinct-value and retention rows remembered as stored (per kind), so a batch does not
    # write them again; ~200 bytes each.
    aggregator_known_rows: int = Field(500_000, ge=0)
    aggregator_health_host: str = "127.0.0.1"
    aggregator_health_port: int = Field(8081, ge=0, le=65535)
    # Expected out-of-orderness: a minute counts as complete this long after newer events.
    aggregator_watermark_delay: timedelta = timedelta(minutes=1)
    aggregator_session_timeout_ms: int = Field(10_000, ge=6_000)
    aggregator_heartbeat_interval_ms: int = Field(3_000, ge=100)
    aggregator_max_poll_interval_ms: int = Field(300_000, ge=10_000)
    aggregator_retry_max_delay: float = Field(5.0, gt=0)
    aggregator_dedupe_purge_interval: float = Field(600.0, gt=0)
    # How often the positions are compared with the stored offsets, so commits the database
    # lost (asynchronous commit, failover, restore) are read again on a quiet partition too.
    aggregator_position_check_interval: float = Field(5.0, gt=0)
    aggregator_topic_partitions: int = Field(6, ge=1)
    aggregator_shutdown_timeout: float = Field(10.0, gt=0)
    # Recomputing a changed KPI's history (services/aggregator/recompute.py): at most this
    # many stored events read per second, so the live stream keeps its share of the
    # database; chunks of this much event time, each one transaction (and one pause of the
    # live writes to the new version's key, the length of the chunk's work).
    aggregator_recompute_events_per_second: float = Field(20_000, gt=0)
    aggregator_recompute_chunk: timedelta = Field(timedelta(hours=1), ge=timedelta(minutes=15))
    # How often to look for a version to recompute or old state to drop (an `apply` also
    # wakes it at once).
    aggregator_recompute_poll: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> AggregatorSettings:
        if self.aggregator_heartbeat_interval_ms * 3 > self.aggregator_session_timeout_ms:
            raise ValueError(
                "PACEKEEPER_AGGREGATOR_HEARTBEAT_INTERVAL_MS must be at most a third of the "
                "session timeout"
            )
        return self

    @property
    def watermark_delay_us(self) -> int:
        return self.aggregator_watermark_delay // timedelta(microseconds=1)

    @property
    def allowed_lateness_us(self) -> int:
        return self.allowed_lateness // timedelta(microseconds=1)
