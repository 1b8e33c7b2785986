"""The demo's two stories: the first definition of `active_users`, and late orders that
ingest accepts and that count on yesterday."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from services.demo.settings import REPO_ROOT
from services.demo.stories import REDEFINED_KPI, RESTATED_GOAL, first_definitions, late_orders
from shared.config import load_config_text
from shared.events import TimePolicy, validate_event

pytestmark = pytest.mark.unit
CONFIG = load_config_text((REPO_ROOT / "examples" / "pacekeeper.yaml").read_text())


def test_the_first_definition_differs_from_the_file_only_in_its_event() -> None:
    first = {k.name: k for k in first_definitions(CONFIG).kpis}
    final = {k.name: k for k in CONFIG.kpis}
    assert first.keys() == final.keys()
    changed = {n for n in final if first[n] != final[n]}
    assert changed == {REDEFINED_KPI}
    before, after = first[REDEFINED_KPI], final[REDEFINED_KPI]
    assert (before.event, after.event) == ("page_viewed", "session_started")  # type: ignore[union-attr]
    assert before.model_dump(exclude={"event", "description"}) == after.model_dump(
        exclude={"event", "description"}
    )


def test_late_orders_are_accepted_events_of_that_day_for_the_restated_goal() -> None:
    zone = ZoneInfo("Asia/Shanghai")
    day = date(2026, 11, 30)
    orders = late_orders(day, zone, 8, tag="t")
    assert len({o.body["id"] for o in orders}) == 8
    assert {o.time.astimezone(zone).date() for o in orders} == {day}
    received = datetime(2026, 12, 1, 20, tzinfo=UTC)
    for i, order in enumerate(orders):
        accepted = validate_event(
            order.body, i, source=order.source, received_at=received, policy=TimePolicy()
        )
        assert not isinstance(accepted, list), accepted
    goal = next(g for g in CONFIG.goals if g.name == RESTATED_GOAL)
    kpi = next(k for k in CONFIG.kpis if k.name == goal.kpi)
    assert kpi.event == "order_completed"  # type: ignore[union-attr]
    assert goal.restate_threshold is not None
    assert goal.target is not None
    assert len(orders) / goal.target >= goal.restate_threshold  # enough to be told
