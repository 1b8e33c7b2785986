"""Token buckets per key, counted in events."""

from __future__ import annotations

import math

import pytest

from services.ingest.ratelimit import RateLimiter, retry_after_header

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1000, clock=clock)
    assert limiter.acquire("k", 1000) == 0
    assert limiter.acquire("k", 5) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.acquire("k", 5) == 0
    assert limiter.acquire("k", 1) == pytest.approx(0.1)


def test_a_refused_request_takes_nothing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1000, clock=clock)
    limiter.acquire("k", 990)
    assert limiter.acquire("k", 100) > 0
    assert limiter.acquire("k", 10) == 0


def test_keys_have_their_own_buckets_and_refill_stops_at_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=1000, clock=clock)
    limiter.acquire("a", 1000)
    assert limiter.acquire("b", 1000) == 0
    clock.now += 3600
    assert limiter.acquire("a", 1000) == 0
    assert limiter.acquire("a", 1) > 0


def test_more_than_the_burst_can_never_pass() -> None:
    limiter = RateLimiter(rate=10, burst=1000)
    assert math.isinf(limiter.acquire("k", 1001))


@pytest.mark.parametrize(
    ("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"), (math.inf, "60")]
)
def test_retry_after_is_whole_seconds(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def test_wait_takes_nothing_and_charge_empties_the_bucket() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=10, burst=100, clock=clock)
    assert limiter.wait("k") == 0
    limiter.charge("k", 99)
    assert limiter.wait("k") == 0  # one token left, and wait took none of it
    limiter.charge("k", 5)  # a refused request never drives the bucket below empty
    assert limiter.wait("k") == pytest.approx(0.1)
    clock.now += 0.2
    assert limiter.wait("k") == 0
    assert limiter.acquire("k", 1) == 0
