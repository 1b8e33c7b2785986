"""The review from fixture numbers: every goal with the repository's numbers, pacing as the
alerts service paces, and every output format. Rendering in a real browser and the real
`kpi_value` are in test_report_render.py and test_report_db.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from services.alerts.evaluation.goals import goal_period
from services.demo.formatting import format_change, format_value
from services.demo.pacing import ReviewStatus, attainment, review_status
from services.demo.periods import parse_period
from services.demo.report import ReportFormat, build_report, goal_windows
from services.demo.report_render import render_html, render_json, render_markdown, write_report
from shared.config.alerting import Direction
from tests.demo.fakes import CONFIG, NOW, VALUES, FakeRepository, november

pytestmark = pytest.mark.unit


async def test_every_goal_window_with_the_repositorys_numbers() -> None:
    repo = FakeRepository(CONFIG, VALUES)
    data = await november(repo)
    by_goal: dict[str, list[str]] = {}
    for row in data.goals:
        by_goal.setdefault(row.goal, []).append(row.window)
    assert by_goal == {
        "conversion-3pct": ["November 2026"],
        "csat-quarterly": ["Q4 2026"],
        "first-response-30m": ["Week 44, 2026", "Week 45, 2026", "Week 46, 2026", "Week 47, 2026"],
        "launch-orders": ["10 Nov 2026 \u2013 30 Nov 2026"],
        "monthly-revenue-growth": ["November 2026"],
    }
    assert data.timezone == "UTC"
    for row in data.goals:
        goal = next(g for g in CONFIG.goals if g.name == row.goal)
        windows = goal_windows(goal, data.period, ZoneInfo(data.timezone))
        window = next(w for w in windows if w.label == row.window)
        expected = VALUES[goal.kpi](window.start, min(window.end, NOW))
        assert row.value == expected, row


async def test_growth_targets_come_from_the_previous_period() -> None:
    data = await november()
    row = next(r for r in data.goals if r.goal == "monthly-revenue-growth")
    october = VALUES["revenue"](
        datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    )
    assert october is not None
    assert row.target == pytest.approx(october * 1.2)
    assert "+20% vs October 2026" in row.target_note
    assert row.in_progress


async def test_statuses_match_the_alerts_service_pacing() -> None:
    data = await november()
    status = {(r.goal, r.window): r.status for r in data.goals}
    # A finished week over its cap is missed; the running week is judged on its projection.
    assert status[("first-response-30m", "Week 45, 2026")] is ReviewStatus.missed
    assert status[("first-response-30m", "Week 47, 2026")] is ReviewStatus.off_track
    assert status[("conversion-3pct", "November 2026")] is ReviewStatus.at_risk


async def test_kpi_table_compares_like_for_like_with_the_previous_period() -> None:
    data = await november()
    orders = next(k for k in data.kpis if k.name == "orders")
    start = datetime(2026, 11, 1, tzinfo=UTC)
    assert orders.value == VALUES["orders"](start, NOW)
    prev_start = datetime(2026, 10, 1, tzinfo=UTC)
    assert orders.previous == VALUES["orders"](prev_start, prev_start + (NOW - start))
    assert orders.change is not None
    assert orders.change > 0
    csat = next(k for k in data.kpis if k.name == "csat")
    assert csat.target == 0.9  # a level compares with its goal's target mid-period
    revenue = next(k for k in data.kpis if k.name == "revenue")
    assert revenue.target is None  # a running total does not, until its month closes
    # KPIs with goals come first.
    assert [k.name for k in data.kpis][:2] == ["conversion", "csat"]


async def test_alerts_of_the_period_with_time_to_resolve() -> None:
    data = await november()
    assert data.alerts is not None
    assert [a.name for a in data.alerts] == ["checkout-conversion-collapse", "csat-low"]
    assert data.alerts[0].time_to_resolve == timedelta(minutes=38)
    assert data.median_time_to_resolve == timedelta(minutes=38)
    assert data.alerts_open == 1


async def test_a_closed_period_is_achieved_or_missed() -> None:
    data = await build_report(
        FakeRepository(CONFIG, VALUES), parse_period("2026-10", NOW.date()), now=NOW, charts=False
    )
    assert not data.in_progress
    assert data.alerts is None
    for row in data.goals:
        if not row.in_progress:
            assert row.status in {ReviewStatus.achieved, ReviewStatus.missed}
    assert all(r.chart is None for r in data.goals)


async def test_a_definition_changed_in_the_period_is_said_once() -> None:
    repo = FakeRepository(CONFIG, VALUES)
    repo.changed = {"orders": datetime(2026, 11, 12, 9, 30, tzinfo=UTC)}
    (note,) = [n for n in (await november(repo)).notes if "definition" in n]
    assert note.startswith("The definition of orders changed on 12 Nov 09:30;")
    repo.changed = {"orders": datetime(2026, 10, 12, tzinfo=UTC)}  # before the period
    assert not [n for n in (await november(repo)).notes if "definition" in n]


async def test_outputs(tmp_path: Path) -> None:
    data = await november()
    html = render_html(data)
    assert html.startswith("<!doctype html>")
    assert html.count("data:image/png;base64,") == 5  # one chart per goal
    for row in data.goals:
        assert row.goal in html
        assert format_value(row.value, row.unit) in html
    markdown = render_markdown(data, tmp_path / "charts")
    assert "| monthly-revenue-growth | revenue | November 2026 (in progress) |" in markdown
    assert len(list((tmp_path / "charts").glob("*.png"))) == 5
    payload = orjson.loads(render_json(data))
    assert payload["period"] == "2026-11"
    assert {g["goal"] for g in payload["goals"]} == {g.name for g in CONFIG.goals}
    for fmt in ReportFormat:
        out = tmp_path / f"review.{fmt.value}"
        write_report(data, fmt, out)
        assert out.stat().st_size > 1000
    assert (tmp_path / "review.pdf").read_bytes().startswith(b"%PDF-")


def test_formats() -> None:
    assert format_value(0.03125, "ratio") == "3.1%"
    assert format_value(12345.6, "USD") == "$12,346"
    assert format_value(54.2, "USD") == "$54.20"
    assert format_value(-20, "USD") == "-$20.00"
    assert format_value(1500, "s") == "25.0 min"
    assert format_value(45, "s") == "45 s"
    assert format_value(7200, "s") == "2.0 h"
    assert format_value(1234567, "") == "1,234,567"
    assert format_value(31.25, "points") == "31.25"
    assert format_value(None, "USD") == "—"
    assert format_change(0.123) == "▲ +12.3%"
    assert format_change(-0.05) == "▼ -5.0%"
    assert format_change(None) == "—"


def test_review_status_vocabulary() -> None:
    goal = CONFIG.goals[1]  # csat-quarterly
    from services.alerts.evaluation.goals import pace
    from shared.config.kpis import KpiKind

    closed = pace(
        goal,
        kind=KpiKind.ratio,
        value=0.85,
        elapsed=1.0,
        previous_total=None,
        previous_to_date=None,
    )
    assert review_status(closed) is ReviewStatus.missed
    empty = pace(
        goal,
        kind=KpiKind.ratio,
        value=None,
        elapsed=0.5,
        previous_total=None,
        previous_to_date=None,
    )
    assert review_status(empty) is ReviewStatus.no_data
    assert attainment(0.85, 0.9, Direction.at_least) == pytest.approx(0.85 / 0.9)
    assert attainment(2000, 1800, Direction.at_most) == pytest.approx(0.9)
    assert attainment(0, 1800, Direction.at_most) is None


def test_one_off_goal_windows() -> None:
    zone = ZoneInfo("Europe/Berlin")
    goal = CONFIG.goals[4]
    (window,) = goal_windows(goal, parse_period("2026-11", date(2026, 11, 1)), zone)
    assert window.span == goal_period(goal, NOW, zone)
    assert window.start == datetime(2026, 11, 10, tzinfo=zone)
    assert goal_windows(goal, parse_period("2026-09", date(2026, 11, 1)), zone) == []
