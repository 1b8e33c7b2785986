"""The demo's history written by the aggregator's batch writer: `kpi_value` answers for it
exactly what the simulated events add up to, older than the aggregates' horizon too, and a
second load of the same span changes nothing."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from services.demo.history import Progress, load_history
from services.demo.orchestrator import apply_example
from services.demo.settings import REPO_ROOT
from services.demo.simulator import (
    Incident,
    Profile,
    Scenario,
    SimConfig,
    Simulator,
    events_between,
)
from shared.config import load_config_text
from shared.settings import BaseServiceSettings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(second=0, microsecond=0)
# Older than the 8-day horizon beyond which kpi_value reads the continuous aggregates.
OLD = (NOW - timedelta(days=12)).replace(hour=0, minute=0)


def oracle(sim: Simulator, start: datetime, end: datetime) -> dict[str, float]:
    """Sessions, orders, revenue, distinct visitors and web page views as the example's KPIs
    define them, straight from the simulated events of [start, end)."""
    out: dict[str, float] = defaultdict(float)
    visitors: set[str] = set()
    for e in events_between(sim, start, end):
        if e.type == "session_started":
            out["sessions"] += 1
            visitors.add(e.body.get("user_id") or e.body["anonymous_id"])
        elif e.type == "order_completed":
            out["orders"] += 1
            out["revenue"] += e.body["properties"]["revenue"]
        elif e.type == "page_viewed" and e.source == "web-shop":
            out["web_page_views"] += 1
    out["visitors"] = len(visitors)
    return out


def kpi_values(
    db: psycopg.Connection[tuple[Any, ...]], lo: datetime, hi: datetime
) -> dict[str, float]:
    row = db.execute(
        """
        SELECT kpi_value('sessions', %(lo)s, %(hi)s), kpi_value('orders', %(lo)s, %(hi)s),
               kpi_value('revenue', %(lo)s, %(hi)s), kpi_value('visitors', %(lo)s, %(hi)s),
               kpi_value('page_views', %(lo)s, %(hi)s, '{"source": "web-shop"}')
        """,
        {"lo": lo, "hi": hi},
    ).fetchone()
    assert row is not None
    names = ("sessions", "orders", "revenue", "visitors", "web_page_views")
    return {name: float(value or 0) for name, value in zip(names, row, strict=True)}


def test_the_history_is_counted_exactly_once_old_and_recent(
    settings: BaseServiceSettings, db: psycopg.Connection[tuple[Any, ...]]
) -> None:
    incident = Incident(Scenario.traffic_drop, OLD + timedelta(hours=30), OLD + timedelta(hours=40))
    sim = Simulator(
        SimConfig(
            seed=5,
            profile=Profile(visits_per_day=1500, growth_per_week=0.06, ad_spend_every=60),
            incidents=(incident,),
            growth_anchor=NOW,
        )
    )
    spans = [(OLD, OLD + timedelta(days=2)), (NOW - timedelta(days=1), NOW)]
    example = (REPO_ROOT / "examples" / "pacekeeper.yaml").read_text(encoding="utf-8")
    asyncio.run(apply_example(settings, load_config_text(example, env={})))
    seen: list[Progress] = []
    loads = [
        asyncio.run(load_history(settings, sim, lo, hi, on_progress=seen.append, batch_size=2000))
        for lo, hi in spans
    ]
    assert all(load.events > 5000 and load.duplicates == 0 for load in loads)
    assert seen[-1].phase == "aggregates"
    assert [p.written for p in seen if p.phase == "events"] == sorted(
        p.written for p in seen if p.phase == "events"
    )

    day = timedelta(days=1)
    windows = [(OLD, OLD + day), (OLD + day, OLD + 2 * day), spans[1]]
    expected = [oracle(sim, lo, hi) for lo, hi in windows]
    # The past incident hides two thirds of the web traffic during its hours.
    assert expected[1]["web_page_views"] < 0.85 * expected[0]["web_page_views"]

    def check() -> None:
        for (lo, hi), want in zip(windows, expected, strict=True):
            got = kpi_values(db, lo, hi)
            for name, value in want.items():
                assert got[name] == pytest.approx(value, rel=1e-9), (lo, name)

    check()
    # Loaded again (a demo re-run into the same schema): every event is a duplicate.
    again = asyncio.run(load_history(settings, sim, *spans[0]))
    assert again.events == 0
    assert again.duplicates == loads[0].events
    check()
