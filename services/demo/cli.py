"""`pacekeeper simulate | scorecard | report | demo`: wiring only, imports deferred so the rest
of the CLI starts fast."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from services.demo.settings import DemoSettings
    from services.demo.simulator import EventStream, Incident

_RELATIVE = re.compile(r"^([+-])(.+)$")
# Warming a stream up replays ~31 h of tickets and 25 min of sessions: ~0.3 s for 45k visits
# a day, ~20 s for 8.5 million (a 500 events/s load).
WARMUP_LIMIT = 1_000_000


def parse_time(text: str, now: datetime) -> datetime:
    """`now`, `-3h`, `+30m` (relative to now) or an ISO 8601 time (UTC unless it says)."""
    from shared.durations import parse_duration

    value = text.strip()
    if value.lower() == "now":
        return now
    if match := _RELATIVE.match(value):
        delta = parse_duration(match.group(2))
        return now - delta if match.group(1) == "-" else now + delta
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _time_option(text: str | None, now: datetime, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=name) from None


def _settings() -> DemoSettings:
    from services.demo.settings import DemoSettings

    return DemoSettings()


def read_keys(pairs: list[str], keys_file: Path | None) -> dict[str, str]:
    """`SOURCE=KEY` pairs, from options and/or a file of such lines."""
    lines = list(pairs)
    if keys_file is not None:
        lines += [
            line.strip()
            for line in keys_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    keys: dict[str, str] = {}
    for line in lines:
        source, sep, key = line.partition("=")
        if not sep or not source.strip() or not key.strip():
            raise typer.BadParameter(f"{line!r}: use SOURCE=KEY", param_hint="--key")
        keys[source.strip()] = key.strip()
    return keys


def simulate(
    ingest_url: str | None = typer.Option(
        None, help="ingest base URL [PACEKEEPER_DEMO_INGEST_URL]"
    ),
    key: list[str] = typer.Option([], "--key", help="SOURCE=KEY, once per source"),
    keys_file: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="SOURCE=KEY lines"
    ),
    create_keys: bool = typer.Option(
        False, help="create a key for every source without one (the default when none is given)"
    ),
    seed: int = typer.Option(42, help="same seed, same events"),
    scenario: list[str] = typer.Option(
        [], help="checkout-collapse | traffic-drop | csat-slide | support-backlog (repeatable)"
    ),
    incident_at: str = typer.Option("+10m", help="when incidents begin: now, -20m, +1h, or ISO"),
    incident_for: str = typer.Option("1h", help="how long incidents last, e.g. 45m"),
    rate: float | None = typer.Option(
        None, help="events/s: sizes the shop to this rate (live), or caps sending (--speed 0)"
    ),
    visits_per_day: float | None = typer.Option(None, help="size of the shop (default 45,000)"),
    speed: float = typer.Option(1.0, min=0, help="simulated seconds per second; 0 = flat out"),
    start: str = typer.Option("now", help="simulated start: now, -3h, or ISO"),
    end: str | None = typer.Option(None, help="simulated end: +2h, now, or ISO"),
    duration: float | None = typer.Option(None, min=0, help="stop after this many real seconds"),
    timezone: str | None = typer.Option(None, help="business time zone of the daily rhythm"),
    batch: int = typer.Option(500, min=1, max=1000, help="events per request"),
    dry_run: bool = typer.Option(False, help="print NDJSON ({source, event}) instead of sending"),
    warmup: bool | None = typer.Option(
        None,
        help="replay the sessions and tickets under way at --start (default: for shops "
        "under a million visits a day; above, it would take minutes, and the rate climbs to "
        "--rate over the first few minutes instead)",
    ),
) -> None:
    """Simulate a web shop, an app, a support desk, a content account and an ad platform.

    Sends through the real ingest API (batched, retried on 429/503), so it doubles as the
    load generator: `--rate 5000 --duration 60`. Ingest takes event times from 7 days ago
    to 24 hours ahead: with --speed above 1, start in the past (`--start -6h`).
    """
    import asyncio
    import sys

    import orjson
    from rich.console import Console

    from services.demo.simulator import (
        SOURCES,
        EventStream,
        Profile,
        SimConfig,
        Simulator,
        events_between,
        visits_for_rate,
    )

    settings = _settings()
    now = datetime.now(UTC)
    t_start = _time_option(start, now, "--start")
    t_end = _time_option(end, now, "--end")
    assert t_start is not None
    if speed == 0 and t_end is None:
        raise typer.BadParameter("flat out (--speed 0) needs --end", param_hint="--speed")
    incidents = _incidents(scenario, incident_at, incident_for, now)
    profile = Profile()
    config = SimConfig(
        seed=seed, profile=profile, incidents=incidents, timezone=timezone or settings.timezone
    )
    if visits_per_day is not None:
        config = SimConfig(seed, profile.scaled(visits_per_day), incidents, config.timezone)
    elif rate is not None and speed > 0:
        config = SimConfig(
            seed, profile.scaled(visits_for_rate(config, rate, speed)), incidents, config.timezone
        )
    sim = Simulator(config)
    console = Console(stderr=True)
    if dry_run:
        if t_end is None:
            raise typer.BadParameter("--dry-run needs --end", param_hint="--end")
        out = sys.stdout.buffer
        for event in events_between(sim, t_start, t_end):
            out.write(orjson.dumps({"source": event.source, "event": event.body}) + b"\n")
        return
    keys = read_keys(key, keys_file)
    if create_keys or not keys:  # no keys at all: make a set, as the demo does
        missing = [s for s in SOURCES if s not in keys]
        created = asyncio.run(_create_keys(missing))
        keys.update(created)
        for source, value in created.items():
            console.print(f"created key for {source}: {value}", highlight=False)
    missing = [s for s in SOURCES if s not in keys]
    if missing:
        raise typer.BadParameter(
            f"no API key for {', '.join(missing)}: give --key SOURCE=KEY or --create-keys",
            param_hint="--key",
        )
    console.print(
        f"simulating {config.profile.visits_per_day:,.0f} visits/day from {t_start:%Y-%m-%d %H:%M} "
        f"UTC at {speed or 'full'}x"
        + (f", incidents: {', '.join(i.scenario.value for i in incidents)}" if incidents else ""),
        highlight=False,
    )
    code = asyncio.run(
        _send(
            EventStream(
                sim,
                t_start,
                warmup=config.profile.visits_per_day < WARMUP_LIMIT if warmup is None else warmup,
            ),
            ingest_url or settings.demo_ingest_url,
            keys,
            speed=speed,
            end=t_end,
            duration=duration,
            rate=rate if speed == 0 else None,
            batch=batch,
            console=console,
        )
    )
    raise typer.Exit(code)


async def _create_keys(sources: list[str]) -> dict[str, str]:
    import asyncio
    import os

    from services.demo.processes import create_key

    values = await asyncio.gather(*(create_key(dict(os.environ), s) for s in sources))
    return dict(zip(sources, values, strict=True))


def _incidents(scenarios: list[str], at: str, length: str, now: datetime) -> tuple[Incident, ...]:
    from services.demo.simulator import Incident, Scenario
    from shared.durations import parse_duration

    chosen: list[Scenario] = []
    for name in scenarios:
        try:
            chosen.append(Scenario(name))
        except ValueError:
            options = ", ".join(s.value for s in Scenario)
            raise typer.BadParameter(
                f"{name!r}: one of {options}", param_hint="--scenario"
            ) from None
    begin = _time_option(at, now, "--incident-at")
    assert begin is not None
    try:
        span = parse_duration(length)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--incident-for") from None
    return tuple(Incident(s, begin, begin + span) for s in chosen)


async def _send(
    stream: EventStream,
    url: str,
    keys: dict[str, str],
    *,
    speed: float,
    end: datetime | None,
    duration: float | None,
    rate: float | None,
    batch: int,
    console: Console,
) -> int:
    import asyncio
    import signal
    import time

    from rich.text import Text

    from services.demo.sender import IngestAuthError, IngestSender, drive

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    async with IngestSender(url, keys, rate=rate, batch_size=batch) as sender:
        try:
            await drive(stream, sender, stop=stop, speed=speed, end=end, duration=duration)
        except IngestAuthError as exc:
            console.print(Text(str(exc), style="red"), highlight=False)
            return 1
        stats = sender.stats
    elapsed = max(1e-9, time.monotonic() - started)
    p50, p99 = stats.percentile(0.5), stats.percentile(0.99)
    console.print(
        f"sent {stats.submitted:,} events in {elapsed:.1f} s ({stats.accepted / elapsed:,.0f}/s "
        f"accepted): {stats.accepted:,} accepted, {stats.rejected:,} rejected, "
        f"{stats.failed:,} failed; {stats.requests:,} requests, {stats.retries:,} retries"
        + (f"; latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms" if p50 and p99 else ""),
        highlight=False,
    )
    return 0 if stats.failed == 0 else 2


def scorecard(
    alerts_url: str | None = typer.Option(None, help="alerts API [PACEKEEPER_DEMO_ALERTS_URL]"),
    ingest_url: str | None = typer.Option(None, help="ingest, for /metrics"),
    aggregator_url: str | None = typer.Option(None, help="aggregator health port, for /metrics"),
    token: str | None = typer.Option(
        None, envvar="PACEKEEPER_SCORECARD_TOKEN", help="API token (default: the admin token)"
    ),
    kpi: list[str] = typer.Option([], "--kpi", help="KPIs to show (default: the headline ones)"),
    window: str = typer.Option("1h", help="KPI values over this window"),
    sample: float = typer.Option(2.0, min=0, help="seconds between two scrapes, for rates"),
) -> None:
    """The scorecard once, as tables, against any running deployment."""
    import asyncio
    import sys

    from rich.console import Console

    from services.demo.api import AlertsApi
    from services.demo.scorecard import Endpoints, ScorecardCollector, Snapshot, render
    from shared.durations import parse_duration

    settings = _settings()
    endpoints = Endpoints(
        alerts_url or settings.demo_alerts_url,
        ingest_url or settings.demo_ingest_url,
        aggregator_url or settings.demo_aggregator_url,
    )

    async def once() -> Snapshot:
        api = AlertsApi(endpoints.alerts, token or settings.admin_token.get_secret_value())
        collector = ScorecardCollector(api, endpoints, kpis=kpi, window=parse_duration(window))
        try:
            if sample > 0:  # a first scrape, so counters become rates
                await collector.collect()
                await asyncio.sleep(sample)
            return await collector.collect()
        finally:
            await collector.aclose()
            await api.aclose()

    snapshot = asyncio.run(once())
    # Piped or logged output gets a readable width instead of a terminal's default 80.
    console = Console() if sys.stdout.isatty() else Console(width=150)
    console.print(render(snapshot, width=console.width))


def report(
    period: str = typer.Option(..., help="2026-Q4, 2026-11, 2026-W48, 2026, last-month, …"),
    fmt: str | None = typer.Option(
        None, "--format", help="html | md | pdf | json (default: from --output)"
    ),
    output: Path | None = typer.Option(None, help="file to write (default: review-PERIOD.FORMAT)"),
    alerts_url: str | None = typer.Option(None, help="alerts API, for the alerts of the period"),
    token: str | None = typer.Option(None, help="API token (default: the admin token)"),
    no_alerts: bool = typer.Option(False, help="leave the alerts section out"),
    charts: bool = typer.Option(True, help="draw a chart per goal"),
    title: str | None = typer.Option(None, help="title (default: Performance review — PERIOD)"),
    locale: str | None = typer.Option(
        None, help="language and formats: en | zh-CN (default: PACEKEEPER_LOCALE, else en)"
    ),
) -> None:
    """The periodic performance review: goals, KPIs vs the previous period and target,
    charts with the goal line and pacing path, and the alerts of the period."""
    import asyncio
    from zoneinfo import ZoneInfo

    from services.demo.api import AlertsApi
    from services.demo.periods import PeriodError, parse_period
    from services.demo.report import ReportFormat, build_report
    from services.demo.report_render import write_report
    from services.demo.repository import ReportRepository
    from shared.db import make_engine, make_sessionmaker
    from shared.i18n import Locale

    settings = _settings()
    try:
        language = Locale(locale) if locale is not None else settings.locale
    except ValueError:
        choices = " or ".join(member.value for member in Locale)
        raise typer.BadParameter(f"{locale!r}: {choices}", param_hint="--locale") from None
    chosen = fmt or (output.suffix.lstrip(".") if output and output.suffix else "html")
    try:
        report_format = ReportFormat(chosen)
    except ValueError:
        raise typer.BadParameter(
            f"{chosen!r}: html, md, pdf or json", param_hint="--format"
        ) from None

    async def build() -> None:
        engine = make_engine(settings, application_name="pacekeeper-report", pool_size=2)
        api = None
        if not no_alerts:
            api = AlertsApi(
                alerts_url or settings.demo_alerts_url,
                token or settings.admin_token.get_secret_value(),
            )
        try:
            repo = ReportRepository(make_sessionmaker(engine))
            zone = ZoneInfo(await repo.timezone() or settings.timezone)
            try:
                chosen_period = parse_period(period, datetime.now(zone).date())
            except PeriodError as exc:
                raise typer.BadParameter(str(exc), param_hint="--period") from None
            data = await build_report(
                repo, chosen_period, alerts_api=api, charts=charts, title=title, locale=language
            )
            target = output or Path(f"review-{chosen_period.label}.{report_format.value}")
            write_report(data, report_format, target)
            typer.echo(f"wrote {target} ({len(data.goals)} goal rows, {len(data.kpis)} KPIs)")
        finally:
            if api is not None:
                await api.aclose()
            await engine.dispose()

    asyncio.run(build())


def demo(
    duration: float | None = typer.Option(
        None, min=0, help="seconds; 0 = until Ctrl-C [PACEKEEPER_DEMO_DURATION]"
    ),
    scenario: str | None = typer.Option(
        None,
        help="checkout-collapse (default), traffic-drop, csat-slide, support-backlog or none",
    ),
    seed: int | None = typer.Option(None, help="simulator seed"),
) -> None:
    """The main job: the real stack, simulated products, a live scorecard and alerts."""
    from services.demo.orchestrator import run_demo
    from services.demo.simulator import Scenario

    settings = _settings()
    updates: dict[str, object] = {}
    if duration is not None:
        updates["demo_duration"] = duration
    if seed is not None:
        updates["demo_seed"] = seed
    if scenario is not None:
        try:
            updates["demo_scenario"] = None if scenario == "none" else Scenario(scenario)
        except ValueError:
            raise typer.BadParameter(scenario, param_hint="--scenario") from None
    raise typer.Exit(run_demo(settings.model_copy(update=updates)))


def register(app: typer.Typer) -> None:
    """Add the demo's commands to the `pacekeeper` CLI."""
    app.command()(simulate)
    app.command()(scorecard)
    app.command()(report)
    app.command()(demo)
