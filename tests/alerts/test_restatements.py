"""Restated goal periods, the pure parts: which closed periods are still open to late
events, a closed period's verdict, when a restatement notifies, and its text."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.alerts.evaluation.restatements import (
    GRACE,
    ResultStatus,
    Standing,
    differs,
    notice_key,
    notify_due,
    open_periods,
    relative_change,
    standing,
    target_follows_data,
)
from services.alerts.notify import text
from shared.config.alerting import Direction, GoalSpec
from shared.i18n import Locale

pytestmark = pytest.mark.unit

UTC_ZONE = ZoneInfo("UTC")
WEEK = timedelta(days=7)
met, missed = ResultStatus.met, ResultStatus.missed


def goal(**fields: object) -> GoalSpec:
    return GoalSpec.model_validate({"name": "g", "kpi": "orders", "target": 100, **fields})


def test_a_day_goal_keeps_the_days_late_events_can_reach_open() -> None:
    at = datetime(2026, 11, 10, 0, 30, tzinfo=UTC)
    periods = list(open_periods(goal(period="day"), at, UTC_ZONE, WEEK))
    ends = [p.end for p in periods]
    # Newest first: yesterday closed at midnight; the oldest ended within lateness + grace.
    assert ends[0] == datetime(2026, 11, 10, tzinfo=UTC)
    assert all(e > at - WEEK - GRACE for e in ends)
    assert ends[-1] - timedelta(days=1) <= at - WEEK - GRACE
    assert [p.end - p.start for p in periods] == [timedelta(days=1)] * len(periods)
    assert periods[0].previous_end == periods[0].start == periods[1].end


def test_a_running_period_is_not_closed() -> None:
    at = datetime(2026, 11, 5, 12, tzinfo=UTC)
    (october,) = open_periods(goal(period="month"), at, UTC_ZONE, WEEK)  # not November
    assert (october.start, october.end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    assert list(open_periods(goal(period="month"), at, UTC_ZONE, timedelta(days=1))) == []
    assert list(open_periods(goal(period="month"), at + WEEK, UTC_ZONE, WEEK)) == []


def test_a_one_off_goal_closes_after_its_deadline_day() -> None:
    spec = goal(start=date(2026, 11, 1), deadline=date(2026, 11, 9))
    assert list(open_periods(spec, datetime(2026, 11, 9, 23, tzinfo=UTC), UTC_ZONE, WEEK)) == []
    (period,) = open_periods(spec, datetime(2026, 11, 10, 0, 1, tzinfo=UTC), UTC_ZONE, WEEK)
    assert (period.start, period.end) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 10, tzinfo=UTC),
    )
    later = datetime(2026, 11, 10, tzinfo=UTC) + WEEK + GRACE
    assert list(open_periods(spec, later, UTC_ZONE, WEEK)) == []


def test_periods_follow_the_business_time_zone() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    at = datetime(2026, 11, 10, 0, 30, tzinfo=UTC)  # 08:30 in Shanghai
    (first, *_) = open_periods(goal(period="day"), at, zone, WEEK)
    assert first.end == datetime(2026, 11, 9, 16, tzinfo=UTC)  # Shanghai midnight


def test_verdicts() -> None:
    assert standing(Direction.at_least, 100, 100).status is met
    assert standing(Direction.at_least, 99.9, 100).status is missed
    assert standing(Direction.at_most, 5, 4).status is missed
    assert standing(Direction.at_most, 4, 4).status is met
    assert standing(Direction.at_least, None, 100).status is None
    assert standing(Direction.at_least, 5, None).status is None


def test_only_a_data_derived_target_is_restated() -> None:
    assert target_follows_data(goal(target=None, growth=0.2, period="month"))
    assert not target_follows_data(goal(target=None, growth=0.2, baseline=50, period="month"))
    assert not target_follows_data(goal(period="month"))


def test_relative_change() -> None:
    assert relative_change(100, 90) == pytest.approx(-0.1)
    assert relative_change(-100, -90) == pytest.approx(0.1)
    assert relative_change(0, 5) == math.inf
    assert relative_change(0, -5) == -math.inf
    assert relative_change(0, 0) == 0
    assert relative_change(None, 5) is None


def test_reading_the_same_sum_in_another_order_is_no_restatement() -> None:
    a = Standing(0.1 + 0.2 + 0.3, 1, missed)
    b = Standing(0.3 + 0.2 + 0.1, 1, missed)
    assert a.value != b.value
    assert not differs(a, b)
    assert differs(a, Standing(0.61, 1, missed))
    assert differs(a, Standing(a.value, 2, missed))  # a restated growth target


values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(told=values, now=values, target=values, threshold=st.floats(0.001, 1))
def test_notify_exactly_when_the_verdict_crosses_or_the_value_moves_enough(
    told: float, now: float, target: float, threshold: float
) -> None:
    before = standing(Direction.at_least, told, target)
    after = standing(Direction.at_least, now, target)
    crossed = (told >= target) != (now >= target)
    moved = abs((now - told) / told) >= threshold if told else now != 0
    assert notify_due(before, after, threshold) == (crossed or moved)


@given(told=values, now=values, target=values)
def test_no_threshold_catches_a_crossing(told: float, now: float, target: float) -> None:
    before = standing(Direction.at_most, told, target)
    after = standing(Direction.at_most, now, target)
    if before.status != after.status:
        assert notify_due(before, after, math.inf)


def test_a_verdict_appearing_notifies() -> None:
    assert notify_due(Standing(None, 100, None), Standing(120, 100, met), 0.05)
    assert notify_due(Standing(100, None, None), Standing(100, 90, met), 10.0)


def test_notice_keys_differ_by_every_part_and_are_stable() -> None:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    key = notice_key("g", start, 1, "ops")
    assert key == notice_key("g", start, 1, "ops")
    others = {
        notice_key("h", start, 1, "ops"),
        notice_key("g", start + timedelta(days=1), 1, "ops"),
        notice_key("g", start, 2, "ops"),
        notice_key("g", start, 1, "mail"),
    }
    assert key not in others
    assert len(others) == 4


PAYLOAD = {
    "groupLabels": {"alertname": "monthly-revenue"},
    "restatement": {"goal": "monthly-revenue"},
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "monthly-revenue", "event": "restated"},
            "annotations": {"summary": "restated"},
            "value": 940.0,
            "restatement": {
                "period_start": "2026-11-01T00:00:00+00:00",
                "reported": {"value": 1000.0, "status": "met"},
                "restated": {"value": 940.0, "status": "missed"},
                "delta": -60.0,
                "relative": -0.06,
            },
        }
    ],
}


def test_the_restated_text_says_as_reported_and_as_restated() -> None:
    assert text.title(PAYLOAD) == "[RESTATED] monthly-revenue"
    body = text.body(PAYLOAD)
    assert (
        "period from 2026-11-01 restated: as reported 1,000 (met), as restated 940 (missed),"
        " change -60 (-6.0%)" in body
    )


def test_the_restated_text_in_chinese() -> None:
    title = text.title(PAYLOAD, Locale.zh_CN)
    assert title.endswith("monthly-revenue")
    assert "RESTATED" not in title
    assert "1,000" in text.body(PAYLOAD, locale=Locale.zh_CN)
