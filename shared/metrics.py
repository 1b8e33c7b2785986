"""Prometheus helpers: one registry per process and a `/metrics` response.

A service running as several worker processes (ingest) sets `PROMETHEUS_MULTIPROC_DIR`
before they start: each worker then writes its values to files there, and `/metrics` on
any of them answers the sum over all (prometheus-client's multiprocess mode)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets in seconds, from sub-millisecond produce acks to multi-second batch commits.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
SIZE_BUCKETS = (64, 256, 1024, 4096, 16384, 65536, 262144, 524288, 1048576)


def render(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """Body and content type for a `/metrics` endpoint: every worker's values when the
    service runs several."""
    if registry is REGISTRY and os.environ.get(MULTIPROCESS_DIR_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
