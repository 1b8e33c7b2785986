"""Per-minute state answers every window exactly: rollup + kpimath vs the naive oracle."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.aggregator.catalog import compile_catalog
from services.aggregator.kpimath import Evaluator, KpiError, Step, evaluate_formula, grid
from services.aggregator.rollup import Rollup, rollup
from tests.aggregator import oracle
from tests.aggregator.strategies import STEPS, ZONES, questions, streams, to_event, windows

pytestmark = pytest.mark.unit
CATALOG = compile_catalog(oracle.SPECS)


def state_of(delivered: list[oracle.Raw], cuts: list[int]) -> Rollup:
    """What the aggregator builds: batches at `cuts`, dedupe across batches, merged."""
    seen: set[tuple[str, str]] = set()
    state = Rollup()
    bounds = sorted({0, len(delivered), *(c % (len(delivered) + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        fresh = []
        for raw in delivered[lo:hi]:
            if (raw.source, raw.id) not in seen:
                seen.add((raw.source, raw.id))
                fresh.append(to_event(raw))
        state.merge(rollup(fresh, CATALOG))
    return state


@settings(max_examples=300, deadline=None)
@given(
    stream=streams(),
    cuts=st.lists(st.integers(0, 200), max_size=5),
    asks=st.lists(st.tuples(questions(), windows()), min_size=1, max_size=8),
    zone=st.sampled_from(ZONES),
)
def test_value_matches_oracle(stream, cuts, asks, zone: ZoneInfo) -> None:
    _events, delivered = stream
    truth = oracle.dedupe(delivered)
    evaluator = Evaluator(oracle.SPECS, state_of(delivered, cuts), zone)
    for (name, dims), (lo, hi) in asks:
        expected = oracle.value(name, truth, lo, hi, dims, zone)
        actual = evaluator.value(name, lo, hi, dims)
        oracle.assert_matches(name, dims, lo, hi, actual, expected)


@settings(max_examples=100, deadline=None)
@given(
    stream=streams(max_events=40),
    ask=questions(),
    window=windows(),
    step=st.sampled_from(STEPS),
    zone=st.sampled_from(ZONES),
)
def test_series_matches_oracle(stream, ask, window, step: Step, zone: ZoneInfo) -> None:
    _events, delivered = stream
    truth = oracle.dedupe(delivered)
    name, dims = ask
    lo, hi = window
    if step.micros == 60_000_000 and hi - lo > (hi - hi).__class__(days=1):
        hi = lo.replace() + (hi - lo) / 10  # keep minute series short
    evaluator = Evaluator(oracle.SPECS, state_of(delivered, []), zone)
    series = evaluator.series(name, lo, hi, step, dims)
    buckets = grid(lo, hi, step, zone)
    assert [t for t, _ in series] == [label for label, _, _ in buckets]
    for (label, v), (_l, b_lo, b_hi) in zip(series, buckets, strict=True):
        expected = oracle.value(name, truth, b_lo, b_hi, dims, zone)
        assert oracle.close(v, expected, percentile=oracle.is_percentile(name)), (
            label,
            v,
            expected,
        )


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_grid_aligns_months_weeks_and_days_in_the_business_zone() -> None:
    shanghai = ZoneInfo("Asia/Shanghai")
    months = grid(_utc(2026, 11, 20, 10), _utc(2027, 1, 5), Step(months=1), shanghai)
    assert [label.astimezone(shanghai).date().isoformat() for label, _, _ in months] == [
        "2026-11-01",
        "2026-12-01",
        "2027-01-01",
    ]
    assert months[0][1] == _utc(2026, 11, 20, 10)  # first bucket clipped to the window
    weeks = grid(_utc(2026, 11, 25), _utc(2026, 12, 3), Step(days=7), ZoneInfo("UTC"))
    assert [label.date().isoformat() for label, _, _ in weeks] == ["2026-11-23", "2026-11-30"]
    days = grid(_utc(2026, 11, 26, 17), _utc(2026, 11, 27, 17), Step(days=1), shanghai)
    assert [label for label, _, _ in days] == [_utc(2026, 11, 26, 16), _utc(2026, 11, 27, 16)]
    hours = grid(
        _utc(2026, 11, 27, 10, 40),
        _utc(2026, 11, 27, 12),
        Step(micros=3_600_000_000),
        ZoneInfo("Asia/Kolkata"),
    )
    assert [label for label, _, _ in hours] == [
        _utc(2026, 11, 27, 10, 30),
        _utc(2026, 11, 27, 11, 30),
    ]


def test_grid_refuses_non_positive_steps() -> None:
    with pytest.raises(KpiError):
        grid(_utc(2026, 1, 1), _utc(2026, 1, 2), Step(), ZoneInfo("UTC"))


@pytest.mark.parametrize(
    ("expression", "values", "expected"),
    [
        ("100 * (a - b) / c", {"a": 3.0, "b": 1.0, "c": 4.0}, 50.0),
        ("a / b", {"a": 1.0, "b": 0.0}, None),
        ("a - -b", {"a": 1.0, "b": 2.0}, 3.0),
        ("a + b", {"a": 1.0, "b": None}, None),
    ],
)
def test_formula(expression: str, values: dict[str, float | None], expected: float | None) -> None:
    assert evaluate_formula(expression, values) == expected


def test_unknown_dimension_is_an_error() -> None:
    evaluator = Evaluator(oracle.SPECS, Rollup(), ZoneInfo("UTC"))
    with pytest.raises(KpiError, match="no dimension"):
        evaluator.value("orders", _utc(2026, 1, 1), _utc(2026, 1, 2), {"user_id": "u1"})


def test_empty_windows_give_zero_for_counts_and_none_for_averages() -> None:
    evaluator = Evaluator(oracle.SPECS, Rollup(), ZoneInfo("UTC"))
    t0, t1 = _utc(2026, 1, 1), _utc(2026, 1, 2)
    assert evaluator.value("orders", t0, t1) == 0
    assert evaluator.value("revenue", t0, t1) == 0
    assert evaluator.value("visitors", t0, t1) == 0
    for name in (
        "aov",
        "min_rev",
        "last_rev",
        "p90_rev",
        "conversion",
        "nps",
        "view_to_order",
        "d1",
    ):
        assert evaluator.value(name, t0, t1) is None, name
