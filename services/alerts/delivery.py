"""The notify stage: deliver committed outbox rows, retrying with exponential backoff.

Exactly-once effect: a notification exists only as a `deliveries` row written in the same
transaction as the state change that caused it, so a crash before the commit sends nothing
and a crash after it leaves the row pending, delivered after restart. A crash between the
receiver's "200" and our "delivered" mark makes us send again with the same idempotency
key; webhook receivers dedupe on it, Alertmanager dedupes by labels. Every attempt is a
row in `notifications`, written with the delivery's new status in one transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from services.alerts import metrics, store
from services.alerts.notify import NotifyError, notifier_for
from services.alerts.settings import AlertsSettings
from services.alerts.store.outbox import Attempt, Delivery
from shared.config.alerting import ChannelSpec
from shared.db import transaction
from shared.retry import backoff

log = logging.getLogger("pacekeeper.alerts.delivery")

ChannelsProvider = Callable[[], Mapping[str, ChannelSpec]]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, NotifyError) and exc.retryable


class Deliverer:
    def __init__(
        self,
        settings: AlertsSettings,
        sessions: async_sessionmaker[AsyncSession],
        channels: ChannelsProvider,
        http: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._channels = channels
        self._http = http
        self._wake = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._limit = asyncio.Semaphore(settings.alerts_delivery_concurrency)

    def _backoff(self, attempt: int) -> float:
        return backoff(
            attempt,
            base=self._settings.alerts_delivery_backoff_seconds,
            cap=self._settings.alerts_delivery_backoff_max_seconds,
        )

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Deliver due rows until cancelled; cancellation waits for in-flight attempts' tasks."""
        try:
            while True:
                self._wake.clear()
                await self._start_due()
                timeout = await self._idle_timeout()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            for task in self._inflight.values():
                task.cancel()
            await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def _idle_timeout(self) -> float:
        async with transaction(self._sessions) as session:
            due = await store.outbox.next_delivery_at(session)
            metrics.QUEUE_DEPTH.set(await store.outbox.queue_depth(session))
        if due is None:
            return 5.0
        return min(5.0, max(0.0, (due - datetime.now(UTC)).total_seconds()))

    async def _start_due(self) -> None:
        free = self._settings.alerts_delivery_concurrency * 4 - len(self._inflight)
        if free <= 0:
            return
        async with transaction(self._sessions) as session:
            due = await store.outbox.due_deliveries(
                session, datetime.now(UTC), limit=free, exclude=list(self._inflight)
            )
        for delivery in due:
            task = asyncio.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
            self._inflight[delivery.id] = task
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        for delivery_id, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[delivery_id]
        self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        channel = self._channels().get(delivery.channel)
        if channel is None:
            async with transaction(self._sessions) as session:
                await store.outbox.fail_delivery(session, delivery.id, "channel no longer exists")
            return
        notifier = notifier_for(channel, self._http, self._settings.locale)
        settings = self._settings
        remaining = settings.alerts_delivery_max_attempts - delivery.attempts
        if remaining <= 0:
            async with transaction(self._sessions) as session:
                await store.outbox.fail_delivery(session, delivery.id, "no attempts left")
            return

        def wait(state: RetryCallState) -> float:
            # Attempt numbers continue across restarts, and so does the backoff.
            return self._backoff(delivery.attempts + state.attempt_number)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(remaining),
            wait=wait,
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    number = delivery.attempts + attempt.retry_state.attempt_number
                    final = attempt.retry_state.attempt_number >= remaining
                    await self._attempt(delivery, channel, notifier.notify, number, final)
        except NotifyError as exc:
            log.warning(
                "delivery failed for good",
                extra={"delivery": delivery.id, "channel": delivery.channel, "error": str(exc)},
            )

    async def _attempt(
        self,
        delivery: Delivery,
        channel: ChannelSpec,
        send: Callable[..., Awaitable[None]],
        number: int,
        final: bool,
    ) -> None:
        started = datetime.now(UTC)
        clock = time.perf_counter()
        error: NotifyError | None = None
        async with self._limit:
            try:
                await asyncio.wait_for(
                    send(delivery.payload, key=delivery.idempotency_key),
                    self._settings.alerts_delivery_timeout_seconds,
                )
            except NotifyError as exc:
                error = exc
            except TimeoutError:
                error = NotifyError("timed out", retryable=True)
        elapsed = time.perf_counter() - clock
        metrics.DELIVERY_SECONDS.labels(channel.name).observe(elapsed)
        give_up = error is not None and (final or not error.retryable)
        next_at = None
        if error is not None and not give_up:
            # Persist when the next attempt is due, so a restart keeps the backoff.
            next_at = datetime.now(UTC) + timedelta(seconds=self._backoff(number))
        attempt = Attempt(
            delivery_id=delivery.id,
            channel=channel.name,
            number=number,
            ok=error is None,
            retryable=None if error is None else error.retryable,
            http_status=None if error is None else error.http_status,
            error=None if error is None else str(error)[:1000],
            started_at=started,
            duration_ms=elapsed * 1000,
            next_attempt_at=next_at,
            final=give_up,
        )
        async with transaction(self._sessions) as session:
            await store.outbox.record_attempt(session, attempt)
        if error is None:
            metrics.NOTIFICATIONS_SENT.labels(channel.name).inc()
            return
        metrics.NOTIFICATIONS_FAILED.labels(channel.name, str(error.retryable).lower()).inc()
        log.info(
            "delivery attempt failed",
            extra={
                "delivery": delivery.id,
                "channel": channel.name,
                "attempt": number,
                "retryable": error.retryable,
                "error": str(error)[:200],
            },
        )
        raise error
