"""The review on the real pipeline: simulated events through Kafka and the real aggregator
into PostgreSQL; every goal in the report carries the numbers `kpi_value` gives for the same
windows, and the HTML renders in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from aiokafka import AIOKafkaProducer

from services.aggregator.settings import AggregatorSettings
from services.demo.formatting import format_value
from services.demo.periods import parse_period
from services.demo.report import ReportFormat, build_report, goal_windows
from services.demo.report_render import render_html, write_report
from services.demo.repository import ReportRepository
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
from shared.config.store import apply_config
from shared.db import make_engine, make_sessionmaker, transaction
from shared.events import Envelope, encode, message_key
from tests.aggregator.helpers import running
from tests.conftest import Topics, settings_from_env
from tests.demo.conftest import chromium_args
from tests.demo.test_report_render import looks_like_a_page

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, envelopes: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for start in range(0, len(envelopes), 500):
            sends = [
                await producer.send(topic, value=encode(e), key=message_key(e))
                for e in envelopes[start : start + 500]
            ]
            await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def wait_aggregated(
    repo: ReportRepository, envelopes: list[Envelope], start: datetime, end: datetime
) -> None:
    """Until every produced session and page view counts (all partitions caught up)."""
    want = {
        kpi: sum(1 for e in envelopes if e.type == event)
        for kpi, event in (("sessions", "session_started"), ("page_views", "page_viewed"))
    }
    deadline = asyncio.get_running_loop().time() + 180
    while True:
        have = {kpi: await repo.kpi_value(kpi, start, end) for kpi in want}
        if have == want:
            return
        assert asyncio.get_running_loop().time() < deadline, f"aggregated {have} of {want}"
        await asyncio.sleep(0.5)


def _same_sum(value: float | None) -> object:
    """`kpi_value` sums double precision rows; PostgreSQL may add them in another order in
    another plan (plpgsql switches to a generic plan after five calls), which moves the last
    bit. The report must give the same number up to that, not a different one."""
    return None if value is None else pytest.approx(value, rel=1e-12, abs=1e-12)


async def test_report_numbers_are_kpi_value(
    service_env: dict[str, str], topics: Topics, unique: str, kafka_bootstrap: str,
    chromium: str, tmp_path: Path,
) -> None:  # fmt: skip
    settings = settings_from_env(
        AggregatorSettings, service_env, aggregator_group_id=unique, aggregator_topic_partitions=3,
        aggregator_batch_max_wait=0.1,
    )  # fmt: skip
    engine = make_engine(settings, application_name="test-report")
    sessions = make_sessionmaker(engine)
    try:
        example = REPO_ROOT / "examples" / "pacekeeper.yaml"
        config = load_config_text(example.read_text(encoding="utf-8"), env={})
        async with transaction(sessions) as session:
            await apply_config(session, config)

        # Yesterday and the day before, from a small shop with a checkout incident.
        now = datetime.now(UTC)
        today = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
        start, end = today - timedelta(days=2), today
        incident = Incident(
            Scenario.checkout_collapse, end - timedelta(hours=8), end - timedelta(hours=7)
        )
        sim = Simulator(
            SimConfig(seed=21, profile=Profile(visits_per_day=2500), incidents=(incident,))
        )
        received = datetime.now(UTC)
        envelopes = [
            Envelope(**e.body, source=e.source, received_at=received)
            for e in events_between(sim, start, end)
        ]
        async with running(settings):
            await produce(kafka_bootstrap, topics.events, envelopes)
            repo = ReportRepository(sessions)
            await wait_aggregated(repo, envelopes, start, end)

        period = parse_period("yesterday", now.date())
        data = await build_report(repo, period, now=now)
        zone = ZoneInfo(data.timezone)
        goals = {g.name: g for g in config.goals}
        assert {row.goal for row in data.goals} == set(goals)
        html_path = tmp_path / "review.html"
        write_report(data, ReportFormat.html, html_path)
        html = render_html(data)
        for row in data.goals:
            goal = goals[row.goal]
            (window,) = [w for w in goal_windows(goal, period, zone) if w.label == row.window]
            expected = await repo.kpi_value(goal.kpi, window.start, min(window.end, now))
            assert row.value == _same_sum(expected), row.goal
            assert format_value(row.value, row.unit) in html
        p_start, p_end = period.bounds(zone)
        for kpi in data.kpis:
            expected = await repo.kpi_value(kpi.name, p_start, p_end)
            assert kpi.value == _same_sum(expected), kpi.name
        orders = next(k for k in data.kpis if k.name == "orders")
        assert orders.value is not None
        assert orders.value > 20

        png = tmp_path / "review.png"
        shot = await asyncio.to_thread(
            subprocess.run,
            [*chromium_args(chromium, tmp_path / "profile"), "--window-size=1200,3000",
             f"--screenshot={png}", html_path.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert shot.returncode == 0, shot.stderr[-2000:]
        looks_like_a_page(png, min_height=3000)
        if artifacts := os.environ.get("PACEKEEPER_TEST_ARTIFACTS"):  # to look at it
            shutil.copy(png, Path(artifacts) / "review-db.png")
    finally:
        await engine.dispose()
