"""The sender batches per source, honours Retry-After, drops only the events ingest refuses.

The ingest API is played by `httpx.MockTransport`: these tests are about the client's
behaviour; the demo's e2e test sends through the real service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from services.demo.sender import IngestAuthError, IngestSender, bad_indexes, drive
from services.demo.simulator import (
    SOURCES,
    EventStream,
    SimConfig,
    SimEvent,
    Simulator,
    events_between,
)

pytestmark = pytest.mark.unit

KEYS = {source: f"pk_{source}" for source in SOURCES}
T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
Handler = Callable[[httpx.Request], httpx.Response]


def event(source: str = "web-shop", n: int = 0) -> SimEvent:
    return SimEvent(
        source, T0, {"id": f"e{n}", "type": "page_viewed", "time": "2026-11-02T09:00:00Z"}
    )


class Recorder:
    """Answers from a script (status per call), keeps every request it saw."""

    def __init__(self, statuses: list[int] | None = None, headers: dict[str, str] | None = None):
        self.statuses = list(statuses or [])
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status = self.statuses.pop(0) if self.statuses else 202
        body = orjson.loads(request.content)
        if status == 202:
            return httpx.Response(202, json={"accepted": len(body)})
        return httpx.Response(status, headers=self.headers, json={"error": "scripted"})

    def bodies(self) -> list[list[dict[str, object]]]:
        return [orjson.loads(r.content) for r in self.requests]


def sender(handler: Handler, **kwargs: object) -> IngestSender:
    return IngestSender(
        "http://ingest.test",
        KEYS,
        transport=httpx.MockTransport(handler),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_batches_per_source_with_that_sources_key() -> None:
    recorder = Recorder()
    async with sender(recorder, batch_size=3) as s:
        await s.submit([event("web-shop", i) for i in range(7)] + [event("ads", 100)])
        await s.flush()
    by_key: dict[str, int] = {}
    for request in recorder.requests:
        by_key[request.headers["authorization"]] = by_key.get(
            request.headers["authorization"], 0
        ) + len(orjson.loads(request.content))
        assert request.url.path == "/v1/events"
        assert len(orjson.loads(request.content)) <= 3
    assert by_key == {"Bearer pk_web-shop": 7, "Bearer pk_ads": 1}
    assert s.stats.accepted == 8
    assert s.backlog == 0


@pytest.mark.parametrize("status", [429, 503])
async def test_retries_busy_answers_after_retry_after(status: int) -> None:
    recorder = Recorder([status, status], headers={"Retry-After": "0"})
    async with sender(recorder) as s:
        await s.submit([event(n=i) for i in range(5)])
        await s.flush()
    assert len(recorder.requests) == 3
    assert s.stats.retries == 2
    assert s.stats.accepted == 5
    assert s.stats.failed == 0


async def test_gives_up_after_the_attempt_limit_and_counts_the_loss() -> None:
    recorder = Recorder([503] * 10, headers={"Retry-After": "0"})
    async with sender(recorder, max_attempts=3) as s:
        await s.submit([event(n=i) for i in range(4)])
        await s.flush()
    assert len(recorder.requests) == 3
    assert s.stats.failed == 4
    assert s.stats.accepted == 0


async def test_a_refused_event_is_dropped_and_the_rest_sent_again() -> None:
    calls: list[list[dict[str, object]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        calls.append(body)
        bad = [i for i, e in enumerate(body) if e["id"] == "e2"]
        if bad:
            errors = [{"index": i, "field": "time", "reason": "too old"} for i in bad]
            return httpx.Response(422, json={"errors": errors})
        return httpx.Response(202, json={"accepted": len(body)})

    async with sender(handler) as s:
        await s.submit([event(n=i) for i in range(5)])
        await s.flush()
    assert [e["id"] for e in calls[-1]] == ["e0", "e1", "e3", "e4"]
    assert s.stats.accepted == 4
    assert s.stats.rejected == 1
    assert s.stats.reasons == {"time: too old": 1}


async def test_a_wrong_key_stops_the_sender() -> None:
    async with sender(Recorder([401])) as s:
        await s.submit([event()])
        with pytest.raises(IngestAuthError):
            await s.flush()


async def test_connection_errors_are_retried() -> None:
    attempts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(202, json={"accepted": 1})

    async with sender(handler) as s:
        await s.submit([event()])
        await s.flush()
    assert attempts == 3
    assert s.stats.accepted == 1


def test_bad_indexes_reads_the_422_body() -> None:
    assert bad_indexes({"errors": [{"index": 3, "field": "time", "reason": "in the future"}]}) == {
        3: "time: in the future"
    }
    assert bad_indexes({"detail": "nope"}) == {}
    assert bad_indexes([{"index": 0, "reason": "x"}]) == {0: "x"}


async def test_drive_flat_out_sends_exactly_the_simulated_events() -> None:
    sim = Simulator(SimConfig(seed=8))
    end = T0 + timedelta(minutes=20)
    expected = sorted((e.source, e.body["id"]) for e in events_between(sim, T0, end))
    recorder = Recorder()
    async with sender(recorder) as s:
        await drive(EventStream(sim, T0), s, stop=asyncio.Event(), speed=0, end=end)
    sent = sorted(
        (r.headers["authorization"].removeprefix("Bearer pk_"), e["id"])
        for r in recorder.requests
        for e in orjson.loads(r.content)
    )
    assert sent == expected
    assert s.stats.accepted == len(expected)


async def test_drive_live_sends_partial_batches_within_the_linger() -> None:
    recorder = Recorder()
    sim = Simulator(SimConfig(seed=8))
    stop = asyncio.Event()
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with sender(recorder) as s:
        task = asyncio.create_task(
            drive(
                EventStream(sim, start),
                s,
                stop=stop,
                speed=1.0,
                clock_origin=datetime.now(UTC),
                tick=0.05,
                linger=0.1,
            )
        )
        await asyncio.sleep(0.6)
        sent_before_stop = s.stats.accepted
        stop.set()
        await task
    # A minute of history is far from a full batch of 500 per source, yet it went out.
    assert 0 < sent_before_stop
    assert s.stats.accepted == s.stats.submitted


async def test_a_stop_does_not_wait_out_the_retries_of_a_dead_ingest() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    sim = Simulator(SimConfig(seed=8))
    end = T0 + timedelta(minutes=5)
    started = asyncio.get_running_loop().time()
    async with sender(down, max_retry_seconds=60) as s:
        await drive(
            EventStream(sim, T0), s, stop=asyncio.Event(), speed=0, end=end, flush_timeout=1
        )
    assert asyncio.get_running_loop().time() - started < 10
    assert s.stats.accepted == 0
    assert s.stats.failed == s.stats.submitted > 0


async def test_drive_catches_up_from_where_the_history_ended_then_keeps_pace() -> None:
    """The demo's live part: the stream starts where the history load ended, a minute or so
    before the wall clock; everything up to the clock goes out at once, nothing twice."""
    recorder = Recorder()
    sim = Simulator(SimConfig(seed=8))
    origin = datetime.now(UTC)
    began = origin - timedelta(minutes=3)
    caught_up = {(e.source, e.body["id"]) for e in events_between(sim, began, origin)}
    stop = asyncio.Event()
    async with sender(recorder) as s:
        task = asyncio.create_task(
            drive(EventStream(sim, began), s, stop=stop, clock_origin=origin, tick=0.05)
        )
        await asyncio.sleep(0.5)
        stop.set()
        await task
    sent = [
        (r.headers["authorization"].removeprefix("Bearer pk_"), e["id"])
        for r in recorder.requests
        for e in orjson.loads(r.content)
    ]
    assert len(sent) == len(set(sent))
    assert caught_up <= set(sent)
    assert len(caught_up) > 100


async def test_the_latest_event_submitted_is_kept_for_the_scorecard() -> None:
    async with sender(Recorder()) as s:
        assert s.stats.last is None
        events = [event("web-shop", 1), event("ads", 2)]
        await s.submit(events)
        await s.flush()
    assert s.stats.last is events[-1]
