"""A fresh schema and fresh topics for each demo run, so runs never see each other's data."""

from __future__ import annotations

import asyncio
import time

from aiokafka.errors import KafkaError

from services.demo.settings import DemoSettings
from shared.db import make_sync_engine
from shared.kafka import make_admin
from shared.settings import EVENTS_TOPIC
from shared.timescaledb import drop_schema as drop_schema_with_jobs


def drop_schema(settings: DemoSettings, schema: str) -> None:
    engine = make_sync_engine(settings, application_name="pacekeeper-demo")
    try:
        with engine.connect() as conn:
            drop_schema_with_jobs(conn, schema)
    finally:
        engine.dispose()


async def drop_topics(settings: DemoSettings, prefix: str) -> None:
    """Delete the topics of earlier demo runs (best effort: a broker that refuses is fine)."""
    admin = make_admin(settings)
    try:
        await admin.start()
        old = [t for t in await admin.list_topics() if t.startswith(f"{prefix}-")]
        if old:
            await admin.delete_topics(old)
    except KafkaError:
        pass
    finally:
        await admin.close()


async def isolate(settings: DemoSettings) -> tuple[DemoSettings, dict[str, str]]:
    """This run's schema and topics, fresh; and the environment that points services at them.

    Kept when the caller chose its own (tests do), or when PACEKEEPER_DEMO_ISOLATE=false."""
    if not settings.demo_isolate:
        return settings, {}
    updates: dict[str, str] = {}
    if settings.database_schema is None:
        await asyncio.to_thread(drop_schema, settings, settings.demo_schema)
        updates["database_schema"] = settings.demo_schema
    if settings.events_topic == EVENTS_TOPIC:
        await drop_topics(settings, settings.demo_topic_prefix)
        run = f"{settings.demo_topic_prefix}-{int(time.time())}"
        updates |= {
            "events_topic": f"{run}.events.v1",
            "dlq_topic": f"{run}.events.dlq.v1",
            "kpi_updates_topic": f"{run}.kpi-updates.v1",
        }
    env = {f"PACEKEEPER_{key.upper()}": value for key, value in updates.items()}
    return settings.model_copy(update=updates), env
