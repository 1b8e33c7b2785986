"""Fixtures for the aggregator tests."""

from __future__ import annotations

import pytest

from services.aggregator.settings import AggregatorSettings
from shared.db import make_engine, make_sessionmaker, transaction
from tests.aggregator import oracle
from tests.aggregator.helpers import store_definitions


def settings_from(env: dict[str, str], **overrides: object) -> AggregatorSettings:
    values: dict[str, object] = {k.removeprefix("PACEKEEPER_").lower(): v for k, v in env.items()}
    return AggregatorSettings(**(values | overrides))


@pytest.fixture
async def definitions_stored(service_env: dict[str, str]) -> None:
    settings = AggregatorSettings(
        **{k.removeprefix("PACEKEEPER_").lower(): v for k, v in service_env.items()}
    )
    engine = make_engine(settings, application_name="test")
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await store_definitions(session, oracle.SPECS.values())
    finally:
        await engine.dispose()
