"""A real Alertmanager (Debian's prometheus-alertmanager, on loopback) receives our alerts
through its v2 API and lists them in `GET /api/v2/alerts`; a resolve clears them."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.alerts.conftest import (
    ApplyConfig,
    StartService,
    free_port,
    minute,
    put_points,
    wait_until,
)

pytestmark = pytest.mark.e2e

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
CONFIG = """
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    if not Path(BINARY).exists():
        pytest.fail("prometheus-alertmanager is not installed: run `make observability`")
    (tmp_path / "am.yml").write_text(CONFIG)
    port = free_port()
    with (tmp_path / "am.log").open("wb") as log:
        process = subprocess.Popen(
            [
                BINARY,
                f"--config.file={tmp_path / 'am.yml'}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # no gossip port (9094 is Kafka's controller)
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 20)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def active(url: str) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = httpx.get(f"{url}/api/v2/alerts").json()
    return [a for a in alerts if a["labels"].get("alertname") == "orders-high"]


async def test_alertmanager_shows_our_alerts_and_their_resolution(
    alertmanager: str,
    apply_yaml: ApplyConfig,
    db: psycopg.Connection[Any],
    start_service: StartService,
) -> None:
    await apply_yaml(
        f"""
kpis:
  - {{name: orders, kind: count, event: order_completed, dimensions: [source]}}
channels:
  - {{name: am, type: alertmanager, url: "{alertmanager}", group_wait: 0s, group_interval: 1s}}
rules:
  - {{name: orders-high, kpi: orders, window: 2m, op: ">", value: 5, group_by: [source],
     channels: [am],
     annotations: {{summary: "{{{{ value }}}} orders from {{{{ labels.source }}}}"}}}}
"""
    )
    start_service()
    bucket = minute()
    put_points(db, "orders", 9, dims={"source": "web-shop"}, bucket=bucket)
    put_points(db, "orders", 2, dims={"source": "app"}, bucket=bucket)
    (alert,) = wait_until(lambda: active(alertmanager), 15)
    assert alert["labels"] == {
        "alertname": "orders-high",
        "severity": "page",
        "kpi": "orders",
        "source": "web-shop",
    }
    assert alert["annotations"]["summary"] == "9.0 orders from web-shop"
    assert alert["status"]["state"] == "active"

    put_points(db, "orders", 1, dims={"source": "web-shop"}, bucket=bucket)
    wait_until(lambda: not active(alertmanager), 15)
    await asyncio.sleep(1)
    assert active(alertmanager) == []
