"""Ingest benchmark: HTTP ingest vs a raw aiokafka producer, same payloads, same broker.

    .venv/bin/python bench/ingest.py     # starts its own ingest (needs Kafka + PostgreSQL)
    .venv/bin/python bench/ingest.py --url http://127.0.0.1:8080 --key pk_...  # a running one

Phases (each `--seconds` long, bounded in requests too): single events at full speed,
single events paced at `--rate` req/s (the latency target), the same paced load beside
`--slow-clients` connections that drip their heads and bodies (cut off and reconnecting all
along), batches of 100, then the raw producer sending the same events one at a time and 100
at a time with the same concurrency.
Prints a table and writes bench/results/ingest.json. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import uvloop
from aiokafka.admin import AIOKafkaAdminClient
from common import load_average, machine
from rich.console import Console
from rich.table import Table

from services.ingest import keys
from services.ingest.workers import available_cores
from shared.db import make_engine
from shared.events import Envelope, encode, message_key, utcnow
from shared.kafka import make_producer
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "ingest.json"
SOURCE = "bench"
BATCH = 100


@dataclass
class Phase:
    name: str
    requests: int
    events: int
    seconds: float
    latencies_ms: list[float]
    errors: int = 0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms)

        def pct(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2) if ordered else 0

        return {
            "name": self.name,
            "requests": self.requests,
            "events": self.events,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.requests / self.seconds),
            "events_per_s": round(self.events / self.seconds),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
        }


def make_event(i: int) -> dict[str, Any]:
    return {
        "id": f"{uuid.uuid4().hex}-{i}",
        "type": "order_completed",
        "time": utcnow().isoformat(),
        "user_id": f"u-{i % 5000}",
        "properties": {"revenue": 59.9, "channel": "seo", "items": 3},
    }


class HttpClient:
    """Minimal keep-alive HTTP/1.1 client over asyncio streams: the load generator must cost
    far less CPU than the server it measures (httpx costs ~5x more per request)."""

    def __init__(self, url: str, key: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.auth = f"Bearer {key}".encode()

    def request(self, body: bytes) -> bytes:
        return (
            b"POST /v1/events HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n"
            b"Authorization: "
            + self.auth
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    @staticmethod
    async def roundtrip(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await reader.readexactly(length)
        return status


async def http_phase(
    client: HttpClient,
    name: str,
    bodies: list[bytes],
    events_per_request: int,
    *,
    concurrency: int,
    seconds: float,
    rate: float | None = None,
) -> Phase:
    """Closed loop (as fast as answers come) or, with `rate`, paced at `rate` requests/s."""
    requests = [client.request(body) for body in bodies]
    latencies: list[float] = []
    errors = 0
    next_index = 0
    start = time.perf_counter()
    deadline = start + seconds
    interval = concurrency / rate if rate else 0.0

    async def worker(offset: int) -> None:
        nonlocal next_index, errors
        reader, writer = await client.connect()
        due = start + offset * (interval / concurrency if rate else 0)
        try:
            while next_index < len(requests):
                if rate:
                    due += interval
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                now = time.perf_counter()
                if now >= deadline:
                    return
                request = requests[next_index]
                next_index += 1
                sent = time.perf_counter()
                status = await client.roundtrip(reader, writer, request)
                # Paced: latency from when the request was due (no coordinated omission).
                begun = min(sent, due) if rate else sent
                latencies.append((time.perf_counter() - begun) * 1000)
                if status != 202:
                    errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    done = len(latencies)
    return Phase(name, done, done * events_per_request, elapsed, latencies, errors)


@dataclass
class SlowClients:
    """Connections that send a head byte by byte or a body at 10 bytes/s, reconnecting as
    soon as the server cuts them off: the server always holds `count` of them."""

    client: HttpClient
    count: int
    cut: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._one(i, stop) for i in range(self.count)))

    async def _one(self, n: int, stop: asyncio.Event) -> None:
        request = self.client.request(b" " * 1000 + b"{}")
        split = request.index(b"\r\n\r\n") + 4 if n % 2 else 0  # odd ones drip the body
        step = 1 if split == 0 else 10
        while not stop.is_set():
            try:
                reader, writer = await self.client.connect()
            except OSError:
                await asyncio.sleep(0.5)
                continue
            try:
                writer.write(request[:split])
                for i in range(split, len(request), step):
                    if stop.is_set():
                        return
                    writer.write(request[i : i + step])
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1), 1.0) or reader.at_eof():
                            self.cut += 1
                            break
            except (ConnectionError, asyncio.IncompleteReadError):
                self.cut += 1
            finally:
                writer.close()


async def beside_slow_clients(slow: SlowClients, phase: Awaitable[Phase]) -> Phase:
    stop = asyncio.Event()
    dripping = asyncio.create_task(slow.run(stop))
    await asyncio.sleep(1.0)  # all connected and dripping before the first timed request
    try:
        return await phase
    finally:
        stop.set()
        await dripping


async def raw_phase(
    settings: BaseServiceSettings,
    topic: str,
    name: str,
    batches: list[list[Envelope]],
    *,
    concurrency: int,
    seconds: float,
) -> Phase:
    """The same envelopes straight into aiokafka (acks=all, idempotent, same linger)."""
    producer = make_producer(settings, client_id="pacekeeper-bench-raw")
    await producer.start()
    encoded = [[(message_key(e), encode(e)) for e in batch] for batch in batches]
    latencies: list[float] = []
    next_index = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(encoded) and time.perf_counter() < deadline:
            batch = encoded[next_index]
            next_index += 1
            sent = time.perf_counter()
            acks = [await producer.send(topic, value, key=key) for key, value in batch]
            await asyncio.gather(*acks)
            latencies.append((time.perf_counter() - sent) * 1000)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        await producer.stop()
    elapsed = time.perf_counter() - start
    done = len(latencies)
    return Phase(name, done, done * len(batches[0]), elapsed, latencies)


def envelopes(events: list[dict[str, Any]]) -> list[Envelope]:
    now = utcnow()
    return [Envelope.model_validate({**e, "source": SOURCE, "received_at": now}) for e in events]


async def create_bench_key(settings: BaseServiceSettings) -> str:
    engine = make_engine(settings, application_name="pacekeeper-bench", pool_size=1)
    try:
        async with engine.begin() as conn:
            _, new = await keys.create(conn, SOURCE)
    finally:
        await engine.dispose()
    return new.key


async def wait_ready(client: HttpClient, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            reader, writer = await client.connect()
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: ingest\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            if head.startswith(b"HTTP/1.1 200"):
                return
        await asyncio.sleep(0.25)
    raise SystemExit("ingest did not become ready")


async def delete_topic(settings: BaseServiceSettings, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


async def ingest_phases(
    args: argparse.Namespace,
    console: Console,
    client: HttpClient,
    singles: list[dict[str, Any]],
    batches: list[list[dict[str, Any]]],
    suffix: str,
    *,
    slow_clients: bool,
) -> tuple[list[Phase], int]:
    """The HTTP phases against one running ingest, names ending with `suffix`; and how
    many slow connections the server cut off."""
    await wait_ready(client)
    single_bodies = [orjson.dumps(e) for e in singles]
    batch_bodies = [orjson.dumps(b) for b in batches]
    # Warm-up: connections, metadata, JIT-less but cache-warm paths.
    await http_phase(client, "warmup", single_bodies[:500], 1, concurrency=8, seconds=2)
    paced = f"ingest single @{args.rate:.0f}/s"
    plan: list[tuple[str, Callable[[], Awaitable[Phase]]]] = [
        (
            "ingest single (closed loop)",
            lambda: http_phase(
                client,
                f"ingest single{suffix}",
                single_bodies[500:],
                1,
                concurrency=args.concurrency,
                seconds=args.seconds,
            ),
        ),
        (
            f"ingest single paced {args.rate:.0f} req/s",
            lambda: http_phase(
                client,
                f"{paced}{suffix}",
                single_bodies,
                1,
                concurrency=args.concurrency,
                seconds=args.seconds,
                rate=args.rate,
            ),
        ),
    ]
    if slow_clients:
        slow = SlowClients(client, args.slow_clients)
        plan.append(
            (
                f"ingest single paced {args.rate:.0f} req/s beside {args.slow_clients} slow"
                " clients",
                lambda: beside_slow_clients(
                    slow,
                    http_phase(
                        client,
                        f"{paced} + {args.slow_clients} slow{suffix}",
                        single_bodies,
                        1,
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                        rate=args.rate,
                    ),
                ),
            )
        )
    plan.append(
        (
            "ingest batch of 100",
            lambda: http_phase(
                client,
                f"ingest batch100{suffix}",
                batch_bodies,
                BATCH,
                concurrency=args.batch_concurrency,
                seconds=args.seconds,
            ),
        )
    )
    phases = []
    for label, coro in plan:
        console.log(f"running {label}{suffix}")
        phases.append(await coro())
    return phases, slow.cut if slow_clients else 0


async def start_ingest(
    args: argparse.Namespace, schema: str, topic: str, workers: int
) -> asyncio.subprocess.Process:
    """`pacekeeper run ingest`, as the README runs it, on our topic and schema."""
    env = {
        **os.environ,
        "PACEKEEPER_DATABASE_SCHEMA": schema,
        "PACEKEEPER_EVENTS_TOPIC": topic,
        "PACEKEEPER_INGEST_PORT": str(args.port),
        "PACEKEEPER_INGEST_WORKERS": str(workers),
        "PACEKEEPER_INGEST_RATE_PER_SECOND": "10000000",
        "PACEKEEPER_INGEST_RATE_BURST": "10000000",
        "PACEKEEPER_LOG_LEVEL": "WARNING",
        # Short deadlines, so slow clients are cut off and reconnect during the phase.
        "PACEKEEPER_HTTP_HEADER_TIMEOUT_SECONDS": "2",
        "PACEKEEPER_HTTP_BODY_TIMEOUT_SECONDS": "3",
    }
    pacekeeper = shutil.which("pacekeeper", path=str(Path(sys.executable).parent))
    command = [pacekeeper] if pacekeeper else [sys.executable, "-m", "services.cli"]
    return await asyncio.create_subprocess_exec(*command, "run", "ingest", env=env)


def _worker_label(workers: int) -> str:
    return " [1 worker]" if workers == 1 else f" [{workers} workers]"


async def run(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    load_before = load_average()
    base = BaseServiceSettings()
    run_id = uuid.uuid4().hex[:8]
    topic = f"pacekeeper-bench-{run_id}.events.v1"
    n = args.max_requests
    singles = [make_event(i) for i in range(n)]
    batches = [[make_event(i * BATCH + j) for j in range(BATCH)] for i in range(n // 10)]
    cut = 0
    phases: list[Phase] = []
    cores = available_cores()
    counts = sorted({cores if w == 0 else w for w in args.workers})
    default = args.workers[-1] or cores  # the README's way: one worker per core
    if args.url is not None:
        assert args.key is not None, "--key is required with --url"
        topic = args.topic
        client = HttpClient(args.url, args.key)
        phases, cut = await ingest_phases(
            args, console, client, singles, batches, "", slow_clients=True
        )
        counts, suffixes = [], {0: ""}
    else:
        # Our own ingest, on a topic and a schema of its own: the real events topic stays clean.
        schema = "bench_ingest"
        settings = BaseServiceSettings(database_schema=schema)
        await asyncio.to_thread(upgrade, settings)
        key = await create_bench_key(settings)
        client = HttpClient(f"http://127.0.0.1:{args.port}", key)
        suffixes = {w: _worker_label(w) for w in counts}
        for workers in counts:
            process = await start_ingest(args, schema, topic, workers)
            try:
                measured, slow_cut = await ingest_phases(
                    args,
                    console,
                    client,
                    singles,
                    batches,
                    suffixes[workers],
                    slow_clients=workers == default,
                )
                phases += measured
                cut = max(cut, slow_cut)
            finally:
                process.terminate()
                await asyncio.wait_for(process.wait(), 30)
    # Our ingest has stopped by now: the raw producer gets the CPU the ingest had.
    console.log("running raw producer, single events")
    raw_single = await raw_phase(
        base,
        topic,
        "raw single",
        [[e] for e in envelopes(singles)],
        concurrency=args.concurrency,
        seconds=args.seconds,
    )
    console.log("running raw producer, batches of 100")
    raw_batch = await raw_phase(
        base,
        topic,
        "raw batch100",
        [envelopes(b) for b in batches],
        concurrency=args.batch_concurrency,
        seconds=args.seconds,
    )
    if args.url is None:
        await delete_topic(base, topic)
    phases += [raw_single, raw_batch]
    by_name = {p.name: p.summary() for p in phases}
    main_suffix = suffixes.get(default, "")
    single, batch = by_name[f"ingest single{main_suffix}"], by_name[f"ingest batch100{main_suffix}"]
    paced = by_name[f"ingest single @{args.rate:.0f}/s{main_suffix}"]
    crowded = by_name[f"ingest single @{args.rate:.0f}/s + {args.slow_clients} slow{main_suffix}"]
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(load_before),
        "command": " ".join(["bench/ingest.py", *sys.argv[1:]]),
        "settings": {
            "concurrency": args.concurrency,
            "batch_concurrency": args.batch_concurrency,
            "seconds_per_phase": args.seconds,
            "paced_rate": args.rate,
            "slow_clients": args.slow_clients,
            "http_header_timeout_seconds": 2,
            "http_body_timeout_seconds": 3,
            "workers": counts,
            "headline_workers": default,
        },
        "slow_clients_cut_off": cut,
        "p99_ratio_beside_slow_clients": round(crowded["p99_ms"] / paced["p99_ms"], 2),
        "phases": list(by_name.values()),
        "ratio_single": round(single["events_per_s"] / by_name["raw single"]["events_per_s"], 3),
        "ratio_batch": round(batch["events_per_s"] / by_name["raw batch100"]["events_per_s"], 3),
        "targets": {"batch_events_per_s": 40_000, "single_requests_per_s": 6_500, "p99_ms": 50},
    }
    if len(counts) > 1:
        one, most = suffixes[counts[0]], suffixes[counts[-1]]
        result["scaling"] = {
            "workers": [counts[0], counts[-1]],
            "single": round(
                by_name[f"ingest single{most}"]["events_per_s"]
                / by_name[f"ingest single{one}"]["events_per_s"],
                2,
            ),
            "batch": round(
                by_name[f"ingest batch100{most}"]["events_per_s"]
                / by_name[f"ingest batch100{one}"]["events_per_s"],
                2,
            ),
        }
    return result


def show(result: dict[str, Any], console: Console) -> None:
    table = Table(title="ingest vs raw aiokafka producer (loopback, same broker)")
    for column in ("phase", "req/s", "events/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    for p in result["phases"]:
        table.add_row(
            p["name"],
            f"{p['requests_per_s']:,}",
            f"{p['events_per_s']:,}",
            f"{p['p50_ms']}",
            f"{p['p99_ms']}",
            str(p["errors"]),
        )
    console.print(table)
    machine = result["machine"]
    console.print(
        f"{machine['cpus']} CPUs, load average {machine['load_average_before'][0]} before,"
        f" {machine['load_average_after'][0]} after"
    )
    workers = result["settings"]["headline_workers"]
    console.print(
        f"ingest ({workers} workers) ÷ raw: single {result['ratio_single']:.0%},"
        f" batch of 100 {result['ratio_batch']:.0%}"
    )
    if "scaling" in result:
        scaling = result["scaling"]
        low, high = scaling["workers"]
        console.print(
            f"{high} workers ÷ {low}: single events {scaling['single']:.2f}x,"
            f" batches of 100 {scaling['batch']:.2f}x"
        )
    console.print(
        f"paced p99 beside {result['settings']['slow_clients']} slow clients ÷ alone:"
        f" {result['p99_ratio_beside_slow_clients']:.2f}"
        f" ({result['slow_clients_cut_off']} slow connections cut off by the server)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running ingest; default: start one")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--topic", default="pacekeeper.events.v1", help="topic of --url's ingest")
    parser.add_argument("--port", type=int, default=18080, help="port for the ingest we start")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=2000.0, help="paced phase, requests/s")
    parser.add_argument("--slow-clients", type=int, default=200, help="for the crowded phase")
    parser.add_argument("--max-requests", type=int, default=60_000, help="per phase, at most")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1, 0],
        help="ingest worker counts to measure side by side; 0 is the default, one per core"
        " (the last one is the headline, and the one measured beside slow clients)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    console = Console()
    result = uvloop.run(run(args, console))
    show(result, console)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    console.print(f"written to {args.output}")


if __name__ == "__main__":
    main()
