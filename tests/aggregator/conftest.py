"""Fixtures for the aggregator tests."""

from __future__ import annotations

import pytest

from services.aggregator.settings import AggregatorSettings
from shared.db import make_engine, make_sessionmaker, transaction
from tests.aggregator import oracle
from tests.aggregator.helpers import store_definitions
from tests.conftest import settings_from_env


def settings_from(env: dict[str, str], **overrides: object) -> AggregatorSettings:
    return settings_from_env(AggregatorSettings, env, **overrides)


@pytest.fixture
async def definitions_stored(service_env: dict[str, str]) -> None:
    settings = settings_from(service_env)
    engine = make_engine(settings, application_name="test")
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await store_definitions(session, oracle.SPECS.values())
    finally:
        await engine.dispose()
