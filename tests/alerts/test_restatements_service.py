"""A restated goal period with the alerts service as a process on real PostgreSQL: late
points change a closed goal's result, the 'restated' notification is delivered exactly once
even when the service is killed between recording it and delivering it, a small change
after that is recorded without a notification, and the API shows both figures."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.alerts.conftest import (
    ADMIN,
    ApplyConfig,
    Receiver,
    StartService,
    get_json,
    put_points,
    wait_until,
)

pytestmark = pytest.mark.e2e


def restated(receiver: Receiver) -> list[dict[str, Any]]:
    return [r.json for r in receiver.all() if "restatement" in r.json]


def one(db: psycopg.Connection[Any], sql: str) -> Any:
    row = db.execute(sql).fetchone()
    return None if row is None else row[0]


async def test_a_restatement_is_delivered_once_across_a_sigkill_and_small_ones_stay_quiet(
    receiver: Receiver,
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    start_service: StartService,
) -> None:
    today = datetime.now(UTC).date()
    yesterday = datetime.combine(today, datetime.min.time(), UTC) - timedelta(days=1)
    await apply_yaml(
        f"""
kpis:
  - {{name: orders, kind: count, event: order_completed}}
channels:
  - {{name: ops, type: webhook, url: "{receiver.url}", group_wait: 0s}}
goals:
  - {{name: launch-week, kpi: orders, target: 100, start: "{today - timedelta(days=3)}",
     deadline: "{today - timedelta(days=1)}", channels: [ops]}}
"""
    )
    put_points(db, "orders", 100, bucket=yesterday + timedelta(hours=10))
    # Records and enqueues, never delivers: a kill then is "between recording and delivery".
    first = start_service(PACEKEEPER_ALERTS_DELIVER="false")
    wait_until(lambda: one(db, "SELECT reported_status FROM goal_results") == "met", 15)

    put_points(db, "orders", 90, bucket=yesterday + timedelta(hours=10))  # late cancellations
    wait_until(
        lambda: one(db, "SELECT count(*) FROM deliveries WHERE group_key LIKE 'restated:%'"), 15
    )
    first.kill()
    assert restated(receiver) == []

    service = start_service()
    wait_until(lambda: restated(receiver), 15)
    await asyncio.sleep(3)  # several ticks: a duplicate would show up now
    (payload,) = restated(receiver)
    assert payload["restatement"]["reported"]["value"] == 100
    assert payload["restatement"]["restated"]["status"] == "missed"
    assert one(db, "SELECT status FROM deliveries WHERE group_key LIKE 'restated:%'") == (
        "delivered"
    )

    # A further -1%, still missed: recorded, not notified.
    put_points(db, "orders", 89, bucket=yesterday + timedelta(hours=10))
    wait_until(lambda: one(db, "SELECT restatements FROM goal_results") == 2, 15)
    await asyncio.sleep(2)
    assert len(restated(receiver)) == 1

    goal = get_json(f"{service.url}/v1/goals/launch-week", token=ADMIN)
    (result,) = goal["results"]
    assert result["reported"]["value"] == 100
    assert result["reported"]["status"] == "met"
    assert result["restated"]["value"] == 89
    assert result["restated"]["status"] == "missed"
    assert result["restated"]["delta"] == -11
    assert result["restated"]["relative"] == pytest.approx(-0.11)
    assert [(r["number"], r["notified"]) for r in result["restatements"]] == [
        (1, True),
        (2, False),
    ]
