"""Soak: the whole pipeline for a long stretch at a steady share of its capacity.

`pacekeeper run ingest`, `run aggregator` and `run alerts`, as the README runs them, on a
throw-away schema and topics of the local broker and database. First a capacity probe: one
minute of batches as fast as ingest takes them, capacity being what the aggregator committed
per second over its last 40 s. Then `--minutes` at `--share` of that rate, paced every
100 ms in batches of 100. Every 10 s: ingest's p99 request time (client side), the consumer
lag (the topic's end offsets minus the offsets the aggregator committed in the database) and
each service's resident memory (ingest's supervisor and workers summed). At the end the
count KPI must equal every acknowledged event, exactly.

Writes bench/results/soak.json and soak.png (lag, memory and p99 over time; --name changes
the name), with the PACEKEEPER_* settings it ran with.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aggregator import BOOTSTRAP, DATABASE_URL, percentile
from aiokafka import AIOKafkaConsumer, TopicPartition
from common import drop_schemas, load_average, machine, write_result
from ingest import HttpClient, create_bench_key, wait_ready
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from scale_out import children, free_port, prepare_schema

from shared.settings import BaseServiceSettings

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
PACEKEEPER = Path(sys.executable).with_name("pacekeeper")
PARTITIONS = 6
BATCH = 100
SAMPLE_SECONDS = 10.0
KPIS: list[dict[str, Any]] = [
    {"name": "orders", "kind": "count", "event": "order_completed"},
    {"name": "revenue", "kind": "sum", "event": "order_completed", "field": "properties.revenue"},
    {"name": "buyers", "kind": "count_distinct", "event": "order_completed", "field": "user_id"},
    {
        "name": "orders_by_channel",
        "kind": "count",
        "event": "order_completed",
        "dimensions": ["properties.channel"],
    },
]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (ingest's workers), in MB."""
    total = 0
    for p in [pid, *children(pid)]:
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return round(total / 1e6, 1)


class Pipeline:
    """The three services as processes on one schema and one set of topics."""

    def __init__(self, schema: str, logs: Path) -> None:
        self.topic = f"{schema}.events"
        self.ingest_port = free_port()
        self.env = {
            **os.environ,
            "PACEKEEPER_DATABASE_URL": DATABASE_URL,
            "PACEKEEPER_DATABASE_SCHEMA": schema,
            "PACEKEEPER_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "PACEKEEPER_EVENTS_TOPIC": self.topic,
            "PACEKEEPER_DLQ_TOPIC": f"{schema}.dlq",
            "PACEKEEPER_KPI_UPDATES_TOPIC": f"{schema}.updates",
            "PACEKEEPER_INGEST_PORT": str(self.ingest_port),
            "PACEKEEPER_INGEST_TOPIC_PARTITIONS": str(PARTITIONS),
            "PACEKEEPER_INGEST_RATE_PER_SECOND": "10000000",
            "PACEKEEPER_INGEST_RATE_BURST": "10000000",
            "PACEKEEPER_AGGREGATOR_TOPIC_PARTITIONS": str(PARTITIONS),
            "PACEKEEPER_AGGREGATOR_GROUP_ID": f"{schema}-aggregator",
            "PACEKEEPER_AGGREGATOR_HEALTH_PORT": str(free_port()),
            "PACEKEEPER_ALERTS_PORT": str(free_port()),
            "PACEKEEPER_LOG_LEVEL": "WARNING",
        }
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, service: str) -> None:
        with (self.logs / f"{service}.log").open("wb") as out:
            self.procs[service] = subprocess.Popen(
                [str(PACEKEEPER), "run", service],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def memory(self) -> dict[str, float]:
        return {name: rss_mb(proc.pid) for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


class Sender:
    """Keep-alive connections posting batches; every request's status and duration."""

    def __init__(self, client: HttpClient, connections: int) -> None:
        self.client = client
        self.connections = connections
        self.acknowledged = 0
        self.refused = 0  # answered with anything but 202
        self.behind = 0  # batches not sent: the sender could not keep the pace
        self.durations: list[tuple[float, float]] = []  # (finished at, seconds)
        self._sequence = 0

    def _body(self) -> bytes:
        now = datetime.now(UTC).isoformat()
        self._sequence += 1
        events = [
            {
                "id": f"s{self._sequence}-{i}",
                "type": "order_completed",
                "time": now,
                "user_id": f"u-{(self._sequence * BATCH + i) % 20_000}",
                "properties": {"revenue": 10 + i % 90, "channel": ("seo", "ads", "mail")[i % 3]},
            }
            for i in range(BATCH)
        ]
        return self.client.request(orjson.dumps(events))

    async def _post(self, queue: asyncio.Queue[bytes | None]) -> None:
        reader, writer = await self.client.connect()
        try:
            while (request := await queue.get()) is not None:
                started = time.perf_counter()
                status = await self.client.roundtrip(reader, writer, request)
                finished = time.perf_counter()
                self.durations.append((finished, finished - started))
                if status == 202:
                    self.acknowledged += BATCH
                else:
                    self.refused += 1
        finally:
            writer.close()

    async def run(self, events_per_second: float | None, seconds: float) -> None:
        """Paced every 100 ms at `events_per_second`, or as fast as ingest answers (None)."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=self.connections * 2)
        posters = [asyncio.create_task(self._post(queue)) for _ in range(self.connections)]
        end = time.perf_counter() + seconds
        owed = 0.0
        while (now := time.perf_counter()) < end:
            if events_per_second is None:
                await queue.put(self._body())
                continue
            owed += events_per_second * 0.1
            while owed >= BATCH:
                owed -= BATCH
                if queue.full():
                    self.behind += 1  # counted, not queued forever
                    continue
                queue.put_nowait(self._body())
            await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - now)))
        for _ in posters:
            await queue.put(None)
        await asyncio.gather(*posters)

    def p99_since(self, since: float) -> float | None:
        recent = [d for at, d in self.durations if at >= since]
        return round(percentile(recent, 0.99) * 1000, 1) if recent else None


async def lag(conn: psycopg.Connection[Any], consumer: AIOKafkaConsumer, topic: str) -> int:
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = await consumer.end_offsets(partitions)
    stored = dict(conn.execute("SELECT partition, next_offset FROM consumer_offsets").fetchall())
    return sum(max(0, end - stored.get(tp.partition, 0)) for tp, end in ends.items())


def committed(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets").fetchone()
    return int(row[0]) if row else 0


def counted(conn: psycopg.Connection[Any]) -> int:
    lo, hi = datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(hours=1)
    row = conn.execute("SELECT kpi_value('orders', %s, %s, NULL)", (lo, hi)).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


async def within(done: Callable[[], Awaitable[bool]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await done():
            return True
        await asyncio.sleep(1)
    return False


def growth_mb_per_hour(samples: list[dict[str, Any]], service: str, after: float) -> float:
    """Least-squares slope of a service's memory over the samples after warm-up."""
    points = [(s["t"], s["rss_mb"][service]) for s in samples if s["t"] >= after]
    if len(points) < 3:
        return 0.0
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (m - mean_m) for t, m in points) / var if var else 0.0
    return round(slope * 3600, 1)


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    fig, (ax_lag, ax_mem, ax_p99) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax_lag.plot(minutes, [s["lag"] for s in samples], color="tab:red")
    ax_lag.set_ylabel("consumer lag (events)")
    for service in samples[0]["rss_mb"]:
        ax_mem.plot(minutes, [s["rss_mb"][service] for s in samples], label=service)
    ax_mem.set_ylabel("resident memory (MB)")
    ax_mem.legend(loc="upper left")
    ax_p99.plot(minutes, [s["ingest_p99_ms"] or 0 for s in samples], color="tab:blue")
    ax_p99.set_ylabel("ingest p99 (ms)")
    ax_p99.set_xlabel("minutes into the soak")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def soak(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    schema = args.schema
    logs = args.logs
    conn = prepare_schema(schema, KPIS)
    pipeline = Pipeline(schema, logs)
    settings = BaseServiceSettings(database_url=DATABASE_URL, database_schema=schema)
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
    try:
        for service in ("ingest", "aggregator", "alerts"):
            pipeline.start(service)
        client = HttpClient(f"http://127.0.0.1:{pipeline.ingest_port}", "")
        client.auth = f"Bearer {await create_bench_key(settings)}".encode()
        await wait_ready(client, within=120)
        await consumer.start()
        sender = Sender(client, args.connections)

        console.print("[bold]capacity probe[/]: 60 s as fast as ingest takes batches of 100")
        probe = asyncio.create_task(sender.run(None, 60))
        await asyncio.sleep(20)
        start_count, start_at = committed(conn), time.perf_counter()
        await probe
        capacity = (committed(conn) - start_count) / (time.perf_counter() - start_at)

        async def caught_up() -> bool:
            return await lag(conn, consumer, pipeline.topic) == 0

        await within(caught_up, 600)
        rate = round(capacity * args.share)
        console.print(f"capacity {capacity:,.0f} events/s; soak at {rate:,} events/s")

        samples: list[dict[str, Any]] = []
        seconds = args.minutes * 60
        began = time.perf_counter()
        load = asyncio.create_task(sender.run(rate, seconds))
        columns = (TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("soak", total=seconds)
            while not load.done():
                await asyncio.sleep(SAMPLE_SECONDS)
                now = time.perf_counter()
                sample = {
                    "t": round(now - began, 1),
                    "lag": await lag(conn, consumer, pipeline.topic),
                    "rss_mb": pipeline.memory(),
                    "ingest_p99_ms": sender.p99_since(now - SAMPLE_SECONDS),
                }
                samples.append(sample)
                progress.update(
                    task,
                    completed=min(seconds, now - began),
                    description=f"soak: lag {sample['lag']:>6,}  rss {sample['rss_mb']}",
                )
        await load

        async def all_counted() -> bool:
            return counted(conn) >= sender.acknowledged

        await within(all_counted, 300)
        await asyncio.sleep(3)
        total = counted(conn)
    finally:
        await consumer.stop()
        pipeline.stop()
        conn.close()
        drop_schemas(settings, schema)

    warm = min(300.0, seconds / 3)
    p99s = [s["ingest_p99_ms"] for s in samples if s["ingest_p99_ms"] is not None]
    services = list(samples[0]["rss_mb"]) if samples else []
    return {
        "capacity_events_per_s": round(capacity),
        "share": args.share,
        "rate_events_per_s": rate,
        "minutes": args.minutes,
        "acknowledged": sender.acknowledged,
        "refused_requests": sender.refused,
        "batches_not_sent_sender_behind": sender.behind,
        "counted": total,
        "exact": total == sender.acknowledged,
        "ingest_p99_ms": {"median": percentile(p99s, 0.5), "max": max(p99s, default=None)},
        "lag_events": {
            "median": percentile([s["lag"] for s in samples], 0.5),
            "max": max((s["lag"] for s in samples), default=None),
        },
        "memory_mb": {
            service: {
                "after_warm_up": next(s["rss_mb"][service] for s in samples if s["t"] >= warm),
                "end": samples[-1]["rss_mb"][service],
                "growth_mb_per_hour_after_warm_up": growth_mb_per_hour(samples, service, warm),
            }
            for service in services
        },
        "warm_up_seconds": warm,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--share", type=float, default=0.7, help="of the measured capacity")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--logs", help="where the services' logs go (default .local/bench/)")
    parser.add_argument("--name", default="soak", help="results as bench/results/NAME.json/.png")
    args = parser.parse_args()
    args.schema = f"soak_{uuid.uuid4().hex[:8]}"
    args.logs = Path(args.logs or REPO / ".local" / "bench" / args.schema)
    args.logs.mkdir(parents=True, exist_ok=True)
    console = Console()
    load_before = load_average()
    result = {
        "benchmark": "soak",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **asyncio.run(soak(args, console)),
    }
    result["machine"] = machine(load_before)
    result["environment"] = {k: v for k, v in os.environ.items() if k.startswith("PACEKEEPER_")}
    json_path, png_path = RESULTS / f"{args.name}.json", RESULTS / f"{args.name}.png"
    write_result(json_path, result)
    plot(
        result["samples"],
        png_path,
        f"Soak {args.minutes:g} min at {result['rate_events_per_s']:,} events/s"
        f" ({args.share:.0%} of {result['capacity_events_per_s']:,})",
    )
    console.print_json(data={k: v for k, v in result.items() if k != "samples"}, indent=2)
    console.print(f"wrote {json_path} and {png_path}")
    if not result["exact"]:
        raise SystemExit("the count KPI does not equal the acknowledged events")


if __name__ == "__main__":
    main()
