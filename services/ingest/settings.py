"""Ingest settings: `PACEKEEPER_INGEST_*` on top of the shared base."""

from __future__ import annotations

from pydantic import Field, model_validator

from shared.events import MAX_EVENTS_PER_REQUEST, MAX_REQUEST_BYTES
from shared.settings import BaseServiceSettings

# The contract promises that a revoked key stops working within 10 s.
MAX_KEY_CACHE_TTL = 10.0


class IngestSettings(BaseServiceSettings):
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(8080, ge=0, le=65535)
    # Decompressed body limit; the same number bounds the compressed bytes on the wire.
    ingest_max_request_bytes: int = Field(MAX_REQUEST_BYTES, ge=1024, le=MAX_REQUEST_BYTES)
    # A request waits this long for the broker's acks before it gets 503.
    ingest_produce_timeout: float = Field(5.0, gt=0)
    ingest_retry_after: int = Field(5, ge=1, description="seconds, sent with 503")
    ingest_key_cache_ttl: float = Field(5.0, gt=0, le=MAX_KEY_CACHE_TTL)
    # Token bucket per API key, counted in events: a batch of 100 costs 100 tokens.
    ingest_rate_per_second: float = Field(5000.0, gt=0)
    ingest_rate_burst: int = Field(10_000, ge=1)
    ingest_linger_ms: int = Field(5, ge=0)
    ingest_topic_partitions: int = Field(6, ge=1)
    ingest_shutdown_timeout: float = Field(10.0, gt=0)
    # Worker processes sharing the port; 0: one per core this process may run on. Each has
    # its own producer, key cache and a 1/N share of every key's rate limit.
    ingest_workers: int = Field(0, ge=0, le=64)
    # While the broker is known to be down, requests get 503 at once instead of queueing
    # sends; a probe looks again this often.
    ingest_broker_probe_interval: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _burst_fits_a_full_request(self) -> IngestSettings:
        if self.ingest_rate_burst < MAX_EVENTS_PER_REQUEST:
            raise ValueError(
                f"PACEKEEPER_INGEST_RATE_BURST must be at least {MAX_EVENTS_PER_REQUEST}, "
                "or a full batch could never pass"
            )
        return self
