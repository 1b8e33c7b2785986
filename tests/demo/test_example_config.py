"""The shipped example validates as it is and measures what the simulator sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.demo.settings import REPO_ROOT, DemoSettings
from services.demo.simulator import Scenario, SimConfig, Simulator, events_between
from shared.config import load_config_text
from shared.config.kpis import CountDistinctKpi, FunnelKpi, RetentionKpi, _EventKpi
from shared.durations import parse_duration

pytestmark = pytest.mark.unit

EXAMPLE = REPO_ROOT / "examples" / "pacekeeper.yaml"


def test_valid_without_any_environment() -> None:
    config = load_config_text(EXAMPLE.read_text(encoding="utf-8"), env={})
    names = {k.name for k in config.kpis}
    # The catalogue of the issue: traffic, audience, sales, funnel, retention, marketing,
    # satisfaction, support, content.
    for name in (
        "page_views", "visitors", "active_users", "signups", "paying_users", "retention_d1",
        "retention_d7", "retention_d30", "visit_to_signup", "signup_to_purchase", "revenue",
        "aov", "cac", "roi", "csat", "nps", "first_response_p90", "content_published",
        "follower_growth", "conversion",
    ):  # fmt: skip
        assert name in names
    assert {g.name for g in config.goals} >= {"csat-quarterly", "monthly-revenue-growth"}
    assert config.channels[0].url is not None
    assert str(config.channels[0].url) == "http://127.0.0.1:9977/hook"


def test_the_environment_points_the_channel_elsewhere() -> None:
    env = {
        "PACEKEEPER_DEMO_WEBHOOK_URL": "http://127.0.0.1:1234/x",
        "PACEKEEPER_DEMO_WEBHOOK_SECRET": "abc",
    }
    config = load_config_text(EXAMPLE.read_text(encoding="utf-8"), env=env)
    channel = config.channels[0]
    assert str(channel.url) == "http://127.0.0.1:1234/x"
    assert channel.secret is not None
    assert channel.secret.get_secret_value() == "abc"


def test_every_kpi_counts_events_the_simulator_sends() -> None:
    config = load_config_text(EXAMPLE.read_text(encoding="utf-8"), env={})
    start = datetime(2026, 11, 3, 8, tzinfo=UTC)
    sent = {
        e.type
        for e in events_between(Simulator(SimConfig(seed=1)), start, start + timedelta(days=2))
    }
    for kpi in config.kpis:
        if isinstance(kpi, _EventKpi):
            assert kpi.event in sent, kpi.name
        elif isinstance(kpi, FunnelKpi):
            assert {s.event for s in kpi.steps} <= sent
        elif isinstance(kpi, RetentionKpi):
            assert {kpi.cohort_event, kpi.return_event} <= sent
    assert any(isinstance(k, CountDistinctKpi) for k in config.kpis)


def test_the_demo_incident_fills_the_window_of_the_rule_that_pages_on_it() -> None:
    """The demo's collapse began before the conversion rule's whole window and is still under
    way when the demo starts: the first evaluation judges incident traffic only."""
    config = load_config_text(EXAMPLE.read_text(encoding="utf-8"), env={})
    rule = {r.name: r for r in config.rules}["checkout-conversion-collapse"]
    settings = DemoSettings()
    assert settings.demo_scenario is Scenario.checkout_collapse
    assert settings.demo_incident_lead > parse_duration(rule.window)
    assert settings.demo_incident_for > settings.demo_incident_lead
    assert rule.min_sample is not None
    assert rule.min_sample.kpi == "visitors"
