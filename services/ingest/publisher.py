"""Hand validated events to Kafka and wait until the broker acknowledged every one.

While the broker is known to be unreachable, requests fail at once (`BrokerUnavailable`)
instead of piling sends up in the producer; a probe task notices when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from services.ingest.metrics import BROKER_UP, PRODUCE_SECONDS
from shared.events import Accepted

log = logging.getLogger(__name__)

# A metadata request to a local or same-zone broker answers in milliseconds.
_PROBE_TIMEOUT = 2.0


class BrokerUnavailable(Exception):
    """Kafka did not acknowledge in time; the request is not accepted."""


class Publisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        timeout: float,
        probe_interval: float,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = timeout
        self._probe_interval = probe_interval
        self._up = True
        self._probe: asyncio.Task[None] | None = None
        BROKER_UP.set(1)

    @property
    def up(self) -> bool:
        return self._up

    async def publish(self, events: Sequence[Accepted]) -> None:
        """Return once Kafka acknowledged all `events` (acks=all), else raise."""
        if not self._up:
            raise BrokerUnavailable("the broker is unreachable")
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                send, topic = self._producer.send, self._topic
                acks = [await send(topic, event.value, key=event.key) for event in events]
                for ack in acks:  # each raises if its batch failed
                    await ack
        except (TimeoutError, KafkaError) as exc:
            self._mark_down(exc)
            raise BrokerUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc
        PRODUCE_SECONDS.observe(time.perf_counter() - start)

    async def reachable(self) -> bool:
        """Ask the cluster for fresh metadata: True when a broker answered."""
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                return bool(await self._producer.client.force_metadata_update())
        except (TimeoutError, KafkaError):
            return False

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None

    def _mark_down(self, exc: BaseException) -> None:
        if self._up:
            log.warning(
                "broker unavailable, answering 503 until it is back", extra={"error": repr(exc)}
            )
        self._up = False
        BROKER_UP.set(0)
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_until_reachable(), name="broker-probe")

    async def _wait_until_reachable(self) -> None:
        while True:
            if await self.reachable():
                break
            await asyncio.sleep(self._probe_interval)
        self._up = True
        BROKER_UP.set(1)
        log.info("broker reachable again")
