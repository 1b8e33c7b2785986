"""`make demo`: the whole product on one machine, fed by simulated products, in one terminal.

Steps, in order: a fresh schema and topics for this run; migrate; start the webhook receiver;
apply the example config (its webhook channel points at the receiver, signed with a fresh
secret); start ingest and aggregator as `pacekeeper run …` processes and create an API key
per simulated source, while eight weeks and more of history (a past incident, and the live
incident already under way) are written by the aggregator's own batch writer
(services.demo.history); send the traffic since the demo began through ingest and wait until
it is aggregated; start the alerts service; keep live traffic flowing and redraw the
scorecard until Ctrl-C or `PACEKEEPER_DEMO_DURATION` seconds. History and live traffic come
from one simulated shop, so every comparison with an earlier day, week or month is like for
like. Everything it started, it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from services.demo.api import AlertsApi, metric_sum, scrape
from services.demo.history import Loaded, load_history
from services.demo.history import Progress as HistoryProgress
from services.demo.isolation import isolate
from services.demo.processes import (
    DemoError,
    ServiceProcess,
    child_env,
    create_keys,
    revoke_keys,
    wait_ready,
)
from services.demo.receiver import Delivery, WebhookReceiver
from services.demo.scorecard import Endpoints, ScorecardCollector, render
from services.demo.sender import IngestSender, drive
from services.demo.settings import DemoSettings
from services.demo.shop import demo_shop, history_start
from services.demo.simulator import (
    SOURCES,
    EventStream,
    Simulator,
)
from services.demo.stories import REDEFINED_KPI, RESTATED_GOAL, first_definitions, late_orders
from shared.config import PacekeeperConfig, load_config_text
from shared.config.store import apply_config
from shared.db import make_engine, make_sessionmaker, transaction
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import database_status


async def apply_example(settings: BaseServiceSettings, config: PacekeeperConfig) -> None:
    """Store the demo's config in one transaction (what `pacekeeper apply` stores)."""
    engine = make_engine(settings, application_name="pacekeeper-demo", pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await apply_config(session, config)
    finally:
        await engine.dispose()


class Demo:
    def __init__(self, settings: DemoSettings, console: Console) -> None:
        self.settings = settings
        self.console = console
        self.stop = asyncio.Event()
        self.log: deque[str] = deque(maxlen=6)
        self.services: dict[str, ServiceProcess] = {}
        self.keys: dict[str, str] = {}
        self.read_token = ""
        self.receiver: WebhookReceiver | None = None
        self.started = time.monotonic()  # PACEKEEPER_DEMO_DURATION counts from here

    def _on_delivery(self, delivery: Delivery) -> None:
        line = delivery.line()
        self.log.append(line)
        self.console.print(Text.assemble(("receiver ", "bold magenta"), line))

    def _say(self, message: str) -> None:
        stamp = f"{datetime.now(UTC).astimezone():%H:%M:%S} "
        self.console.print(Text.assemble(("demo ", "bold blue"), stamp, message))

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop.set)
        if self.settings.demo_duration > 0:
            loop.call_later(self.settings.demo_duration, self.stop.set)
        try:
            await self._run()
            return 0
        except DemoError as exc:
            self.console.print(Text.assemble(("demo failed: ", "bold red"), str(exc)))
            return 1
        finally:
            await self._shutdown()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _run(self) -> None:
        self.settings, isolated = await isolate(self.settings)
        s = self.settings
        env = child_env(s, {**os.environ, **isolated})
        # The web scorecard's read-only login, printed with its address once alerts is up.
        read = s.demo_read_token.get_secret_value() if s.demo_read_token else None
        env.setdefault("PACEKEEPER_ALERTS_READ_TOKEN", read or secrets.token_urlsafe(16))
        self.read_token = env["PACEKEEPER_ALERTS_READ_TOKEN"]
        where = f"schema {s.database_schema}" if s.database_schema else "the default schema"
        self._say(f"migrating {where}; events on topic {s.events_topic}")
        await asyncio.to_thread(upgrade, s)
        self._say(f"database: {(await asyncio.to_thread(database_status, s)).summary()}")

        secret = s.demo_webhook_secret.get_secret_value() if s.demo_webhook_secret else None
        secret = secret or secrets.token_urlsafe(24)
        self.receiver = WebhookReceiver(
            secret,
            host=s.demo_webhook_host,
            port=s.demo_webhook_port,
            on_delivery=self._on_delivery,
        )
        try:
            await self.receiver.start()
        except RuntimeError as exc:
            raise DemoError(f"{exc}: set PACEKEEPER_DEMO_WEBHOOK_PORT to a free port") from exc
        self._say(f"webhook receiver listening on {self.receiver.url}")

        config_env = {
            **os.environ,
            "PACEKEEPER_DEMO_WEBHOOK_SECRET": secret,
            "PACEKEEPER_DEMO_WEBHOOK_URL": self.receiver.url,
        }
        config = load_config_text(s.demo_config.read_text(encoding="utf-8"), env=config_env)
        await apply_example(s, first_definitions(config))
        self._say(
            f"applied {s.demo_config.name}: {len(config.kpis)} KPIs, {len(config.goals)} goals, "
            f"{len(config.rules)} rules, {len(config.channels)} channels "
            f"({REDEFINED_KPI} as first defined: any page view by a signed-in user)"
        )

        now = datetime.now(UTC)
        sim = demo_shop(s, config.timezone or s.timezone, now)
        start = history_start(s, now, sim.zone)
        incidents = ", ".join(
            f"{i.scenario.value} from {i.start.astimezone(sim.zone):%a %d %b %H:%M}"
            for i in sim.config.incidents
        )
        self._say(
            f"simulating a shop of {sim.visits_per_day(now):,.0f} visits a day today "
            f"({s.demo_growth_per_week:+.0%} a week, seed {s.demo_seed}) from "
            f"{start.astimezone(sim.zone):%a %d %b %Y} ({(now - start).days} days of history); "
            f"incidents: {incidents or 'none'}"
        )
        # The history is written while ingest and aggregator start and the keys are made
        # (each a CLI run of a few seconds); the alerts service starts only once it is in
        # place, so goals start from real numbers instead of "no data".
        history = asyncio.create_task(self._load_history(sim, start, now), name="history")
        try:
            self.keys = await create_keys(s, SOURCES)
            self._say(f"created an API key for each source: {', '.join(SOURCES)}")
            await self._start_services(("ingest", "aggregator"), env)
            await history
            if not self.stop.is_set():
                await apply_example(s, config)
                self._say(
                    f"{REDEFINED_KPI} redefined (a signed-in session, not just a page view): "
                    "version 2 recomputes the history in the background and switches over "
                    f"when done; `pacekeeper kpis history {REDEFINED_KPI}` shows both"
                )
        finally:
            if not history.done():
                self.stop.set()
                with contextlib.suppress(BaseException):
                    await history
        if not self.stop.is_set():
            await self._simulate_and_show(sim, now, env)

    async def _start_services(self, names: tuple[str, ...], env: Mapping[str, str]) -> None:
        s = self.settings
        health = {
            "ingest": f"{s.demo_ingest_url}/readyz",
            "aggregator": f"{s.demo_aggregator_url}/healthz",
            "alerts": f"{s.demo_alerts_url}/healthz",
        }
        for name in names:
            service = ServiceProcess(name, env, s.demo_log_dir / f"{name}.log")
            self.services[name] = service
            await service.start()
        await wait_ready(self.services, {n: health[n] for n in names}, s.demo_start_timeout)
        self._say(f"{', '.join(names)} up (logs in {s.demo_log_dir})")

    async def _load_history(self, sim: Simulator, start: datetime, end: datetime) -> None:
        """Write [start, end) of the shop through the aggregator's batch writer, with a
        progress bar on a terminal and a line every 5 s in logs."""
        bar: Progress | None = None
        task = None
        last_said = 0.0

        last = HistoryProgress(start, end, start)

        def show(progress: HistoryProgress) -> None:
            nonlocal last_said, last
            last = progress
            until = progress.position.astimezone(sim.zone)
            what = (
                "refreshing the hourly and daily aggregates"
                if progress.phase != "events"
                else (f"{progress.written:,} events, up to {until:%a %d %b %H:%M}")
            )
            if bar is not None and task is not None:
                bar.update(task, completed=progress.share, what=what)
            elif time.monotonic() - last_said >= 5 or progress.phase != "events":
                self._say(f"loading history: {progress.share:.0%}, {what}")
                last_said = time.monotonic()

        if self.console.is_terminal:
            bar = Progress(
                TextColumn("[bold blue]history[/]"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[what]}"),
                console=self.console,
                transient=True,
            )
            task = bar.add_task("history", total=1.0, what="")
        with bar or contextlib.nullcontext():
            loaded: Loaded = await load_history(
                self.settings, sim, start, end, on_progress=show, stop=self.stop
            )
        if self.stop.is_set():
            took = time.monotonic() - self.started
            self._say(
                f"stopped {took:.0f} s in, with the history loaded up to "
                f"{last.position.astimezone(sim.zone):%a %d %b %H:%M} ({loaded.events:,} "
                "events): the live part never began. This machine is slower than the demo "
                "assumes (busy?); give it a longer PACEKEEPER_DEMO_DURATION."
            )
            return
        rate = loaded.events / loaded.seconds if loaded.seconds else 0.0
        self._say(
            f"history in place: {loaded.events:,} events over {(end - start).days} days, "
            f"written in {loaded.seconds:.1f} s ({rate:,.0f} events/s) by the aggregator's "
            f"batch writer, aggregates refreshed in {loaded.aggregates_seconds:.1f} s"
        )

    async def _catch_up(
        self, stream: EventStream, sender: IngestSender, feeding: asyncio.Task[None]
    ) -> None:
        """Wait until the traffic since the demo began is sent through ingest and aggregated
        (consumer lag 0)."""
        s = self.settings
        deadline = time.monotonic() + s.demo_start_timeout
        last_said = 0.0
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not self.stop.is_set():
                if feeding.done():
                    feeding.result()
                    return
                samples = await scrape(client, f"{s.demo_aggregator_url}/metrics")
                lag = metric_sum(samples, "pacekeeper_aggregator_consumer_lag") if samples else None
                now = datetime.now(UTC)
                sent = stream.position >= now - timedelta(seconds=2) and sender.backlog == 0
                # Nothing sent yet (a small shop can be quiet for a minute): nothing to wait
                # for, and the aggregator has no lag to report before its first event.
                if sent and (lag == 0 or sender.stats.accepted == 0):
                    self._say(
                        f"live: {sender.stats.accepted:,} events since the demo began sent "
                        "through ingest and aggregated"
                    )
                    return
                if time.monotonic() - last_said >= 5:
                    self._say(
                        f"catching up through ingest: {sender.stats.accepted:,} events sent, "
                        f"aggregator lag {'?' if lag is None else f'{lag:,.0f}'}"
                    )
                    last_said = time.monotonic()
                if time.monotonic() > deadline:
                    raise DemoError("the live traffic did not catch up; see the service logs")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 1.0)

    async def _send_late_orders(self, sender: IngestSender, zone: ZoneInfo) -> None:
        """Once the alerts service has recorded yesterday as reported (a few ticks), send
        orders of yesterday that were settled late: the day is restated, once."""
        s = self.settings
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), 3 * s.demo_alerts_tick_seconds)
            return
        yesterday = datetime.now(zone).date() - timedelta(days=1)
        orders = late_orders(yesterday, zone, 8, tag=f"{s.demo_seed}-{self.started:.0f}")
        await sender.submit(orders)
        await sender.push()
        self._say(
            f"sent {len(orders)} late orders for {yesterday:%a %d %b} (settled late by the "
            f"payment provider): the {RESTATED_GOAL} goal's closed day is restated"
        )

    def _say_scorecard_login(self) -> None:
        s = self.settings
        admin = s.admin_token.get_secret_value()
        local = admin == BaseServiceSettings.model_fields["admin_token"].default.get_secret_value()
        self._say(
            f"web scorecard: open {s.demo_alerts_url}/ and log in with the read token "
            f"{self.read_token}"
            + (
                f" (or the admin token {admin} to acknowledge and silence alerts)"
                if local
                else " (or PACEKEEPER_ADMIN_TOKEN to acknowledge and silence alerts)"
            )
        )

    async def _simulate_and_show(
        self, sim: Simulator, began: datetime, env: Mapping[str, str]
    ) -> None:
        s = self.settings
        # The live traffic starts where the history ends: every event is in one or the other.
        stream = EventStream(sim, began)
        api = AlertsApi(s.demo_alerts_url, s.admin_token.get_secret_value())
        endpoints = Endpoints(s.demo_alerts_url, s.demo_ingest_url, s.demo_aggregator_url)
        collector = ScorecardCollector(api, endpoints)
        late: asyncio.Task[None] | None = None
        async with IngestSender(s.demo_ingest_url, self.keys) as sender:
            feeding = asyncio.create_task(
                # On the wall clock: the stream catches up the minute or so the history
                # took flat out, then keeps pace.
                drive(stream, sender, stop=self.stop, speed=1.0, clock_origin=datetime.now(UTC)),
                name="simulator",
            )
            try:
                await self._catch_up(stream, sender, feeding)
                if not self.stop.is_set():
                    await self._start_services(("alerts",), env)
                    self._say_scorecard_login()
                    late = asyncio.create_task(self._send_late_orders(sender, sim.zone))
                    await self._show(collector, sender, feeding)
            finally:
                self.stop.set()
                if late is not None:
                    late.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await late
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(feeding, 20)
                await collector.aclose()
                await api.aclose()
            stats = sender.stats
            self._say(
                f"sent {stats.submitted:,} events: {stats.accepted:,} accepted, "
                f"{stats.rejected:,} rejected, {stats.failed:,} failed, {stats.retries:,} retries"
            )
        deliveries = self.receiver.deliveries if self.receiver else []
        verified = sum(1 for d in deliveries if d.verified)
        self._say(f"the webhook receiver got {len(deliveries)} deliveries ({verified} verified)")
        if s.database_schema:
            until = " until the next demo" if s.database_schema == s.demo_schema else ""
            self._say(
                f"the data stays in schema {s.database_schema}{until}; review it with: "
                f"PACEKEEPER_DATABASE_SCHEMA={s.database_schema} pacekeeper report "
                "--period this-month --output review.html (or --period last-week)"
            )

    def _sender_column(self, sender: IngestSender) -> dict[str, str]:
        # A small shop sends an event every few seconds: the latest one shows it is live.
        last = sender.stats.last
        ago = max(0.0, (datetime.now(UTC) - last.time).total_seconds()) if last else None
        return {
            "simulator sent": f"{sender.stats.accepted:,}",
            "backlog": f"{sender.backlog:,}",
            "latest event": f"{last.type} ({last.source}) {ago:.0f} s ago" if last else "—",
        }

    async def _show(
        self,
        collector: ScorecardCollector,
        sender: IngestSender,
        feeding: asyncio.Task[None],
    ) -> None:
        s = self.settings
        deadline = self.started + s.demo_duration if s.demo_duration > 0 else None
        terminal = self.console.is_terminal
        last_print = 0.0
        live = (
            Live(console=self.console, refresh_per_second=4, transient=False) if terminal else None
        )
        with live or contextlib.nullcontext():
            while not self.stop.is_set():
                if feeding.done():
                    feeding.result()  # surface a crash of the simulator
                    break
                for name, service in self.services.items():
                    if service.exited:
                        raise DemoError(f"{name} stopped unexpectedly:\n{service.tail()}")
                snapshot = await collector.collect()
                view = render(
                    snapshot,
                    extra=self._sender_column(sender),
                    log=list(self.log),
                    width=self.console.width,
                )
                now = time.monotonic()
                if live is not None:
                    live.update(view)
                elif now - last_print >= s.demo_print_every_seconds:
                    self.console.print(view)
                    last_print = now
                if deadline is not None and now >= deadline:
                    break
                wait = s.demo_refresh_seconds
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait)
            if live is None:  # the final state, for the log
                self.console.print(
                    render(
                        await collector.collect(),
                        extra=self._sender_column(sender),
                        log=list(self.log),
                        width=self.console.width,
                    )
                )

    async def _shutdown(self) -> None:
        self.stop.set()
        if self.services:
            self._say("stopping the services")
        # Alerts first, so nothing pages about a half-stopped stack; then the other two.
        if "alerts" in self.services:
            await self.services["alerts"].stop()
        await asyncio.gather(*(p.stop() for n, p in self.services.items() if n != "alerts"))
        if self.keys:
            try:
                await revoke_keys(self.settings, list(self.keys.values()))
            except (OSError, SQLAlchemyError) as exc:
                self._say(f"could not revoke the demo's API keys: {exc}")
        if self.receiver is not None:
            await self.receiver.stop()
        self._say("stopped")


def run_demo(settings: DemoSettings, console: Console | None = None) -> int:
    """Run the demo to its end; the process exit code."""
    if console is None:
        # Logs and CI get wide, plain text; a terminal gets the live view.
        console = Console() if sys.stdout.isatty() else Console(width=150, force_terminal=False)
    return asyncio.run(Demo(settings, console).run())
