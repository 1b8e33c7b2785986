"""Goal pacing and projection against a plain-arithmetic oracle."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.alerts.evaluation.goals import (
    GoalStatus,
    goal_period,
    pace,
    top_contributors,
)
from shared.config.alerting import Direction, GoalSpec
from shared.config.kpis import KpiKind

pytestmark = pytest.mark.unit
UTC_ZONE = ZoneInfo("UTC")


def goal(**kwargs: object) -> GoalSpec:
    base: dict[str, object] = {"name": "g", "kpi": "revenue", "period": "month"}
    if "start" in kwargs:
        base.pop("period")
    return GoalSpec.model_validate({**base, **kwargs})


def test_one_off_period_includes_the_deadline_day() -> None:
    g = goal(target=0.9, start=date(2027, 1, 1), deadline=date(2027, 3, 31), kpi="csat")
    period = goal_period(g, datetime(2027, 2, 1, tzinfo=UTC), ZoneInfo("Asia/Shanghai"))
    assert period.start == datetime(2026, 12, 31, 16, tzinfo=UTC)
    assert period.end == datetime(2027, 3, 31, 16, tzinfo=UTC)
    assert period.end - period.start == period.previous_end - period.previous_start


def test_recurring_period_is_the_current_month_and_the_one_before() -> None:
    g = goal(growth=0.2)
    period = goal_period(g, datetime(2027, 3, 16, tzinfo=UTC), UTC_ZONE)
    assert (period.start, period.end) == (
        datetime(2027, 3, 1, tzinfo=UTC),
        datetime(2027, 4, 1, tzinfo=UTC),
    )
    assert period.previous_start == datetime(2027, 2, 1, tzinfo=UTC)
    assert period.elapsed(datetime(2027, 3, 16, 12, tzinfo=UTC)) == pytest.approx(15.5 / 31)


def sales(value: float, elapsed: float, **kwargs: object) -> GoalStatus:
    return pace(
        goal(target=1000),
        kind=KpiKind.sum,
        value=value,
        elapsed=elapsed,
        previous_total=kwargs.get("previous_total"),  # type: ignore[arg-type]
        previous_to_date=kwargs.get("previous_to_date"),  # type: ignore[arg-type]
    ).status


def test_cumulative_linear_pacing() -> None:
    result = pace(
        goal(target=1000),
        kind=KpiKind.sum,
        value=500,
        elapsed=0.5,
        previous_total=None,
        previous_to_date=None,
    )
    assert (result.expected, result.projection, result.gap) == (500, 1000, 0)
    assert result.status is GoalStatus.on_track
    assert sales(460, 0.5) is GoalStatus.at_risk  # projects 920: 8% short
    assert sales(400, 0.5) is GoalStatus.off_track  # projects 800: 20% short
    assert sales(1000, 0.5) is GoalStatus.achieved
    assert sales(999, 1.0) is GoalStatus.off_track  # the period is over


def test_growth_goal_takes_its_target_from_the_previous_period_and_its_shape() -> None:
    result = pace(
        goal(growth=0.2),
        kind=KpiKind.sum,
        value=400,
        elapsed=0.5,
        previous_total=1000,
        previous_to_date=300,
    )
    # Last month had earned 30% of its total by this point, so 30% of 1200 is on pace.
    assert result.target == pytest.approx(1200)
    assert result.expected == pytest.approx(360)
    assert result.projection == pytest.approx(400 / 0.3)
    assert result.status is GoalStatus.on_track


def test_growth_goal_without_history_cannot_be_judged_on_track() -> None:
    result = pace(
        goal(growth=0.2),
        kind=KpiKind.sum,
        value=400,
        elapsed=0.5,
        previous_total=None,
        previous_to_date=None,
    )
    assert result.target is None
    assert result.status is GoalStatus.at_risk


def test_growth_over_an_empty_previous_period_has_no_target() -> None:
    # A sum over an empty month is 0, not NULL: +20% of nothing must not read as achieved.
    result = pace(
        goal(growth=0.2),
        kind=KpiKind.sum,
        value=400,
        elapsed=0.5,
        previous_total=0.0,
        previous_to_date=0.0,
    )
    assert result.target is None
    assert result.status is not GoalStatus.achieved


def test_level_kpi_paces_from_baseline_to_target() -> None:
    g = goal(
        kpi="csat", target=0.9, baseline=0.8, start=date(2027, 1, 1), deadline=date(2027, 3, 31)
    )
    result = pace(
        g, kind=KpiKind.ratio, value=0.86, elapsed=0.5, previous_total=None, previous_to_date=None
    )
    assert result.expected == pytest.approx(0.85)
    assert result.projection == pytest.approx(0.86)
    assert result.status is GoalStatus.at_risk  # on pace, but 0.86 now is short of 0.9
    result = pace(
        g, kind=KpiKind.ratio, value=0.92, elapsed=0.5, previous_total=None, previous_to_date=None
    )
    assert result.status is GoalStatus.on_track


def test_at_most_goals_mirror() -> None:
    g = goal(kpi="tickets", target=100, direction="at_most")

    def status(value: float, elapsed: float) -> GoalStatus:
        return pace(
            g,
            kind=KpiKind.count,
            value=value,
            elapsed=elapsed,
            previous_total=None,
            previous_to_date=None,
        ).status

    assert status(40, 0.5) is GoalStatus.on_track  # projects 80
    assert status(52, 0.5) is GoalStatus.at_risk  # projects 104
    assert status(70, 0.5) is GoalStatus.off_track  # projects 140
    assert status(101, 0.5) is GoalStatus.off_track  # already over the cap


def test_early_in_the_period_nothing_is_off_track_yet() -> None:
    assert sales(0, 0.01) is GoalStatus.at_risk


@given(
    target=st.floats(1, 1e6),
    fraction_of_target=st.floats(0, 2),
    elapsed=st.floats(0.05, 0.999),
    margin=st.floats(0, 0.5),
)
def test_cumulative_linear_status_matches_the_oracle(
    target: float, fraction_of_target: float, elapsed: float, margin: float
) -> None:
    value = target * fraction_of_target
    g = goal(target=target, at_risk_margin=margin)
    result = pace(
        g,
        kind=KpiKind.count,
        value=value,
        elapsed=elapsed,
        previous_total=None,
        previous_to_date=None,
    )
    # Oracle: a straight line from 0 to the target; the run rate so far, continued.
    run_rate_total = value / elapsed
    if value >= target:
        expected = GoalStatus.achieved
    elif run_rate_total >= target:
        expected = GoalStatus.on_track
    elif (target - run_rate_total) / target <= margin:
        expected = GoalStatus.at_risk
    else:
        expected = GoalStatus.off_track
    assert result.expected == pytest.approx(target * elapsed)
    assert (
        result.status is expected
        or abs(run_rate_total - target) < 1e-6 * target
        or abs((target - run_rate_total) / target - margin) < 1e-9
    )


def test_top_contributors_are_the_biggest_drops() -> None:
    current = {"seo": 50.0, "ads": 10.0, "email": 30.0}
    previous = {"seo": 40.0, "ads": 60.0, "email": 45.0, "social": 5.0}
    assert top_contributors(current, previous, Direction.at_least) == [
        ("ads", -50.0),
        ("email", -15.0),
        ("social", -5.0),
    ]
    assert top_contributors(current, previous, Direction.at_most, limit=1) == [("seo", 10.0)]
