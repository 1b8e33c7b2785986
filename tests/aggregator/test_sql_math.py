"""`kpi_value`/`kpi_series` on real PostgreSQL, fed through the real batch transaction,
against the same naive oracle as the pure tests."""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from services.aggregator import sketch
from services.aggregator.batch import Batch
from services.aggregator.definitions import Definitions
from services.aggregator.guard import CardinalityGuard
from services.aggregator.kpimath import Step
from services.aggregator.writer import BatchWriter
from shared.db import make_engine, make_sessionmaker, transaction
from shared.settings import BaseServiceSettings
from tests.aggregator import oracle
from tests.aggregator.helpers import STATE_TABLES, run_isolated, store_definitions
from tests.aggregator.strategies import STEPS, ZONES, questions, streams, to_event, windows
from tests.conftest import libpq_url

pytestmark = pytest.mark.integration

Ask = tuple[tuple[str, dict[str, str] | None], tuple[datetime, datetime]]


async def _scenario(
    url: str,
    schema: str,
    delivered: list[oracle.Raw],
    cuts: list[int],
    zone: ZoneInfo,
    asks: list[Ask],
    series_ask: tuple[Ask, Step],
) -> tuple[list[float | None], list[tuple[datetime, float | None]]]:
    engine = make_engine(
        BaseServiceSettings(database_url=url, database_schema=schema), application_name="test"
    )
    sessions = make_sessionmaker(engine)
    try:
        async with transaction(sessions) as session:
            await session.execute(text(f"TRUNCATE {', '.join(STATE_TABLES)}"))
            await store_definitions(session, oracle.SPECS.values(), zone.key)
        writer = BatchWriter(
            sessions,
            Definitions(),
            CardinalityGuard(),
            group_id="g",
            topic="t",
            watermark_delay_us=60_000_000,
        )
        bounds = sorted({0, len(delivered), *(c % (len(delivered) + 1) for c in cuts)})
        for lo, hi in itertools.pairwise(bounds):
            chunk, seen = [], set()
            for raw in delivered[lo:hi]:
                if (raw.source, raw.id) not in seen:  # assemble() drops in-batch repeats
                    seen.add((raw.source, raw.id))
                    chunk.append(to_event(raw))
            await writer.write(Batch(events=chunk, next_offsets={0: hi}))
        values: list[float | None] = []
        async with transaction(sessions) as session:
            for (name, dims), (t_from, t_to) in asks:
                values.append(
                    (
                        await session.execute(
                            text("SELECT kpi_value(:k, :f, :t, CAST(:d AS jsonb))"),
                            {"k": name, "f": t_from, "t": t_to, "d": _dims(dims)},
                        )
                    ).scalar_one()
                )
            ((name, dims), (t_from, t_to)), step = series_ask
            rows = await session.execute(
                text(
                    "SELECT time, value FROM kpi_series(:k, :f, :t, CAST(:s AS interval),"
                    " CAST(:d AS jsonb))"
                ),
                {"k": name, "f": t_from, "t": t_to, "s": step.sql(), "d": _dims(dims)},
            )
            series = [(r.time, r.value) for r in rows]
        return values, series
    finally:
        await engine.dispose()


def _dims(dims: dict[str, str] | None) -> str | None:
    return None if dims is None else orjson.dumps(dims).decode()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stream=streams(),
    cuts=st.lists(st.integers(0, 200), max_size=4),
    asks=st.lists(st.tuples(questions(), windows()), min_size=1, max_size=10),
    series_ask=st.tuples(st.tuples(questions(), windows()), st.sampled_from(STEPS[1:])),
    zone=st.sampled_from(ZONES),
)
def test_sql_functions_match_the_oracle(
    database_url: str, schema: str, stream, cuts, asks, series_ask, zone: ZoneInfo
) -> None:
    _events, delivered = stream
    truth = oracle.dedupe(delivered)
    values, series = run_isolated(
        _scenario(database_url, schema, delivered, cuts, zone, asks, series_ask)
    )
    for ((name, dims), (lo, hi)), actual in zip(asks, values, strict=True):
        expected = oracle.value(name, truth, lo, hi, dims, zone)
        oracle.assert_matches(name, dims, lo, hi, actual, expected)
    from services.aggregator.kpimath import grid

    ((name, dims), (lo, hi)), step = series_ask
    buckets = grid(lo, hi, step, zone)
    assert [t for t, _ in series] == [label for label, _, _ in buckets]
    for (_t, actual), (_label, b_lo, b_hi) in zip(series, buckets, strict=True):
        expected = oracle.value(name, truth, b_lo, b_hi, dims, zone)
        assert oracle.close(actual, expected, percentile=oracle.is_percentile(name))


def test_sql_sketch_uses_the_same_bins(database_url: str, schema: str) -> None:
    from shared.migrations.versions import __path__ as versions  # noqa: F401  # package exists

    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as conn:
        for key in ("0", "1", "57", "-40", "n12", "z"):
            (value,) = conn.execute("SELECT pk_sketch_value(%s)", (key,)).fetchone()  # type: ignore[misc]
            assert value == pytest.approx(sketch.representative(key), rel=1e-12)
        (merged,) = conn.execute(
            'SELECT pk_sketch_merge(\'{"1": 2, "z": 1}\'::jsonb, \'{"1": 3, "n4": 1}\'::jsonb)'
        ).fetchone()  # type: ignore[misc]
        assert merged == {"1": 5, "z": 1, "n4": 1}


def test_unknown_kpi_and_dimension_are_errors(database_url: str, schema: str) -> None:
    with psycopg.connect(libpq_url(database_url), options=f"-c search_path={schema}") as conn:
        with pytest.raises(psycopg.errors.UndefinedObject):
            conn.execute("SELECT kpi_value('nope', now() - interval '1 hour', now())")
        conn.rollback()
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES ('orders', %s)",
            (orjson.dumps(oracle.DEFINITIONS[0]).decode(),),
        )
        conn.commit()
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="no dimension"):
            conn.execute(
                "SELECT kpi_value('orders', now() - interval '1 hour', now(),"
                ' \'{"user_id": "u"}\')'
            )
        conn.rollback()
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="positive interval"):
            conn.execute(
                "SELECT * FROM kpi_series('orders', now() - interval '1 hour', now(), '0 minutes')"
            )
