"""Repository corner cases on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from services.aggregator import repository
from shared.db import make_engine, make_sessionmaker, transaction
from tests.aggregator import oracle
from tests.aggregator.conftest import settings_from
from tests.aggregator.strategies import to_event

pytestmark = pytest.mark.integration


async def test_an_event_whose_dedupe_record_was_purged_is_not_stored_or_counted_twice(
    service_env: dict[str, str],
) -> None:
    engine = make_engine(settings_from(service_env), application_name="test")
    sessions = make_sessionmaker(engine)
    event = to_event(oracle.Raw("web", "e1", "order", oracle.BASE, "u1", None, {"a": 'q"\\t'}))
    other = to_event(
        oracle.Raw("web", "e2", "order", oracle.BASE + timedelta(seconds=1), None, None, {})
    )
    try:
        async with transaction(sessions) as session:
            assert await repository.insert_events(session, [event]) == [event]
        async with transaction(sessions) as session:
            await session.execute(text("DELETE FROM event_dedupe"))  # as the purge would
        async with transaction(sessions) as session:
            assert await repository.insert_events(session, [event, other]) == [other]
        async with transaction(sessions) as session:
            rows = (
                await session.execute(text("SELECT id, properties FROM events ORDER BY id"))
            ).all()
            assert [tuple(r) for r in rows] == [("e1", {"a": 'q"\\t'}), ("e2", {})]
    finally:
        await engine.dispose()
