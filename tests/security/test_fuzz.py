"""Schemathesis over both APIs, thousands of generated requests per run: never a 5xx, never
a stack trace in a body, and nothing published or stored from a rejected request.

`PACEKEEPER_FUZZ_EXAMPLES` examples per operation (41 operations; schemathesis adds its
coverage cases): at the default of 180 a run sends over 10,000 requests, counted and
printed as each operation ends.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import CHECKS

from services.alerts.app import create_app as create_alerts_app
from services.alerts.settings import AlertsSettings
from services.ingest.app import create_app as create_ingest_app
from tests.alerts.conftest import ADMIN
from tests.conftest import Topics, read_messages
from tests.ingest.conftest import create_key, make_settings
from tests.live import LiveServer
from tests.security.conftest import alerts_settings_for

pytestmark = [pytest.mark.integration, pytest.mark.security]

FUZZ_EXAMPLES = int(os.environ.get("PACEKEEPER_FUZZ_EXAMPLES", "180"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
# What a stack trace or a leaked internal error looks like in a body.
LEAKS = (b"Traceback (most recent call last)", b'File "/', b"sqlalchemy.", b"psycopg.")

# Building the apps for their OpenAPI documents connects nothing.
INGEST = schemathesis.openapi.from_dict(create_ingest_app().openapi())
ALERTS = schemathesis.openapi.from_dict(
    create_alerts_app(AlertsSettings(), run_worker=False).openapi()
)

# Every answer as documented, too. Left out: whether the server accepts exactly what the
# JSON Schema allows (positive/negative data checks): acceptance also depends on the clock
# and on limits JSON Schema cannot state (32 KiB per encoded event), so the documented
# schemas stay a guide, not the validator.
CONFORMANCE = CHECKS.get_by_names(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    """The document says "a string, one event per line"; send it as it is. Anything else
    the generator makes goes as JSON, integers past 64 bits included (orjson refuses them)."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()


@dataclass
class Fuzzed:
    url: str
    headers: dict[str, str]
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)

    def call(self, case: Case[Any]) -> Any:
        # Our credentials, not the ones generated from the security scheme: the fuzzing
        # is for what an authenticated client can do (auth has tests of its own).
        generated = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        case.headers = {**generated, **self.headers}
        response = case.call(base_url=self.url, timeout=30)
        self.requests += 1
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        # All five are plain check functions.
        case.validate_response(response, checks=CONFORMANCE)  # type: ignore[arg-type]
        for leak in LEAKS:
            assert leak not in response.content, f"{leak!r} in a {response.status_code} body"
        return response

    def report(self, service: str, operation: str) -> None:
        TOTAL[service] = TOTAL.get(service, 0) + self.requests
        print(
            f"\n{operation}: {self.requests} requests, statuses {self.statuses}; "
            f"so far {TOTAL} ({sum(TOTAL.values())})"
        )


TOTAL: dict[str, int] = {}  # requests per service in this run, for the summary lines


# --- ingest: what was acknowledged is exactly what reached the topic ----------------------


@dataclass
class IngestFuzz(Fuzzed):
    published: list[int] = field(default_factory=list)


@pytest.fixture
def ingest_fuzz(
    service_env: dict[str, str],
    topics: Topics,
    kafka_bootstrap: str,
    request: pytest.FixtureRequest,
) -> Iterator[IngestFuzz]:
    # A rate limit out of the way, so generated requests reach parsing and validation.
    settings_ = make_settings(service_env, ingest_rate_per_second=1e6, ingest_rate_burst=10**7)
    key = asyncio.run(create_key(settings_))
    app = create_ingest_app(settings_)
    server = LiveServer(app)
    fuzz = IngestFuzz(server.start(), {"Authorization": f"Bearer {key}"})
    publisher = app.state.ingest.publisher
    publish = publisher.publish

    async def counted(events: Any) -> None:
        await publish(events)
        fuzz.published.append(len(events))

    publisher.publish = counted
    try:
        yield fuzz
    finally:
        server.stop()
    fuzz.report("ingest", request.node.name)
    on_topic = asyncio.run(read_messages(kafka_bootstrap, topics.events, sum(fuzz.published)))
    assert len(on_topic) == sum(fuzz.published), "the topic holds other than what was accepted"


@INGEST.parametrize()
@FUZZ
def test_ingest_under_fuzzing(case: Case[Any], ingest_fuzz: IngestFuzz) -> None:
    before = sum(ingest_fuzz.published)
    response = ingest_fuzz.call(case)
    published = sum(ingest_fuzz.published) - before
    if response.status_code == 202:
        assert published == response.json()["accepted"]
    else:
        assert published == 0, f"a {response.status_code} published {published} events"


# --- alerts API: a refused request leaves every stored row as it was ------------------------

STORED = (
    "kpis",
    "goals",
    "rules",
    "channels",
    "app_settings",
    "silences",
    "acknowledgements",
    "alerts",
)


def fingerprint(db: psycopg.Connection[Any]) -> tuple[str, ...]:
    return tuple(
        str(row[0])
        for table in STORED
        for row in db.execute(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {table} t"
        ).fetchall()
    )


@pytest.fixture
def alerts_fuzz(
    service_env: dict[str, str], db: psycopg.Connection[Any], request: pytest.FixtureRequest
) -> Iterator[Fuzzed]:
    app = create_alerts_app(alerts_settings_for(service_env), run_worker=False)
    server = LiveServer(app)
    fuzz = Fuzzed(server.start(), {"Authorization": f"Bearer {ADMIN}"})
    try:
        yield fuzz
    finally:
        server.stop()
    fuzz.report("alerts", request.node.name)


@ALERTS.parametrize()
@FUZZ
def test_alerts_api_under_fuzzing(
    case: Case[Any], alerts_fuzz: Fuzzed, db: psycopg.Connection[Any]
) -> None:
    before = fingerprint(db)
    response = alerts_fuzz.call(case)
    if response.status_code >= 400:
        assert fingerprint(db) == before, f"a {response.status_code} changed stored rows"
