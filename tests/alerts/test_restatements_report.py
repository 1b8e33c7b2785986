"""The performance review shows a closed goal window restated by late events as reported
and as restated (the figures the alerts service recorded in `goal_results`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import orjson
import pytest

from services.alerts.store.results import ResultRow
from services.demo.periods import parse_period
from services.demo.report import build_report
from services.demo.report_render import render_html, render_json, render_markdown
from tests.demo.fakes import CONFIG, NOW, VALUES, FakeRepository

pytestmark = pytest.mark.unit

RESTATED_AT = datetime(2026, 11, 3, 9, tzinfo=UTC)


async def test_a_restated_window_shows_as_reported_and_as_restated() -> None:
    asked: list[tuple[str, datetime]] = []
    first: dict[str, str] = {}

    async def results(goal: str, start: datetime) -> ResultRow | None:
        asked.append((goal, start))
        if first.setdefault("goal", goal) != goal:
            return None  # only the first goal's window was restated
        return ResultRow(
            goal=goal, period_start=start, period_end=start, kpi="k", direction="at_least",
            reported_value=123456.0, reported_target=None, reported_status="met",
            reported_at=start, value=None, target=None, status=None, checked_at=RESTATED_AT,
            restatements=1, restated_at=RESTATED_AT,
        )  # fmt: skip

    period = parse_period("2026-10", NOW.date())
    plain = await build_report(FakeRepository(CONFIG, VALUES), period, now=NOW, charts=False)
    data = await build_report(
        FakeRepository(CONFIG, VALUES), period, now=NOW, charts=False, results=results
    )
    assert len(asked) == len(data.goals)
    restated = [row for row in data.goals if row.restated]
    assert [row.goal for row in restated] == [first["goal"]] * len(restated)
    assert all(row.reported_value == 123456.0 for row in restated)
    # The row's own numbers are today's reading: as restated.
    assert [replace(r, reported_value=None, restated_at=None) for r in data.goals] == plain.goals

    markdown = render_markdown(data)
    assert markdown.count("as reported ") == len(restated)
    assert "as reported" not in render_markdown(plain)
    assert render_html(data).count("as reported ") == len(restated)
    rows = orjson.loads(render_json(data))["goals"]
    assert [r["reported_value"] for r in rows if r["restated_at"]] == [123456.0] * len(restated)
