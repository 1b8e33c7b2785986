"""Ships simulated events to the real ingest API: batched per source, retried on 429/503.

The sender behaves like a well-mannered product: one API key per source, batches of a few
hundred events, a bounded number of requests in flight, and `Retry-After` honoured. A full
queue makes `submit` wait, so a simulator that outruns the pipeline slows down instead of
piling events up in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from services.demo.simulator import EventStream, SimEvent

log = logging.getLogger("pacekeeper.demo.sender")

# 500 events of ~300 bytes are ~150 KiB: well under ingest's 1000 events / 512 KiB per
# request, and large enough that per-request overhead stays a small share of the cost.
DEFAULT_BATCH = 500
MAX_BATCH_BYTES = 480 * 1024
RETRY_STATUSES = {429, 502, 503, 504}


class RetryableResponse(Exception):
    """A status worth retrying, with the server's `Retry-After` (seconds) when it sent one."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class IngestAuthError(RuntimeError):
    """401: the key is wrong or revoked; retrying cannot help."""


@dataclass
class SendStats:
    submitted: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    last: SimEvent | None = None  # the latest event submitted

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


# Full jitter (AWS's backoff study): a crowd of senders spreads out instead of re-colliding.
_backoff = wait_random_exponential(multiplier=0.25, max=10.0)


def _wait(state: RetryCallState) -> float:
    """The server's Retry-After when it gave one, else exponential backoff with jitter."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, RetryableResponse) and exc.retry_after is not None:
        return exc.retry_after
    return float(_backoff(state))


def bad_indexes(payload: Any) -> dict[int, str]:
    """Event index → reason from a 422 body (`{"errors": [{"index", "field", "reason"}]}`)."""
    found: dict[int, str] = {}
    items: Any = payload
    if isinstance(payload, dict):
        items = payload.get("errors") or payload.get("detail") or []
    if not isinstance(items, list):
        return found
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("index"), int):
            reason = f"{item.get('field', '')}: {item.get('reason', item.get('msg', ''))}"
            found.setdefault(item["index"], reason.strip(": "))
    return found


class _TokenBucket:
    """Caps the send rate (events/s) when the simulator is asked to run flat out."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.updated = time.monotonic()

    async def take(self, n: int) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            # A batch larger than one second's budget may go once the bucket is full.
            if self.tokens >= min(n, self.rate):
                self.tokens -= n
                return
            await asyncio.sleep((min(n, self.rate) - self.tokens) / self.rate)


class IngestSender:
    """`async with IngestSender(url, keys) as sender: await sender.submit(events)`."""

    def __init__(
        self,
        base_url: str,
        keys: Mapping[str, str],
        *,
        batch_size: int = DEFAULT_BATCH,
        concurrency: int = 4,
        max_attempts: int = 12,
        max_retry_seconds: float = 120.0,
        rate: float | None = None,
        timeout: float = 15.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.keys = dict(keys)
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.stats = SendStats()
        self._limiter = _TokenBucket(rate) if rate else None
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._buffered_since: dict[str, float] = {}
        self._queue: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = asyncio.Queue(
            maxsize=concurrency * 2
        )
        self._workers: list[asyncio.Task[None]] = []
        self._fatal: BaseException | None = None

    async def __aenter__(self) -> IngestSender:
        self._workers = [
            asyncio.create_task(self._worker(), name=f"sender-{i}") for i in range(self.concurrency)
        ]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        await self._client.aclose()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    async def submit(self, events: Iterable[SimEvent]) -> None:
        """Buffer events per source; full batches go out (waiting while the queue is full)."""
        for event in events:
            self._raise_fatal()
            if event.source not in self.keys:
                raise KeyError(f"no API key for source {event.source!r}")
            buffer = self._buffers.setdefault(event.source, [])
            if not buffer:
                self._buffered_since[event.source] = time.monotonic()
            buffer.append(event.body)
            self.stats.submitted += 1
            self.stats.last = event
            if len(buffer) >= self.batch_size:
                self._buffers[event.source] = []
                await self._queue.put((event.source, buffer))

    async def push(self, *, older_than: float = 0.0) -> None:
        """Send partial batches that have waited `older_than` seconds (a producer's linger):
        live traffic goes out within a second instead of waiting for a full batch."""
        now = time.monotonic()
        for source, buffer in list(self._buffers.items()):
            if buffer and now - self._buffered_since.get(source, now) >= older_than:
                self._buffers[source] = []
                await self._queue.put((source, buffer))

    async def flush(self) -> None:
        """Send every partial batch and wait until all requests so far have finished."""
        await self.push()
        await self._queue.join()
        self._raise_fatal()

    @property
    def backlog(self) -> int:
        """Events submitted and not yet answered (buffered, queued or in flight)."""
        done = self.stats.accepted + self.stats.rejected + self.stats.failed
        return self.stats.submitted - done

    def abandon(self) -> int:
        """Stop sending: cancel the requests in flight and count the unsent as failed."""
        for task in self._workers:
            task.cancel()
        lost = self.backlog
        self.stats.failed += lost
        self._buffers.clear()
        return lost

    async def _worker(self) -> None:
        while True:
            source, batch = await self._queue.get()
            try:
                await self.send_batch(source, batch)
            except IngestAuthError as exc:
                self._fatal = exc
            except Exception:  # the load must go on; the loss is counted and logged
                log.exception("batch of %d events for %s lost", len(batch), source)
                self.stats.failed += len(batch)
            finally:
                self._queue.task_done()

    async def send_batch(self, source: str, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps(batch)
        if len(body) > MAX_BATCH_BYTES and len(batch) > 1:
            half = len(batch) // 2
            await self.send_batch(source, batch[:half])
            await self.send_batch(source, batch[half:])
            return
        if self._limiter:
            await self._limiter.take(len(batch))
        try:
            response = await self._post(source, body)
        except (RetryableResponse, httpx.TransportError) as exc:
            log.warning("giving up on %d events for %s: %s", len(batch), source, exc)
            self.stats.failed += len(batch)
            return
        await self._settle(source, batch, response)

    async def _post(self, source: str, body: bytes) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.keys[source]}",
            "Content-Type": "application/json",
        }
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_retry_seconds),
            wait=_wait,
            retry=retry_if_exception_type((RetryableResponse, httpx.TransportError)),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.stats.retries += 1
                started = time.perf_counter()
                response = await self._client.post(
                    f"{self.base_url}/v1/events", content=body, headers=headers
                )
                self.stats.requests += 1
                self.stats.latencies.append(time.perf_counter() - started)
                if response.status_code in RETRY_STATUSES:
                    raise RetryableResponse(response.status_code, _retry_after(response))
                return response
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    async def _settle(
        self, source: str, batch: list[dict[str, Any]], response: httpx.Response
    ) -> None:
        status = response.status_code
        if status == 202:
            self.stats.accepted += len(batch)
        elif status == 401:
            raise IngestAuthError(f"ingest refused the API key of {source!r} (401)")
        elif status == 413 and len(batch) > 1:
            half = len(batch) // 2
            await self.send_batch(source, batch[:half])
            await self.send_batch(source, batch[half:])
        elif status == 422:
            # All-or-nothing per request: drop the bad events, send the good ones again.
            try:
                bad = bad_indexes(response.json())
            except ValueError:
                bad = {}
            if not bad or len(bad) >= len(batch):
                self._reject(len(batch), f"422 {response.text[:200]}")
                return
            for reason in bad.values():
                self._reject(1, reason)
            good = [event for i, event in enumerate(batch) if i not in bad]
            await self.send_batch(source, good)
        else:
            self._reject(len(batch), f"HTTP {status} {response.text[:200]}")

    def _reject(self, count: int, reason: str) -> None:
        self.stats.rejected += count
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + count
        if self.stats.reasons[reason] == count:  # log each distinct reason once
            log.warning("ingest rejected %d event(s): %s", count, reason)


async def drive(
    stream: EventStream,
    sender: IngestSender,
    *,
    stop: asyncio.Event,
    speed: float = 1.0,
    clock_origin: datetime | None = None,
    end: datetime | None = None,
    duration: float | None = None,
    tick: float = 0.25,
    linger: float = 1.0,
    flush_timeout: float = 20.0,
) -> None:
    """Feed the stream's events to the sender as simulated time passes.

    Simulated time is `clock_origin + speed * elapsed` (the stream's start by default); a
    stream that starts before its clock catches up first (the demo's history). Speed 0 runs
    flat out to `end`. Partial batches wait at most `linger` seconds. Stops at `end`, after
    `duration` real seconds, or when `stop` is set, and flushes what it generated (giving up
    after `flush_timeout` seconds).
    """
    if speed <= 0 and end is None:
        raise ValueError("running flat out (speed 0) needs an end time")
    origin = clock_origin or stream.position
    started = time.monotonic()
    chunk = timedelta(minutes=1)  # bounds memory while catching up on history
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if duration is not None and elapsed >= duration:
                break
            target = origin + timedelta(seconds=elapsed * speed)
            if end is not None:
                target = end if speed <= 0 else min(target, end)
            while stream.position < target and not stop.is_set():
                await sender.submit(stream.until(min(target, stream.position + chunk)))
            if end is not None and stream.position >= end:
                break
            await sender.push(older_than=linger)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
    finally:
        try:
            await asyncio.wait_for(sender.flush(), flush_timeout)
        except TimeoutError:
            # Ingest is down or refusing: a stop must not wait out every retry.
            lost = sender.abandon()
            log.warning("stopped with %d events unsent (ingest did not take them)", lost)
