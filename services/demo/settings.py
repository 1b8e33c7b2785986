"""Demo settings: `PACEKEEPER_DEMO_*` on top of the shared base (`make demo DEMO_DURATION=120`
sets `PACEKEEPER_DEMO_DURATION`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr

from services.demo.simulator import Scenario
from shared.durations import Duration
from shared.settings import BaseServiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class DemoSettings(BaseServiceSettings):
    # Seconds until the demo stops by itself; 0 runs until Ctrl-C.
    demo_duration: float = Field(0.0, ge=0)
    demo_seed: int = 42
    demo_scenario: Scenario | None = Scenario.checkout_collapse
    # Simulated history sent before the live part, so sparklines and pacing have a past.
    # 3 h of a 40k-visit shop is ~35k events: ingested and aggregated in seconds.
    demo_history: Duration = timedelta(hours=3)
    # The incident began this long before the demo starts and lasts this long, so the first
    # alert evaluation already sees it and a long-running demo shows the recovery too. 20
    # minutes: orders land up to ~8 minutes after a visit starts, so a 10-minute window is
    # wholly inside the incident by the time the alerts service starts.
    demo_incident_lead: Duration = timedelta(minutes=20)
    demo_incident_for: Duration = timedelta(minutes=30)
    # Visits a minute at the moment the demo starts (the shop is sized for it, whatever the
    # hour): 40 clear the conversion rule's 200-visitor sample in 10 minutes, at ~4 events/s.
    demo_visits_per_minute: float = Field(40.0, gt=0)
    # A clean slate per run: its own schema (dropped and migrated at start) and its own
    # topics, unless PACEKEEPER_DATABASE_SCHEMA / PACEKEEPER_EVENTS_TOPIC say otherwise.
    # Two runs in one schema would mix their traffic and every number would be off.
    demo_isolate: bool = True
    demo_schema: str = "pacekeeper_demo"
    demo_topic_prefix: str = "pacekeeper-demo"
    demo_config: Path = REPO_ROOT / "examples" / "pacekeeper.yaml"
    demo_log_dir: Path = REPO_ROOT / ".local" / "demo"
    demo_webhook_host: str = "127.0.0.1"
    demo_webhook_port: int = Field(9977, ge=0, le=65535)
    # Random per run when unset; handed to the config as PACEKEEPER_DEMO_WEBHOOK_SECRET.
    demo_webhook_secret: SecretStr | None = None
    demo_ingest_url: str = "http://127.0.0.1:8080"
    demo_aggregator_url: str = "http://127.0.0.1:8081"
    demo_alerts_url: str = "http://127.0.0.1:8082"
    demo_refresh_seconds: float = Field(2.0, gt=0)
    # Without a terminal (CI, logs) the scorecard is printed this often instead of redrawn.
    demo_print_every_seconds: float = Field(20.0, gt=0)
    demo_start_timeout: float = Field(120.0, gt=0)
    # The alerts service evaluates every 30 s by default; the demo looks more alive at 5 s.
    demo_alerts_tick_seconds: float = Field(5.0, gt=0)
