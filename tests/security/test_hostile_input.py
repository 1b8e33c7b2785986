"""Hostile bodies and hostile values: refused with the reason, or stored verbatim and never
executed, and a flood of dimension values folded into `__other__` rather than stored."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from prometheus_client import REGISTRY

from shared.config.kpis import DEFAULT_MAX_CARDINALITY
from tests.aggregator import workload
from tests.aggregator.conftest import settings_from
from tests.aggregator.helpers import running, store_kpis
from tests.conftest import Topics, read_messages
from tests.security.conftest import Port

pytestmark = [pytest.mark.integration, pytest.mark.security]

# Strings a careless pipeline would execute or choke on; each must come back byte for byte.
HOSTILE = [
    "'; DROP TABLE kpi_points; --",
    "x' OR '1'='1",
    '"); DELETE FROM events; --',
    "$$; SELECT pg_sleep(10); $$",
    "\\'\\\\ \\x00-free but back\\slashed",
    "Robert'); DROP TABLE students;--",
    "{{7*7}} ${jndi:ldap://x} <script>alert(1)</script>",
    "日本語 ✓ 𝄞 مرحبا",
]


def _event(**overrides: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "type": "order_completed",
        "time": datetime.now(UTC).isoformat(),
        "user_id": "u-1",
        **overrides,
    }


def _post(port: Port, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        port.url + port.post_path,
        content=body,
        headers={**port.headers, "Content-Type": "application/json", **headers},
        timeout=30,
    )


# --- bodies that are refused, with the reason, by both services ------------------------------


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("invalid UTF-8", b'{"id": "\xff\xfe\xfd", "type": "\xc3\x28"}'),
        ("deep nesting", b"[" * 100_000 + b"]" * 100_000),
        ("NaN", b'{"id": "a", "type": "t", "value": NaN}'),
        ("Infinity", b'{"id": "a", "type": "t", "value": -Infinity}'),
        ("truncated", b'{"id": "a", "type": '),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(port: Port, name: str, body: bytes) -> None:
    response = _post(port, body)
    assert response.status_code in (400, 422), (name, response.status_code, response.text)
    text = response.text
    assert "Traceback" not in text
    assert "detail" in text or "message" in text, text


def test_ten_thousand_properties_are_refused_naming_the_event(ingest_port: Port) -> None:
    properties = {f"p{i}": i for i in range(10_000)}
    response = _post(ingest_port, orjson.dumps(_event(properties=properties)))
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    assert error["index"] == 0
    assert error["field"] == "properties"
    assert "limit" in error["reason"], error


def test_ten_thousand_fields_in_a_definition_are_refused(alerts_port: Port) -> None:
    kpi = {
        "name": "orders",
        "kind": "count",
        "event": "order",
        **{f"f{i}": i for i in range(10_000)},
    }
    response = _post(alerts_port, orjson.dumps(kpi))
    assert response.status_code in (413, 422), response.text


def test_hostile_text_in_a_definition_is_stored_verbatim(alerts_port: Port) -> None:
    for i, text in enumerate(HOSTILE):
        kpi = {"name": f"orders_{i}", "kind": "count", "event": text, "description": text}
        created = _post(alerts_port, orjson.dumps(kpi))
        assert created.status_code == 201, created.text
        stored = httpx.get(
            f"{alerts_port.url}/v1/kpis/orders_{i}", headers=alerts_port.headers, timeout=10
        ).json()
        assert (stored["event"], stored["description"]) == (text, text)
    refused = _post(alerts_port, orjson.dumps({"name": HOSTILE[0], "kind": "count", "event": "x"}))
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "name"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/silences",
            {
                "matchers": [{"name": "a", "value": "b"}],
                "ends_at": "2999-01-01T00:00Z",
                "created_by": "\u0007\u0000",
            },
            "created_by",
        ),
        (
            "/v1/silences",
            {"matchers": [{"name": "a", "value": "b\u0000"}], "ends_at": "2999-01-01T00:00Z"},
            "matchers[0].value",
        ),
        (
            "/v1/kpis",
            {"name": "k", "kind": "count", "event": "e", "description": "a\u0000b"},
            "description",
        ),
        (
            "/v1/channels",
            {"name": "c", "type": "webhook", "url": "http://127.0.0.1:9/\u0000"},
            "url",
        ),
    ],
)
def test_nul_anywhere_in_a_write_is_refused_naming_the_field(
    alerts_port: Port, path: str, body: dict[str, Any], field: str
) -> None:
    """A NUL in a silence's `created_by` was a 500: PostgreSQL cannot store it."""
    response = httpx.post(
        alerts_port.url + path,
        content=orjson.dumps(body),
        headers={**alerts_port.headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    assert field in response.text, response.text


# --- hostile values through the whole pipeline ----------------------------------------------


async def test_hostile_values_and_a_dimension_flood_through_the_pipeline(
    ingest_port: Port,
    service_env: dict[str, str],
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
    schema: str,
    db: psycopg.Connection[Any],
) -> None:
    """Every hostile string goes in as user id, event id, property and dimension value and
    comes out verbatim as a dimension value of the KPI; 10,000 distinct values of one
    dimension keep DEFAULT_MAX_CARDINALITY of them and fold the rest into __other__."""
    await store_kpis(
        service_env,
        {
            "name": "orders",
            "kind": "count",
            "event": "order_completed",
            "dimensions": ["properties.channel"],
        },
    )

    at = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    hostile = [
        _event(
            id=f"{text}-{n}",
            user_id=text,
            time=at.isoformat(),
            properties={"channel": text, "note": text},
        )
        for text in HOSTILE
        for n in range(3)
    ]
    flood = [
        _event(time=at.isoformat(), properties={"channel": f"flood-{i}"}) for i in range(10_000)
    ]
    total = len(hostile) + len(flood)
    folds = (
        REGISTRY.get_sample_value(
            "pacekeeper_aggregator_cardinality_folds_total",
            {"kpi": "orders", "dimension": "properties.channel"},
        )
        or 0.0
    )
    settings = settings_from(service_env, aggregator_group_id=unique)
    async with (
        running(settings),
        httpx.AsyncClient(headers=ingest_port.headers, timeout=60) as http,
    ):
        # The hostile values first, so they are among the values the guard keeps.
        for batch, done in ((hostile, len(hostile)), (flood, total)):
            for start in range(0, len(batch), 1000):
                answer = await http.post(
                    f"{ingest_port.url}/v1/events", json=batch[start : start + 1000]
                )
                assert answer.status_code == 202, answer.text
            await workload.wait_consumed(database_url, schema, unique, topics.events, done, 120)
    assert len(await read_messages(kafka_bootstrap, topics.events, total)) == total

    lo, hi = at - timedelta(hours=1), at + timedelta(hours=1)

    def value(dims: dict[str, str] | None = None) -> float | None:
        return workload.sql_value(database_url, schema, "orders", lo, hi, dims)

    assert value() == total
    for text in HOSTILE:  # the first values seen, so within the cardinality limit
        assert value({"properties.channel": text}) == 3, text
    kept = DEFAULT_MAX_CARDINALITY - len(HOSTILE)
    assert value({"properties.channel": "__other__"}) == len(flood) - kept
    folded = REGISTRY.get_sample_value(
        "pacekeeper_aggregator_cardinality_folds_total",
        {"kpi": "orders", "dimension": "properties.channel"},
    )
    assert folded == folds + len(flood) - kept
    row = db.execute(
        "SELECT count(DISTINCT value) FROM kpi_dimension_values WHERE kpi = 'orders'"
    ).fetchone()
    assert row is not None
    assert row[0] == DEFAULT_MAX_CARDINALITY
    stored = {r[0] for r in db.execute("SELECT user_id FROM events").fetchall()}
    assert set(HOSTILE) <= stored
