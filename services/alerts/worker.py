"""The evaluator worker: stand by, lead, and while leading run the pipeline.

While leading: KPI updates from the aggregator (Kafka) trigger the rules that read the
changed KPIs; a tick evaluates every rule and goal; a short dispatch pass honours group
timers in between. Each pass is one transaction on the lock connection, then the
deliverer is woken to send what the pass enqueued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import httpx
from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from services.alerts import metrics, store
from services.alerts.delivery import Deliverer
from services.alerts.evaluator import Evaluator
from services.alerts.leader import leadership
from services.alerts.settings import AlertsSettings
from shared.kafka import make_consumer
from shared.kpi_updates import updated_kpi

log = logging.getLogger("pacekeeper.alerts.worker")
LEASE_NAME = "evaluator"
# Resolved alerts are purged at most this often.
PURGE_EVERY = timedelta(hours=1)


def kpis_in_update(value: bytes | None) -> set[str] | None:
    """KPI names in a kpi-updates message; None (evaluate everything) if unreadable."""
    name = updated_kpi(value)
    return None if name is None else {name}


class Worker:
    def __init__(
        self,
        settings: AlertsSettings,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        http: httpx.AsyncClient,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self.http = http
        self.holder = f"{socket.gethostname()}:{os.getpid()}"
        self.evaluator = Evaluator(
            default_timezone=settings.timezone,
            external_url=settings.alerts_external_url,
            events_topic=settings.events_topic,
            goal_history_retention=settings.alerts_goal_history_retention,
            allowed_lateness=settings.allowed_lateness,
            restate_threshold=settings.alerts_restate_threshold,
        )
        self.leading = False
        self._updates: asyncio.Queue[set[str] | None] = asyncio.Queue(maxsize=10_000)

    async def run(self) -> None:
        """Until cancelled: stand by, lead while the lock is held, stand by again if lost."""
        while True:
            try:
                async with leadership(
                    self.engine, poll_seconds=self.settings.alerts_standby_poll_seconds
                ) as conn:
                    await self._lead(conn)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("leadership lost; standing by")
            finally:
                self.leading = False
                metrics.LEADER.set(0)
            await asyncio.sleep(self.settings.alerts_standby_poll_seconds)

    async def _lead(self, conn: AsyncConnection) -> None:
        settings = self.settings
        session = AsyncSession(bind=conn, expire_on_commit=False)
        async with session.begin():
            epoch = await store.lease.take_lease(session, LEASE_NAME, self.holder)
            await self.evaluator.load(session, datetime.now(UTC))
        self.leading = True
        metrics.LEADER.set(1)
        log.info("leading", extra={"holder": self.holder, "epoch": epoch})
        deliverer = Deliverer(
            settings, self.sessions, lambda: self.evaluator.config.channels, self.http
        )
        async with asyncio.TaskGroup() as tasks:
            helpers = []
            if settings.alerts_deliver:
                helpers.append(tasks.create_task(deliverer.run(), name="deliverer"))
            if settings.alerts_consume_updates:
                helpers.append(tasks.create_task(self._consume(), name="kpi-updates"))
            try:
                await self._loop(session, deliverer)
            finally:
                for task in helpers:
                    task.cancel()

    async def _loop(self, session: AsyncSession, deliverer: Deliverer) -> None:
        settings = self.settings
        next_tick = time.monotonic()  # a new leader evaluates everything at once
        next_heartbeat = 0.0
        next_purge = 0.0
        # A pending alert whose verdict stays "no judgement" stays due: look at most once
        # per dispatch interval, not in a busy loop.
        next_pending_look = 0.0
        while True:
            wait = min(next_tick - time.monotonic(), settings.alerts_dispatch_seconds)
            pending = self.evaluator.pending_due()
            if pending is not None:
                until_due = (pending[0] - datetime.now(UTC)).total_seconds()
                wait = min(wait, max(until_due, next_pending_look - time.monotonic()))
            wait = max(0.0, wait)
            changed: set[str] = set()
            full = False
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(self._updates.get(), wait)
                await asyncio.sleep(settings.alerts_update_debounce_seconds)
                for item in [first, *self._drain()]:
                    if item is None:
                        full = True
                    else:
                        changed |= item
            clock = time.monotonic()
            if (
                pending is not None
                and pending[0] <= datetime.now(UTC)
                and clock >= next_pending_look
            ):
                changed |= pending[1]  # a pending alert's `for` is up: look again now
                next_pending_look = clock + settings.alerts_dispatch_seconds
            rules: bool | Iterable[str]
            if clock >= next_tick or full:
                trigger, rules, goals = "tick", True, True
                next_tick = clock + settings.alerts_tick_seconds
            elif changed:
                trigger, rules, goals = "update", changed, False
            else:
                trigger, rules, goals = "dispatch", False, False
            now = datetime.now(UTC)
            purge = None
            if trigger == "tick" and clock >= next_purge:
                purge = now - timedelta(hours=settings.alerts_resolved_retention_hours)
                next_purge = clock + PURGE_EVERY.total_seconds()
            started = time.perf_counter()
            try:
                async with session.begin():
                    result = await self.evaluator.cycle(
                        session, now, rules=rules, goals=goals, purge_before=purge
                    )
                    if clock >= next_heartbeat:
                        await store.lease.heartbeat_lease(session, LEASE_NAME, self.holder)
                        next_heartbeat = clock + settings.alerts_lease_heartbeat_seconds
            except DBAPIError as exc:
                if exc.connection_invalidated or isinstance(exc, OperationalError):
                    raise  # the lock connection is gone, and leadership with it
                # A statement failed (say, a KPI function raised): nothing was written and
                # memory is untouched; log it and carry on with the next pass.
                log.exception("evaluation failed", extra={"trigger": trigger})
                await asyncio.sleep(settings.alerts_dispatch_seconds)
                continue
            self.evaluator.apply(result)
            elapsed = time.perf_counter() - started
            metrics.EVALUATIONS.labels(trigger).inc()
            metrics.EVALUATION_SECONDS.labels(trigger).observe(elapsed)
            if result.deliveries:
                deliverer.wake()
            if trigger != "dispatch":
                log.debug(
                    "evaluated",
                    extra={
                        "trigger": trigger,
                        "instances": result.instances,
                        "changed": len(result.alerts),
                        "deliveries": result.deliveries,
                        "seconds": round(elapsed, 4),
                    },
                )

    def _drain(self) -> list[set[str] | None]:
        items = []
        while not self._updates.empty():
            items.append(self._updates.get_nowait())
        return items

    def _offer(self, kpis: set[str] | None) -> None:
        try:
            self._updates.put_nowait(kpis)
        except asyncio.QueueFull:
            pass  # a backlog this deep is covered by the next tick anyway

    async def _consume(self) -> None:
        """Follow kpi-updates from its end. No consumer group and no offsets: evaluation
        is level-triggered (it reads the KPIs' current values), so a missed message only
        delays a judgement to the next tick, and replaying old ones would be wasted work."""
        settings = self.settings
        while True:
            # No group, no stored offsets: only updates from now on matter.
            consumer = make_consumer(
                settings,
                settings.kpi_updates_topic,
                group_id=None,
                client_id=f"pacekeeper-alerts-{self.holder}",
                auto_offset_reset="latest",
                metadata_max_age_ms=5000,
            )
            try:
                await consumer.start()
                async for message in consumer:
                    self._offer(kpis_in_update(message.value))
            except KafkaError as exc:
                log.warning("kpi-updates consumer failed", extra={"error": str(exc)[:200]})
            finally:
                await consumer.stop()
            await asyncio.sleep(self.settings.alerts_standby_poll_seconds)
