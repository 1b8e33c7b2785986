"""Ingest fixtures: a real ingest server (uvicorn in a thread) on the real broker and database."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.ingest import keys
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.db import make_engine
from shared.events import Envelope, decode
from shared.settings import BaseServiceSettings
from tests.conftest import read_messages, settings_from_env
from tests.live import LiveServer

SOURCE = "web-shop"


def make_settings(env: dict[str, str], **overrides: Any) -> IngestSettings:
    """Settings from a test's PACEKEEPER_* environment, without touching os.environ."""
    return settings_from_env(IngestSettings, env, **({"ingest_topic_partitions": 3} | overrides))


@pytest.fixture
def ingest_settings(service_env: dict[str, str]) -> IngestSettings:
    return make_settings(service_env)


@pytest.fixture
def live(ingest_settings: IngestSettings) -> Iterator[str]:
    server = LiveServer(create_app(ingest_settings))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


async def create_key(settings: BaseServiceSettings, source: str = SOURCE) -> str:
    engine = make_engine(settings, application_name="pacekeeper-test", pool_size=1)
    try:
        async with engine.begin() as conn:
            _, new = await keys.create(conn, source)
    finally:
        await engine.dispose()
    return new.key


async def revoke_key(settings: BaseServiceSettings, key: str) -> None:
    engine = make_engine(settings, application_name="pacekeeper-test", pool_size=1)
    try:
        async with engine.begin() as conn:
            assert await keys.revoke(conn, key) is not None
    finally:
        await engine.dispose()


@pytest.fixture
async def api_key(ingest_settings: IngestSettings) -> str:
    return await create_key(ingest_settings)


@pytest.fixture
async def client(live: str, api_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=live, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as http:
        yield http


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event in our own shape, happening now."""
    body: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "type": "order_completed",
        "time": datetime.now(UTC).isoformat(),
        "user_id": "u-1",
        "properties": {"revenue": 59.9, "channel": "seo"},
    }
    body.update(overrides)
    return body


async def read_topic(
    bootstrap: str, topic: str, count: int, *, within: float = 30.0
) -> list[tuple[bytes | None, Envelope]]:
    """Every message of `topic`, decoded, waiting `within` seconds at most for `count`."""
    messages = await read_messages(bootstrap, topic, count, within=within)
    return [(key, decode(value)) for key, value, _headers in messages]
