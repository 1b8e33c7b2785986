"""Anomaly rules: the seasonal baseline against a plain `statistics` oracle, the band and
its floor, the weeks read, the rule's verdicts and guards, and the band in texts."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.alerts.evaluation import anomaly
from services.alerts.evaluation.annotations import anomaly_summary, band_context
from services.alerts.evaluation.rules import instances, judge
from services.alerts.notify.text import body
from shared.config.alerting import AnomalySpec, Deviation, RuleSpec
from shared.i18n import Locale

pytestmark = pytest.mark.unit

UTC_ZONE = ZoneInfo("UTC")
AT = datetime(2027, 3, 9, 11, 0, tzinfo=UTC)  # a Tuesday

values = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False)
history = st.lists(st.one_of(st.none(), values), min_size=0, max_size=12)
specs = st.builds(
    AnomalySpec,
    k=st.floats(min_value=0.5, max_value=6),
    weeks=st.just(12),
    min_weeks=st.integers(min_value=1, max_value=12),
    min_spread=st.floats(min_value=0, max_value=0.5),
    min_spread_abs=st.floats(min_value=0, max_value=100),
)


def oracle(past: list[float | None], spec: AnomalySpec) -> tuple[float, float, float] | None:
    seen = [v for v in past if v is not None]
    if len(seen) < spec.min_weeks:
        return None
    usual = statistics.median(seen)
    mad = statistics.median(abs(v - usual) for v in seen) * 1.4826
    spread = max(mad, spec.min_spread * abs(usual), spec.min_spread_abs)
    return usual, usual - spec.k * spread, usual + spec.k * spread


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@given(history, specs)
def test_band_matches_the_statistics_oracle(past: list[float | None], spec: AnomalySpec) -> None:
    got = anomaly.band(past, spec)
    want = oracle(past, spec)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got.weeks == sum(v is not None for v in past)
    assert close(got.usual, want[0])
    assert close(got.low, want[1])
    assert close(got.high, want[2])


@given(history, specs, values, st.sampled_from(Deviation))
def test_outside_is_the_band_compared_on_the_watched_side(
    past: list[float | None], spec: AnomalySpec, value: float, direction: Deviation
) -> None:
    usual = anomaly.band(past, spec)
    verdict = anomaly.outside(value, usual, direction)
    if usual is None:
        assert verdict is None
        return
    below, above = value < usual.low, value > usual.high
    expected = {Deviation.below: below, Deviation.above: above, Deviation.both: below or above}
    assert verdict is expected[direction]


@given(st.lists(values, min_size=1, max_size=12), values, st.floats(min_value=0.1, max_value=1e6))
def test_the_band_moves_with_the_data(past: list[float], shift: float, scale: float) -> None:
    """Shifting every week shifts the band; scaling scales it (no absolute floor)."""
    spec = AnomalySpec(min_weeks=1, weeks=12, min_spread=0)
    base = anomaly.band(past, spec)
    moved = anomaly.band([v + shift for v in past], spec)
    scaled = anomaly.band([v * scale for v in past], spec)
    assert base is not None
    assert moved is not None
    assert scaled is not None
    assert math.isclose(moved.usual, base.usual + shift, rel_tol=1e-9, abs_tol=1e-3)
    assert math.isclose(scaled.spread, base.spread * scale, rel_tol=1e-9, abs_tol=1e-3)


def test_one_past_incident_hardly_moves_the_band() -> None:
    normal = [100.0, 104.0, 97.0, 101.0, 99.0, 103.0, 98.0]
    spec = AnomalySpec()
    clean = anomaly.band([*normal, 102.0], spec)
    with_incident = anomaly.band([*normal, 20.0], spec)
    assert clean is not None
    assert with_incident is not None
    assert abs(with_incident.usual - clean.usual) <= 1.5
    assert with_incident.low > 60  # the mean/stdev band would reach down to ~10


def test_a_flat_history_gets_the_floor_not_a_zero_width_band() -> None:
    spec = AnomalySpec(k=3, min_spread=0.05)
    usual = anomaly.band([200.0] * 8, spec)
    assert usual is not None
    assert (usual.low, usual.high) == (170.0, 230.0)
    assert anomaly.outside(195.0, usual, Deviation.both) is False
    absolute = anomaly.band([0.0] * 8, AnomalySpec(min_spread_abs=2))
    assert absolute is not None
    assert (absolute.low, absolute.high) == (-6.0, 6.0)


def test_too_few_weeks_is_no_verdict() -> None:
    spec = AnomalySpec(weeks=8, min_weeks=5)
    assert anomaly.band([10.0, 11.0, None, None, float("nan"), 12.0, 9.0, None], spec) is None


def test_past_windows_keep_weekday_time_and_length_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # Tuesday 31 March 2026, 10:00-11:00 CEST; a week earlier is still CET.
    t_to = datetime(2026, 3, 31, 11, 0, tzinfo=berlin).astimezone(UTC)
    weeks = anomaly.past_windows(t_to - timedelta(hours=1), t_to, 2, berlin)
    for start, end in weeks:
        local = start.astimezone(berlin)
        assert (local.weekday(), local.hour, end - start) == (1, 10, timedelta(hours=1))
    assert weeks[0][1] == datetime(2026, 3, 24, 11, 0, tzinfo=berlin).astimezone(UTC)
    # The hour the change skips: a one-hour window stays one hour long a week earlier.
    skipped = datetime(2026, 3, 29, 3, 0, tzinfo=berlin).astimezone(UTC)
    ((start, end),) = anomaly.past_windows(skipped - timedelta(hours=1), skipped, 1, berlin)
    assert end - start == timedelta(hours=1)


def rule(**kwargs: object) -> RuleSpec:
    return RuleSpec.model_validate({"name": "r", "kpi": "orders", "kind": "anomaly", **kwargs})


def test_the_rule_reads_the_window_and_each_past_week_once() -> None:
    r = rule(window="1h", anomaly={"weeks": 3, "min_weeks": 2, "direction": "below"})
    (inst,) = instances(r, AT, UTC_ZONE)
    current, past = inst.complete.current, inst.complete.baseline
    # The window's end aligned down to its step (5 minutes for an hour), whole weeks back.
    end = past[0].t_to + timedelta(weeks=1)
    assert AT - timedelta(minutes=5) < end <= AT
    assert [(q.t_from, q.t_to) for q in past] == [
        (end - timedelta(weeks=n, hours=1), end - timedelta(weeks=n)) for n in (1, 2, 3)
    ]
    assert len(set(inst.queries())) == 4
    values = {current: 41.0, past[0]: 100.0, past[1]: 95.0, past[2]: 110.0}
    verdict = judge(inst, values)
    assert verdict.breaching is True
    assert verdict.band is not None
    assert verdict.band.usual == 100.0
    assert judge(inst, {**values, current: 99.0}).breaching is False
    # Fewer weeks with a value than min_weeks: no verdict, whatever the value.
    sparse = judge(inst, {current: 1.0, past[0]: 100.0})
    assert (sparse.breaching, sparse.reason) == (None, "no_baseline")


def test_min_sample_guards_anomaly_rules_too() -> None:
    r = rule(kpi="conversion", min_sample={"kpi": "visitors", "value": 200})
    (inst,) = instances(r, AT, UTC_ZONE)
    assert inst.complete.sample is not None
    values = dict.fromkeys(inst.complete.baseline, 0.03)
    values.update({inst.complete.current: 0.001, inst.complete.sample: 120.0})
    assert judge(inst, values).reason == "min_sample"
    values[inst.complete.sample] = 300.0
    assert judge(inst, values).breaching is True


def test_a_live_count_below_the_band_waits_for_complete_data() -> None:
    r = rule(window="1h", anomaly={"direction": "below"})
    wm = AT - timedelta(minutes=2)
    (inst,) = instances(r, wm, UTC_ZONE, now=AT, monotone=True)
    assert inst.live is not None
    values = dict.fromkeys((*inst.live.baseline, *inst.complete.baseline), 100.0)
    values.update({inst.live.current: 20.0, inst.complete.current: 98.0})
    assert judge(inst, values).breaching is False  # the live 20 may still grow
    values[inst.live.current] = 99.0
    assert judge(inst, values).breaching is False


def test_rule_shape_is_validated() -> None:
    assert rule().anomaly_settings == AnomalySpec()
    rule(window="ptd:day")
    for bad in (
        {"window": "8d"},
        {"window": "ptd:month"},
        {"anomaly": {"weeks": 4, "min_weeks": 5}},
        {"anomaly": {"k": 0}},
        {"anomaly": {"direction": "sideways"}},
    ):
        with pytest.raises(ValidationError):
            rule(**bad)
    with pytest.raises(ValidationError, match="anomaly rules only"):
        RuleSpec.model_validate({"name": "r", "kpi": "orders", "anomaly": {}})


def test_the_band_in_the_summary_and_the_notification() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    t_to = datetime(2027, 3, 9, 11, 0, tzinfo=berlin).astimezone(UTC)
    band = band_context(
        anomaly.Band(112.0, 95.0, 130.0, 10.0, 8),
        (t_to - timedelta(hours=1), t_to),
        berlin,
        "below",
    )
    assert anomaly_summary("orders", "1h", 41.0, band) == (
        "orders 41 over 1h, usually 95\u2013130 on Tuesday 10:00\u201311:00"
    )
    alert = {"status": "firing", "labels": {"alertname": "orders-low"}, "value": 41.0}
    payload = {"alerts": [{**alert, "band": band}]}
    assert "usually 95\u2013130 for Tue, 10:00\u201311:00 (median 112 of 8 weeks)" in body(payload)
    chinese = body(payload, locale=Locale("zh-CN"))
    assert "95" in chinese
    assert "周二" in chinese
