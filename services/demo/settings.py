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
    # Simulated history written before the live part, so weekly and monthly reviews, goals
    # and "compared with last week" have a past: at least this long, and back to the first
    # day of a month if one lies within the slack before it (services.demo.shop.history_start:
    # the previous month is always whole, and early in a month the one before it too). The
    # slack costs at most ~18% more events, and only when it makes a month whole.
    demo_history: Duration = timedelta(weeks=8)
    demo_history_month_slack: Duration = timedelta(weeks=2)
    # One shop for the whole demo, history and live alike, so every comparison is like for
    # like. Its size is set by what this machine aggregates in time: visits a minute on
    # average today (the daily rhythm swings 0.25x-1.7x around it); with the growth below
    # and 1.5 pages a visit, 8-9 weeks of it are ~190,000 events (docs/demo.md: load times).
    demo_visits_per_minute: float = Field(1.2, gt=0)
    demo_growth_per_week: float = Field(0.06, ge=0, le=1)  # +59% over eight weeks
    # Page views are most of a visit's events and only the page_views KPI counts them: 1.5
    # instead of the simulator's 4.2 makes a visit 2.5 events instead of 5.3.
    demo_pages_per_session: float = Field(1.5, ge=1)
    # The live incident began this long before the demo starts and lasts this long: the
    # conversion rule judges the last 4 hours, so they are wholly inside the incident when
    # the alerts service starts, and a demo left running sees the recovery after ~40 min.
    demo_incident_lead: Duration = timedelta(hours=4, minutes=20)
    demo_incident_for: Duration = timedelta(hours=5)
    # An incident in the history (None: none): a broken tag manager that hid two thirds of
    # the web traffic for a working day, 17 days before the demo (a week the weekly review
    # can compare with the ones around it).
    demo_past_incident: Scenario | None = Scenario.traffic_drop
    demo_past_incident_ago: Duration = timedelta(days=17)
    demo_past_incident_for: Duration = timedelta(hours=10)
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
    # The web scorecard's read-only login (PACEKEEPER_ALERTS_READ_TOKEN of the demo's alerts
    # service); random per run when unset, printed with the page's address.
    demo_read_token: SecretStr | None = None
    demo_ingest_url: str = "http://127.0.0.1:8080"
    demo_aggregator_url: str = "http://127.0.0.1:8081"
    demo_alerts_url: str = "http://127.0.0.1:8082"
    demo_refresh_seconds: float = Field(2.0, gt=0)
    # Without a terminal (CI, logs) the scorecard is printed this often instead of redrawn.
    demo_print_every_seconds: float = Field(20.0, gt=0)
    demo_start_timeout: float = Field(120.0, gt=0)
    # The alerts service evaluates every 30 s by default; the demo looks more alive at 5 s.
    demo_alerts_tick_seconds: float = Field(5.0, gt=0)
