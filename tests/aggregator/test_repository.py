"""Repository corner cases on the real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

from services.aggregator import repository
from services.aggregator.catalog import compile_catalog
from services.aggregator.rollup import Rollup, rollup
from shared.db import make_engine, make_sessionmaker, transaction
from tests.aggregator import oracle
from tests.aggregator.conftest import settings_from
from tests.aggregator.strategies import to_event

pytestmark = pytest.mark.integration

CATALOG = compile_catalog(oracle.SPECS)


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


AWKWARD = 'tab\there, line\nbreak, back\\slash, quote" 引号 \U0001f600 \\N'


async def test_events_are_stored_exactly_as_decoded_on_both_copy_paths(
    service_env: dict[str, str],
) -> None:
    """Events go in by binary COPY, straight into `events` (all new) or through the staging
    table (a batch that met keys already seen): text with COPY's special characters, nested
    properties and times keep every character and microsecond on both paths."""
    engine = make_engine(settings_from(service_env), application_name="test")
    sessions = make_sessionmaker(engine)
    properties = {AWKWARD: [AWKWARD, 1.5, None, True], "nested": {"k": AWKWARD, "n": 2**53}}
    moment = oracle.BASE + timedelta(microseconds=123_457)
    first = to_event(oracle.Raw("web", f"{AWKWARD}1", "order", moment, AWKWARD, None, properties))
    second = to_event(oracle.Raw("web", f"{AWKWARD}2", "order", moment, None, AWKWARD, {}))
    try:
        async with transaction(sessions) as session:
            assert await repository.insert_events(session, [first]) == [first]
        async with transaction(sessions) as session:  # `first` again: the staging path
            assert await repository.insert_events(session, [first, second]) == [second]
        async with transaction(sessions) as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT time, source, id, type, user_id, anonymous_id, properties,"
                        " received_at FROM events ORDER BY id"
                    )
                )
            ).all()
        assert [tuple(r) for r in rows] == [
            (e.time, e.source, e.id, e.type, e.user_id, e.anonymous_id, e.properties,
             e.received_at)
            for e in (first, second)
        ]  # fmt: skip
    finally:
        await engine.dispose()


async def test_set_rows_another_writer_stored_fall_back_and_are_stored_once(
    service_env: dict[str, str],
) -> None:
    """Distinct, funnel and retention rows go in with a plain COPY, expecting them new; a
    writer that did not know another one stored some (two processes, a replay) must fall
    back to ON CONFLICT and end with each row once."""
    engine = make_engine(settings_from(service_env), application_name="test")
    sessions = make_sessionmaker(engine)
    raws = [
        oracle.Raw("web", "s1", "signup", oracle.BASE, "u1", None, {}),
        oracle.Raw("web", "v1", "view", oracle.BASE + timedelta(seconds=5), "u1", None, {}),
        oracle.Raw("web", "o1", "order", oracle.BASE + timedelta(seconds=9), "u1", None, {}),
        oracle.Raw("app", "v2", "view", oracle.BASE + timedelta(days=1), "u2", None, {}),
        oracle.Raw("app", "v3", "view", oracle.BASE + timedelta(days=1, hours=1), "u1", None, {}),
    ]
    first = rollup([to_event(r) for r in raws[:3]], CATALOG)
    both = rollup([to_event(r) for r in raws], CATALOG)
    assert first.distinct
    assert first.funnel
    assert first.comebacks
    tables = ("kpi_distinct", "kpi_funnel_steps", "kpi_retention_returns")

    def rows_of(state: Rollup) -> dict[str, int]:
        return {
            "kpi_distinct": len(state.distinct),
            "kpi_funnel_steps": len(state.funnel),
            "kpi_retention_returns": len(state.comebacks),
        }

    async def stored() -> dict[str, int]:
        async with transaction(sessions) as session:
            return {
                t: (await session.execute(text(f"SELECT count(*) FROM {t}"))).scalar_one()
                for t in tables
            }

    try:
        async with transaction(sessions) as session:
            await repository.write_state(session, repository.state_lines(first, CATALOG))
        assert await stored() == rows_of(first)
        # Every row of `first` again, plus new ones: the plain COPY meets stored rows.
        async with transaction(sessions) as session:
            await repository.write_state(session, repository.state_lines(both, CATALOG))
        assert await stored() == rows_of(both)
        assert len(both.distinct) > len(first.distinct)
        assert len(both.comebacks) > len(first.comebacks)
    finally:
        await engine.dispose()
