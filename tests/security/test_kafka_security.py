"""Pacekeeper against a broker that demands TLS: the pipeline through SASL_SSL (SCRAM-SHA-512),
a client certificate on an SSL listener, and a refusal (wrong password, untrusted broker
certificate, no client certificate) ends a service at start-up with one line naming it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from services.aggregator.settings import AggregatorSettings
from services.ingest.app import create_app
from shared.kafka import ensure_topics, make_consumer, make_producer
from shared.kafka_security import EXIT_ACCESS_REFUSED, KafkaAccessError, check_access
from shared.settings import BaseServiceSettings
from tests.aggregator.helpers import running, store_kpis
from tests.conftest import settings_from_env
from tests.ingest.conftest import create_key, event, make_settings
from tests.live import LiveServer
from tests.security.secure_broker import PASSWORD, USER, ClientFiles, SecureBroker

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
Broker = tuple[SecureBroker, ClientFiles]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    secure = SecureBroker(tmp_path_factory.mktemp("secure-broker"))
    files = secure.start()
    try:
        yield secure, files
    finally:
        secure.stop()


def sasl_env(
    broker: Broker, *, password: str = PASSWORD, cafile: Path | None = None
) -> dict[str, str]:
    secure, files = broker
    return {
        "PACEKEEPER_KAFKA_BOOTSTRAP": secure.sasl_bootstrap,
        "PACEKEEPER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PACEKEEPER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PACEKEEPER_KAFKA_SASL_USERNAME": USER,
        "PACEKEEPER_KAFKA_SASL_PASSWORD": password,
        "PACEKEEPER_KAFKA_SSL_CAFILE": str(cafile or files.cafile),
    }


def ssl_env(broker: Broker, *, client_certificate: bool = True) -> dict[str, str]:
    secure, files = broker
    env = {
        "PACEKEEPER_KAFKA_BOOTSTRAP": secure.ssl_bootstrap,
        "PACEKEEPER_KAFKA_SECURITY_PROTOCOL": "SSL",
        "PACEKEEPER_KAFKA_SSL_CAFILE": str(files.cafile),
    }
    if client_certificate:
        env["PACEKEEPER_KAFKA_SSL_CERTFILE"] = str(files.certfile)
        env["PACEKEEPER_KAFKA_SSL_KEYFILE"] = str(files.keyfile)
    return env


async def test_events_flow_from_ingest_to_kpi_value_through_sasl_ssl(
    broker: Broker,
    service_env: dict[str, str],
    db: psycopg.Connection[tuple[Any, ...]],
) -> None:
    env = service_env | sasl_env(broker)
    await store_kpis(env, {"name": "orders", "kind": "count", "event": "order_completed"})
    ingest_settings = make_settings(env)
    key = await create_key(ingest_settings)
    server = LiveServer(create_app(ingest_settings))
    url = server.start()
    ids = [f"secure-{i}" for i in range(40)]
    try:
        async with httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            for start in range(0, len(ids), 10):
                batch = [event(id=i) for i in ids[start : start + 10]]
                response = await http.post("/v1/events", json=batch)
                assert response.status_code == 202, response.text
            # A duplicate is acknowledged and still counted once.
            response = await http.post("/v1/events", json=event(id=ids[0]))
            assert response.status_code == 202, response.text
    finally:
        server.stop()

    settings = settings_from_env(AggregatorSettings, env)
    updates = make_consumer(
        settings, settings.kpi_updates_topic, group_id=None, client_id="test-secure-updates"
    )
    lo = datetime.now(UTC) - timedelta(hours=1)
    hi = datetime.now(UTC) + timedelta(hours=1)
    counted = None
    async with running(settings):
        await updates.start()
        try:
            for _ in range(300):
                row = db.execute("SELECT kpi_value('orders', %s, %s, NULL)", (lo, hi)).fetchone()
                counted = row[0] if row else None
                if counted == len(ids):
                    break
                await asyncio.sleep(0.2)
            # The relay's producer and this consumer went through SASL_SSL as well.
            update = await asyncio.wait_for(updates.getone(), timeout=30)
        finally:
            await updates.stop()
    assert counted == len(ids)
    assert b"orders" in update.value


async def test_a_client_certificate_opens_the_ssl_listener(broker: Broker, unique: str) -> None:
    settings = settings_from_env(BaseServiceSettings, ssl_env(broker))
    topic = f"{unique}.mtls"
    await ensure_topics(settings, {topic: 1})
    producer = make_producer(settings, client_id="test-mtls")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over mutual TLS", key=b"k")
    finally:
        await producer.stop()
    consumer = make_consumer(settings, topic, group_id=None, client_id="test-mtls")
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()
    assert message.value == b"over mutual TLS"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", "refused SASL SCRAM-SHA-512 authentication of user 'pacekeeper'"),
        ("untrusted broker certificate", "presented a certificate this client does not trust"),
        ("no client certificate", "PACEKEEPER_KAFKA_SSL_CERTFILE"),
    ],
)
async def test_a_refusal_is_named_in_one_line(broker: Broker, case: str, expected: str) -> None:
    _, files = broker
    env = {
        "wrong password": sasl_env(broker, password="not-the-password"),
        "untrusted broker certificate": sasl_env(broker, cafile=files.untrusted_cafile),
        "no client certificate": ssl_env(broker, client_certificate=False),
    }[case]
    with pytest.raises(KafkaAccessError) as refused:
        await check_access(settings_from_env(BaseServiceSettings, env))
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("service", ["ingest", "aggregator", "alerts"])
def test_a_service_with_a_wrong_password_exits_at_start_with_one_line(
    broker: Broker, service_env: dict[str, str], service: str
) -> None:
    env = {
        **os.environ,
        **service_env,
        **sasl_env(broker, password="not-the-password"),
        "PACEKEEPER_INGEST_PORT": "0",
        "PACEKEEPER_AGGREGATOR_HEALTH_PORT": "0",
        "PACEKEEPER_ALERTS_PORT": "0",
    }
    done = subprocess.run(
        [str(Path(sys.executable).parent / "pacekeeper"), "run", service],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == EXIT_ACCESS_REFUSED, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert "refused SASL SCRAM-SHA-512 authentication of user 'pacekeeper'" in lines[-1]
