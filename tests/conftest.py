"""Shared fixtures: the real local Kafka and PostgreSQL, isolated per test by topic and schema.

`make test` starts the broker and the database once per run (deploy/local/infra.sh); every
test that needs them gets fresh topic names and a freshly migrated schema of its own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from pydantic_settings import BaseSettings
from sqlalchemy.engine import make_url

from shared.db import make_sync_engine
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import drop_schema as drop_schema_with_jobs

KAFKA_BOOTSTRAP = os.environ.get("PACEKEEPER_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
DATABASE_URL = os.environ.get(
    "PACEKEEPER_DATABASE_URL",
    "postgresql+psycopg://pacekeeper:pacekeeper@127.0.0.1:5432/pacekeeper",
)


S = TypeVar("S", bound=BaseSettings)


def settings_from_env(cls: type[S], env: Mapping[str, str], **overrides: Any) -> S:
    """`cls` from a test's PACEKEEPER_* environment (`service_env`), without touching
    os.environ; `overrides` by field name."""
    values: dict[str, Any] = {k.removeprefix("PACEKEEPER_").lower(): v for k, v in env.items()}
    return cls(**(values | overrides))


def libpq_url(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


def _reachable(hostport: str) -> bool:
    host, _, port = hostport.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Topics:
    events: str
    dlq: str
    kpi_updates: str


# Prefixes handed out by `unique` in this run: their topics are deleted when the run ends.
_PREFIXES: set[str] = set()


async def _delete_topics_of_this_run(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.split(".", 1)[0] in _PREFIXES]
        for i in range(0, len(ours), 200):
            await admin.delete_topics(ours[i : i + 200], timeout_ms=60_000)
        return len(ours)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if not _reachable(KAFKA_BOOTSTRAP):
        pytest.fail(f"Kafka is not running on {KAFKA_BOOTSTRAP}: run `make infra-up` first")
    yield KAFKA_BOOTSTRAP
    # Without this every run leaves its topics behind, and a broker that has kept thousands
    # of partitions takes minutes to start: `make test` on a developer's machine slows down
    # run after run until infra-up times out.
    if _PREFIXES and _reachable(KAFKA_BOOTSTRAP):
        try:
            asyncio.run(_delete_topics_of_this_run(KAFKA_BOOTSTRAP))
        except (KafkaError, OSError, TimeoutError) as exc:  # cleanup must not fail a green run
            warnings.warn(f"test topics not deleted: {exc!r}", stacklevel=1)


@pytest.fixture(scope="session")
def database_url() -> str:
    try:
        with psycopg.connect(libpq_url(DATABASE_URL), connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
            ).fetchone()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable ({exc}): run `make infra-up` first")
    # Every schema a test migrates must take the TimescaleDB branch: hypertables,
    # continuous aggregates and policies are what users run.
    if row is None:
        pytest.fail("the database has no timescaledb extension: run `make infra-up` first")
    return DATABASE_URL


@pytest.fixture
def unique() -> str:
    """A short name no other test uses: prefix for topics, schemas and consumer groups."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    _PREFIXES.add(prefix)
    return prefix


@pytest.fixture
def topics(unique: str, kafka_bootstrap: str) -> Topics:
    return Topics(
        events=f"{unique}.events.v1",
        dlq=f"{unique}.events.dlq.v1",
        kpi_updates=f"{unique}.kpi-updates.v1",
    )


Message = tuple[bytes | None, bytes, dict[str, bytes]]  # key, value, headers


async def read_messages(
    bootstrap: str, topic: str, at_least: int = 0, *, within: float = 15.0
) -> list[Message]:
    """Every message on the topic up to its end, waiting `within` seconds at most for
    `at_least` of them; fails rather than return part of the topic."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    out: list[Message] = []
    try:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            partitions = list(consumer.assignment())  # all of them: no group, no rebalance
            if partitions and len(out) >= at_least:
                end = await consumer.end_offsets(partitions)
                if all([await consumer.position(tp) >= end[tp] for tp in partitions]):
                    break
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(
                    f"{topic}: {len(out)} messages read, {at_least} expected, end not reached"
                )
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend((r.key, r.value, dict(r.headers)) for r in records)
    finally:
        await consumer.stop()
    return out


def drop_schema(database_url: str, schema: str) -> None:
    """The schema and its policy jobs (see shared.timescaledb.drop_schema)."""
    engine = make_sync_engine(
        BaseServiceSettings(database_url=database_url), application_name="test-cleanup"
    )
    try:
        with engine.connect() as conn:
            drop_schema_with_jobs(conn, schema)
    finally:
        engine.dispose()


def schedule_policies(database_url: str, schema: str, *, scheduled: bool) -> None:
    """Let the background scheduler run a schema's policy jobs (from now), or keep it out.

    Test schemas are created paused: hundreds of them would otherwise start thousands of
    policy runs on two cores. The tests of the policies and of `make demo` resume them."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(
            "SELECT alter_job(job_id, scheduled => %s, next_start => now())"
            " FROM timescaledb_information.jobs WHERE hypertable_schema = %s",
            (scheduled, schema),
        )


@pytest.fixture
def schema(unique: str, database_url: str) -> Iterator[str]:
    """A schema migrated to head for this test alone, dropped afterwards."""
    upgrade(BaseServiceSettings(database_url=database_url, database_schema=unique))
    schedule_policies(database_url, unique, scheduled=False)
    yield unique
    drop_schema(database_url, unique)


@pytest.fixture
def db(schema: str, database_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A plain autocommit connection into the test's schema."""
    with psycopg.connect(
        libpq_url(database_url), autocommit=True, options=f"-c search_path={schema},public"
    ) as conn:
        yield conn


# DESIGN.md: the local read-only login is grafana/grafana; production sets its own.
GRAFANA_PASSWORD = os.environ.get("PACEKEEPER_GRAFANA_DB_PASSWORD", "grafana")


def connect_as_grafana(database_url: str, schema: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A connection as the read-only `grafana` role into a schema, as a dashboard connects."""
    url = make_url(database_url)
    try:
        return psycopg.connect(
            host=url.host,
            port=url.port or 5432,
            dbname=url.database,
            user="grafana",
            password=GRAFANA_PASSWORD,
            options=f"-c search_path={schema}",
            autocommit=True,
            connect_timeout=5,
        )
    except psycopg.OperationalError as exc:
        pytest.fail(f"cannot log in as the read-only grafana role ({exc}): run `make infra-up`")


@pytest.fixture
def service_env(
    schema: str, topics: Topics, kafka_bootstrap: str, database_url: str
) -> dict[str, str]:
    """Environment for a service (in-process settings or a subprocess) wired to this test."""
    return {
        "PACEKEEPER_ENVIRONMENT": "test",
        "PACEKEEPER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "PACEKEEPER_DATABASE_URL": database_url,
        "PACEKEEPER_DATABASE_SCHEMA": schema,
        "PACEKEEPER_EVENTS_TOPIC": topics.events,
        "PACEKEEPER_DLQ_TOPIC": topics.dlq,
        "PACEKEEPER_KPI_UPDATES_TOPIC": topics.kpi_updates,
    }


@pytest.fixture
def settings(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> BaseServiceSettings:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    return BaseServiceSettings()
