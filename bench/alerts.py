"""Alerts benchmark: 10,000 rules over 20 KPIs with group_by.

    .venv/bin/python bench/alerts.py            # needs the local Kafka + PostgreSQL

1. Tick: one full evaluation (every rule x every group, read as the evaluator reads,
   services/alerts/reads.py, then the dispatch pass) timed in-process against a freshly
   migrated schema of its own.
2. Breach-to-notification: the real service as a subprocess (kpi-updates on Kafka,
   webhook to a local receiver). Each trial commits a breaching KPI minute, publishes the
   kpi-update the aggregator would publish after that commit, and times the webhook's
   arrival from the commit.

3. With `--anomaly`: the tick alone with `--anomaly-rules` (1,000) anomaly rules, each on
   its own KPI and window (20 KPIs x 50 window lengths) and grouped by source, so every
   rule x group reads its own window and its own 8 past weeks: 45,000 window values a
   tick, none shared. Seeds the same minutes 1..8 weeks back and refreshes the aggregates
   over them, as history would be. Then the same ticks again with every value from its own
   `kpi_value` call, and prints the ratio. Adds `anomaly_tick` to
   bench/results/alerts.json.

    flock /tmp/pacekeeper-bench.lock .venv/bin/python bench/alerts.py --anomaly

Writes bench/results/alerts.json. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from common import drop_schemas

from services.alerts.evaluator import Evaluator
from services.alerts.reads import KpiReads
from shared.config import PacekeeperConfig
from shared.config.store import apply_config
from shared.db import make_engine, make_sessionmaker, transaction
from shared.kafka import ensure_topics, make_producer
from shared.kpi_updates import encode_update
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import database_status, rematerialize

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "alerts.json"
KPIS = 20
SOURCES = ["web-shop", "app", "crm", "support", "ads"]
WINDOWS = ["5m", "15m", "1h"]
NORMAL_PER_MINUTE = 10  # every KPI, every source: far under every ordinary threshold
BREACH = 1000  # a trial's minute: over the latency rules' threshold (500)


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def config(receiver_url: str, rules: int) -> PacekeeperConfig:
    kpis = [
        {
            "name": f"kpi_{k:02d}",
            "kind": "count",
            "event": f"event_{k:02d}",
            "dimensions": ["source"],
        }
        for k in range(KPIS)
    ]
    specs: list[dict[str, Any]] = [
        # One latency rule per KPI; the rest never fire on the benchmark's data.
        {
            "name": f"latency-{k:02d}",
            "kpi": f"kpi_{k:02d}",
            "window": "5m",
            "op": ">",
            "value": 500,
            "group_by": ["source"],
            "channels": ["bench"],
        }
        for k in range(KPIS)
    ]
    for i in range(rules - len(specs)):
        specs.append(
            {
                "name": f"rule-{i:05d}",
                "kpi": f"kpi_{i % KPIS:02d}",
                "window": WINDOWS[i % len(WINDOWS)],
                "op": ">",
                "value": 100_000 + i,
                "group_by": ["source"],
                "labels": {"team": f"team-{i % 7}"},
                "channels": ["bench"],
            }
        )
    channel = {
        "name": "bench",
        "type": "webhook",
        "url": receiver_url,
        "group_wait": "0s",
        "group_interval": "1s",
        "repeat_interval": "4h",
    }
    return PacekeeperConfig.model_validate({"kpis": kpis, "rules": specs, "channels": [channel]})


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[float, dict[str, Any]]]]]:
    got: list[tuple[float, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append((time.time(), orjson.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def anomaly_config(receiver_url: str, rules: int) -> PacekeeperConfig:
    base = config(receiver_url, KPIS)  # the KPIs and the channel
    specs = [
        {
            "name": f"anomaly-{i:05d}",
            "kind": "anomaly",
            "kpi": f"kpi_{i % KPIS:02d}",
            "window": f"{10 + (i // KPIS) % 50}m",
            "anomaly": {"direction": "both", "k": 3, "weeks": 8},
            "group_by": ["source"],
            "channels": ["bench"],
        }
        for i in range(rules)
    ]
    return PacekeeperConfig.model_validate(
        {
            "kpis": [k.model_dump(by_alias=True) for k in base.kpis],
            "rules": specs,
            "channels": [
                c.model_dump(by_alias=True, context={"reveal": True}) for c in base.channels
            ],
        }
    )


def seed_points(
    conn: psycopg.Connection[Any], now: datetime, weeks: int = 0, ahead: int = 0
) -> None:
    """The last 70 minutes of every KPI and source (an hour window has data throughout),
    `ahead` minutes more (the minutes later ticks reach: a window running out of data would
    look like an outage and fire), and the same minutes 1..`weeks` weeks earlier."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=70)
    rows = [
        (
            f"kpi_{k:02d}",
            orjson.dumps({"source": s}).decode(),
            start + timedelta(minutes=m) - timedelta(weeks=w),
            NORMAL_PER_MINUTE,
            NORMAL_PER_MINUTE,
        )
        for w in range(weeks + 1)
        for k in range(KPIS)
        for s in SOURCES
        for m in range(71 + ahead)
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO kpi_points (kpi, dims, bucket, count, sum) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            rows,
        )


async def measure_ticks(
    settings: BaseServiceSettings,
    ticks: int,
    *,
    interval: float = 0.0,
    watermark: psycopg.Connection[Any] | None = None,
    minute_sums: bool = True,
) -> dict[str, Any]:
    """`ticks` cycles, started `interval` seconds apart (0: back to back). With a
    `watermark` connection, the aggregator's watermark is set to the tick's start first,
    as a running aggregator keeps it (final windows need one)."""
    engine = make_engine(settings, application_name="bench-alerts", pool_size=1)
    sessions = make_sessionmaker(engine)
    evaluator = Evaluator(
        default_timezone="UTC", external_url="http://bench", events_topic=settings.events_topic
    )
    evaluator.reads = KpiReads(minute_sums=minute_sums)
    durations, instances, cached, active = [], 0, [], []
    try:
        async with transaction(sessions) as session:
            await evaluator.load(session, datetime.now(UTC))
        for n in range(ticks):
            started = time.perf_counter()
            now = datetime.now(UTC)
            if watermark is not None:
                watermark.execute(
                    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset,"
                    " watermark) VALUES ('bench', %s, 0, 1, %s) ON CONFLICT (group_id, topic,"
                    " partition) DO UPDATE SET watermark = EXCLUDED.watermark",
                    (settings.events_topic, now),
                )
            hits = evaluator.reads.final_values.hits
            async with transaction(sessions) as session:
                result = await evaluator.cycle(session, now)
            evaluator.apply(result)
            durations.append(time.perf_counter() - started)
            cached.append(evaluator.reads.final_values.hits - hits)
            active.append(sum(a.state.is_active for a in evaluator.alerts.values()))
            instances = result.instances
            if interval and n + 1 < ticks:
                await asyncio.sleep(max(0.0, started + interval - time.perf_counter()))
    finally:
        await engine.dispose()
    ordered = sorted(durations)
    out: dict[str, Any] = {
        "ticks": ticks,
        "rule_instances_per_tick": instances,
        "seconds_p50": round(statistics.median(ordered), 3),
        "seconds_max": round(ordered[-1], 3),
        "seconds_first": round(durations[0], 3),
    }
    if watermark is not None and ticks > 1:
        steady = sorted(durations[1:])
        out.update(
            interval_seconds=interval,
            seconds_each=[round(d, 3) for d in durations],
            cached_reads_each=cached,
            active_alerts_each=active,
            steady_seconds_p50=round(statistics.median(steady), 3),
            steady_seconds_max=round(steady[-1], 3),
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def measure_latency(
    settings: BaseServiceSettings,
    env: dict[str, str],
    conn: psycopg.Connection[Any],
    got: list[tuple[float, dict[str, Any]]],
    trials: int,
    log: Path,
) -> dict[str, Any]:
    await ensure_topics(settings, {settings.kpi_updates_topic: 1})
    port = free_port()
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.alerts.main",
            cwd=ROOT,
            env={**os.environ, **env, "PACEKEEPER_ALERTS_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    http = httpx.AsyncClient(timeout=1)
    producer = make_producer(settings, client_id="bench-aggregator")
    await producer.start()
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 120
        while True:  # leading, with its first full tick done
            try:
                health = await http.get(f"http://127.0.0.1:{port}/healthz")
                if health.json()["leader"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.returncode is not None:
                raise SystemExit(f"the alerts service did not start; see {log}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(8)  # first tick and consumer assignment
        for trial in range(trials):
            kpi = f"kpi_{trial % KPIS:02d}"
            before = len(got)
            bucket = datetime.now(UTC).replace(second=0, microsecond=0)
            conn.execute(
                "INSERT INTO kpi_points (kpi, dims, bucket, count, sum) VALUES (%s, %s, %s, %s,"
                " %s)",
                (kpi, orjson.dumps({"source": f"trial-{trial}"}).decode(), bucket, BREACH, BREACH),
            )
            committed = time.time()  # autocommit: the row is visible from here on
            update = encode_update(kpi, bucket, bucket + timedelta(minutes=1))
            await producer.send_and_wait(settings.kpi_updates_topic, update)
            while len(got) == before:
                if time.time() - committed > 30:
                    raise SystemExit(f"trial {trial}: no notification in 30 s; see {log}")
                await asyncio.sleep(0.01)
            latencies.append(got[before][0] - committed)
            await asyncio.sleep(0.5)
    finally:
        await producer.stop()
        await http.aclose()
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
    ordered = sorted(latencies)
    return {
        "trials": trials,
        "seconds_p50": round(statistics.median(ordered), 3),
        "seconds_p95": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 3),
        "seconds_max": round(ordered[-1], 3),
    }


async def run_anomaly(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_alerts_{uuid.uuid4().hex[:8]}"
    base = BaseServiceSettings()
    settings = base.model_copy(
        update={"database_schema": schema, "events_topic": f"{schema}.events.v1"}
    )
    upgrade(settings)
    url = base.database_url.get_secret_value()
    conn = psycopg.connect(libpq(url), autocommit=True, options=f"-c search_path={schema},public")
    try:
        engine = make_engine(settings, application_name="bench-alerts-setup", pool_size=1)
        async with transaction(make_sessionmaker(engine)) as session:
            await apply_config(
                session, anomaly_config("http://127.0.0.1:9/hook", args.anomaly_rules)
            )
        now = datetime.now(UTC)
        # The ticks, setup and a margin: every window keeps its data while measured.
        ahead = math.ceil(args.ticks * args.interval / 60) + 10
        seed_points(conn, now, weeks=8, ahead=ahead)
        await rematerialize(engine, now - timedelta(weeks=9), now)
        await engine.dispose()
        print(f"stored {args.anomaly_rules} anomaly rules; measuring ticks", flush=True)
        tick = await measure_ticks(settings, args.ticks, interval=args.interval, watermark=conn)
        print(f"anomaly tick: {tick}", flush=True)
        # The same ticks over the same data, every value from its own kpi_value call.
        per_call = await measure_ticks(
            settings, args.ticks, interval=args.interval, watermark=conn, minute_sums=False
        )
        print(f"anomaly tick, one kpi_value call per window: {per_call}", flush=True)
    finally:
        conn.close()
        drop_schemas(settings, schema)
    return {
        "rules": args.anomaly_rules,
        "groups_per_rule": len(SOURCES),
        "weeks": 8,
        "window_values_per_tick": args.anomaly_rules * len(SOURCES) * 9,
        "tick": tick,
        "tick_one_kpi_value_call_per_window": per_call,
        "steady_p50_ratio_per_call_over_minute_sums": round(
            per_call["steady_seconds_p50"] / tick["steady_seconds_p50"], 1
        ),
        "met": tick.get("steady_seconds_p50", tick["seconds_p50"]) < 2.0,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "flock /tmp/pacekeeper-bench.lock .venv/bin/python bench/alerts.py"
        f" --anomaly --ticks {args.ticks} --interval {args.interval:g}",
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_alerts_{uuid.uuid4().hex[:8]}"
    base = BaseServiceSettings()
    settings = base.model_copy(
        update={
            "database_schema": schema,
            "kpi_updates_topic": f"{schema}.kpi-updates.v1",
            "events_topic": f"{schema}.events.v1",
        }
    )
    url = base.database_url.get_secret_value()
    upgrade(settings)
    layout = database_status(settings).summary()
    print(f"database: {layout}", flush=True)
    conn = psycopg.connect(libpq(url), autocommit=True, options=f"-c search_path={schema},public")
    try:
        with receiver() as (hook, got):
            engine = make_engine(settings, application_name="bench-alerts-setup", pool_size=1)
            started = time.perf_counter()
            async with transaction(make_sessionmaker(engine)) as session:
                await apply_config(session, config(hook, args.rules))
            await engine.dispose()
            setup = time.perf_counter() - started
            seed_points(conn, datetime.now(UTC))
            print(f"stored {args.rules} rules in {setup:.1f}s; measuring ticks", flush=True)
            tick = await measure_ticks(settings, args.ticks)
            print(f"tick: {tick}", flush=True)
            got.clear()
            env = {
                "PACEKEEPER_DATABASE_SCHEMA": schema,
                "PACEKEEPER_KPI_UPDATES_TOPIC": settings.kpi_updates_topic,
                "PACEKEEPER_EVENTS_TOPIC": settings.events_topic,
                "PACEKEEPER_LOG_LEVEL": "WARNING",
                "PACEKEEPER_ALERTS_ALLOW_PRIVATE_TARGETS": "true",  # the receiver is local
            }
            latency = await measure_latency(
                settings, env, conn, got, args.trials, ROOT / "bench" / "results" / "alerts.log.tmp"
            )
            print(f"latency: {latency}", flush=True)
    finally:
        conn.close()
        drop_schemas(settings, schema)
    return {
        "benchmark": "alerts",
        "database": layout,
        "command": "make bench  (or: .venv/bin/python bench/alerts.py)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rules": args.rules,
        "kpis": KPIS,
        "groups_per_rule": len(SOURCES),
        "tick": tick,
        "breach_to_notification": latency,
        "targets": {"tick_seconds": 2.0, "latency_p95_seconds": 5.0},
        "met": {
            "tick": tick["seconds_p50"] < 2.0,
            "latency": latency["seconds_p95"] < 5.0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--anomaly", action="store_true", help="only the anomaly rules' tick")
    parser.add_argument("--anomaly-rules", type=int, default=1000)
    parser.add_argument(
        "--interval", type=float, default=30.0, help="seconds between anomaly tick starts"
    )
    args = parser.parse_args()
    # Each part replaces its own figures and keeps the other's.
    previous = orjson.loads(RESULTS.read_bytes()) if RESULTS.exists() else {}
    if args.anomaly:
        result = {**previous, "anomaly_tick": asyncio.run(run_anomaly(args))}
    else:
        kept = {"anomaly_tick": previous["anomaly_tick"]} if "anomaly_tick" in previous else {}
        result = {**asyncio.run(run(args)), **kept}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
