"""Prometheus helpers: one registry per process and a `/metrics` response."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

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
    """Body and content type for a `/metrics` endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
