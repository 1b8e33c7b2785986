"""Two things that happen to every operations team, staged in the demo: a KPI's definition
changes after months of history, and late events restate a day that was already reported.

- `first_definitions`: the example config as it stood before `active_users` was tightened
  ("any signed-in page view" became "a signed-in session"). The demo applies it before the
  history, so the history is aggregated under version 1; applying the real file afterwards
  makes version 2, which recomputes the history in the background and switches over.
- `late_orders`: orders of yesterday that the payment provider settled late, sent through
  ingest like any event (well within the allowed lateness): the `daily-orders` goal's
  closed day is restated, and its channel hears about it once.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from services.demo.simulator import SimEvent, iso
from shared.config import PacekeeperConfig
from shared.config.kpis import CountDistinctKpi

REDEFINED_KPI = "active_users"
RESTATED_GOAL = "daily-orders"


def first_definitions(config: PacekeeperConfig) -> PacekeeperConfig:
    """`config` with `active_users` as first defined: any page view by a signed-in user."""
    kpis = []
    for spec in config.kpis:
        if spec.name == REDEFINED_KPI and isinstance(spec, CountDistinctKpi):
            spec = spec.model_copy(
                update={
                    "event": "page_viewed",
                    "description": "Signed-in users who viewed a page (first definition)",
                }
            )
        kpis.append(spec)
    return config.model_copy(update={"kpis": kpis})


def late_orders(day: date, zone: ZoneInfo, count: int, *, tag: str) -> list[SimEvent]:
    """`count` paid web-shop orders placed around noon of `day`, with ids of their own."""
    noon = datetime.combine(day, time(12), zone)
    return [
        SimEvent(
            "web-shop",
            noon + timedelta(minutes=7 * i),
            {
                "id": f"late-{tag}-{i}",
                "type": "order_completed",
                "time": iso(noon + timedelta(minutes=7 * i)),
                "anonymous_id": f"late-buyer-{tag}-{i}",
                "properties": {
                    "order_id": f"late-{tag}-{i}",
                    "revenue": 42.0,
                    "currency": "USD",
                    "items": 1,
                    "channel": "direct",
                    "first_order": True,
                },
            },
        )
        for i in range(count)
    ]
