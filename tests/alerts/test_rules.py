"""Rule conditions, instances and verdicts, including the min-sample and watermark guards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.alerts.evaluation import conditions
from services.alerts.evaluation.rules import (
    Query,
    fingerprint,
    instances,
    judge,
    label_name,
)
from services.alerts.evaluation.windows import judgement_time, period_start, rule_window
from shared.config.alerting import Op, Period, RuleSpec

pytestmark = pytest.mark.unit

UTC_ZONE = ZoneInfo("UTC")
AT = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


def rule(**kwargs: object) -> RuleSpec:
    return RuleSpec.model_validate({"name": "r", "kpi": "orders", **kwargs})


@pytest.mark.parametrize(
    ("op", "value", "limit", "expected"),
    [
        ("<", 1.0, 2.0, True),
        ("<", 2.0, 2.0, False),
        ("<=", 2.0, 2.0, True),
        (">", 3.0, 2.0, True),
        (">=", 2.0, 2.0, True),
        ("==", 2.0, 2.0, True),
        ("!=", 2.0, 2.0, False),
    ],
)
def test_threshold(op: str, value: float, limit: float, expected: bool) -> None:
    assert conditions.threshold(value, Op(op), limit) is expected


def test_no_value_is_no_judgement() -> None:
    assert conditions.threshold(None, Op.lt, 1) is None
    assert conditions.threshold(float("nan"), Op.lt, 1) is None


def test_change_is_relative_to_the_previous_window() -> None:
    assert conditions.relative_change(70, 100) == pytest.approx(-0.3)
    assert conditions.change(69, 100, Op.lt, -0.3) is True
    assert conditions.change(71, 100, Op.lt, -0.3) is False
    assert conditions.change(5, 0, Op.lt, -0.3) is None  # no base to compare with


def test_absence() -> None:
    assert conditions.absence(0)
    assert conditions.absence(None)
    assert not conditions.absence(3)


def test_windows() -> None:
    assert rule_window("15m", AT, UTC_ZONE) == (AT - timedelta(minutes=15), AT)
    assert rule_window("ptd:month", AT, UTC_ZONE)[0] == datetime(2027, 3, 1, tzinfo=UTC)
    shanghai = ZoneInfo("Asia/Shanghai")
    # 12:00 UTC is 20:00 in Shanghai; the local day began at 16:00 UTC the day before.
    assert period_start(Period.day, AT, shanghai) == datetime(2027, 3, 9, 16, tzinfo=UTC)
    assert period_start(Period.quarter, AT, UTC_ZONE) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start(Period.week, AT, UTC_ZONE) == datetime(2027, 3, 8, tzinfo=UTC)


def test_judgement_never_passes_the_watermark() -> None:
    assert judgement_time(AT, None) == AT
    assert judgement_time(AT, AT - timedelta(minutes=2)) == AT - timedelta(minutes=2)
    assert judgement_time(AT, AT + timedelta(minutes=2)) == AT


def test_one_instance_per_group_with_labels_and_fingerprint() -> None:
    r = rule(group_by=["source", "properties.channel"], labels={"team": "growth"})
    groups = [
        {"source": "web", "properties.channel": "seo"},
        {"source": "app", "properties.channel": "ads"},
    ]
    out = instances(r, AT, UTC_ZONE, groups)
    assert [i.labels["source"] for i in out] == ["web", "app"]
    assert out[0].labels == {
        "alertname": "r",
        "severity": "page",
        "kpi": "orders",
        "team": "growth",
        "source": "web",
        "properties_channel": "seo",
    }
    assert out[0].fingerprint == fingerprint(out[0].labels) != out[1].fingerprint
    assert out[0].complete.current == Query(
        "orders",
        AT - timedelta(minutes=15),
        AT,
        (("properties.channel", "seo"), ("source", "web")),
    )
    assert label_name("properties.channel") == "properties_channel"


def test_min_sample_guard_withholds_judgement() -> None:
    r = rule(kpi="conversion", op="<", value=0.02, min_sample={"kpi": "visitors", "value": 200})
    (inst,) = instances(r, AT, UTC_ZONE)
    assert inst.complete.sample is not None
    values = {inst.complete.current: 0.01, inst.complete.sample: 150.0}
    assert judge(inst, values).breaching is None
    values[inst.complete.sample] = 250.0
    assert judge(inst, values).breaching is True


def test_change_rule_reads_the_offset_window() -> None:
    r = rule(kind="change", offset="7d", op="<", value=-0.3, window="1h")
    (inst,) = instances(r, AT, UTC_ZONE)
    previous = inst.complete.previous
    assert previous is not None
    assert previous.t_to == AT - timedelta(days=7)
    assert judge(inst, {inst.complete.current: 60, previous: 100}).breaching is True


def test_watermark_guard_judges_complete_data_unless_the_live_verdict_is_final() -> None:
    wm = AT - timedelta(minutes=1)
    over = rule(op=">", value=100)
    (inst,) = instances(over, wm, UTC_ZONE, now=AT, monotone=True)
    assert inst.live is not None
    # A count already over the limit with minutes still open stays over it: judged now.
    assert judge(inst, {inst.live.current: 150, inst.complete.current: 90}).breaching is True
    # Under the limit on the live window may still change: the complete window decides.
    assert judge(inst, {inst.live.current: 95, inst.complete.current: 90}).breaching is False
    under = rule(op="<", value=100)
    (inst,) = instances(under, wm, UTC_ZONE, now=AT, monotone=True)
    assert inst.live is not None
    # A count below a floor may still climb: only the complete window can say "breaching".
    assert judge(inst, {inst.live.current: 50, inst.complete.current: 50}).breaching is True
    assert judge(inst, {inst.live.current: 150, inst.complete.current: 50}).breaching is False
    # Non-monotone KPIs (ratios, averages) never use the live window.
    (inst,) = instances(under, wm, UTC_ZONE, now=AT, monotone=False)
    assert inst.live is None


def test_absence_judges_up_to_now() -> None:
    r = rule(kind="absence", window="30m")
    wm = AT - timedelta(hours=2)  # the watermark stalls when nothing arrives
    (inst,) = instances(r, wm, UTC_ZONE, now=AT)
    assert inst.complete.current.t_to == AT
    assert judge(inst, {inst.complete.current: 0}).breaching is True
    assert judge(inst, {inst.complete.current: 4}).breaching is False
