"""Per-key token buckets, counted in events; in memory, per ingest instance."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def acquire(self, key: str, cost: int) -> float:
        """Take `cost` tokens and return 0, or take nothing and return the seconds to wait."""
        bucket = self._refilled(key)
        if cost <= bucket.tokens:
            bucket.tokens -= cost
            return 0.0
        if cost > self._burst:
            return math.inf
        return (cost - bucket.tokens) / self._rate

    def wait(self, key: str) -> float:
        """Seconds until the key has a token again; 0 if it has one now. Takes nothing."""
        bucket = self._refilled(key)
        return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self._rate

    def charge(self, key: str, cost: int) -> None:
        """Take up to `cost` tokens for a request that was refused after costing work, so a
        key that sends only bad requests is slowed down like one that sends many events."""
        bucket = self._refilled(key)
        bucket.tokens = max(0.0, bucket.tokens - cost)

    def _refilled(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
            bucket.updated = now
        return bucket


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (HTTP's Retry-After has no fractions)."""
    if math.isinf(seconds):
        return "60"
    return str(max(1, math.ceil(seconds)))
