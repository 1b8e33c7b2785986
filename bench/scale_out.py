"""Aggregator scale-out benchmark: 1, 2 and 3 `pacekeeper run aggregator` processes in one
consumer group on a 6-partition topic, with exact totals and CPU per event per component,
and a rebalance under load (one process joins, one leaves).

    .venv/bin/python bench/scale_out.py [--events 200000] [--processes 1,2,3] [--repeat 2]
        [--rate 3000] [--rebalance-seconds 60] [--leave term,kill]
        [--no-scale] [--no-rebalance] [--keep-failed] [--log-level WARNING]

Scale (--repeat rounds over the process counts of --processes, on the same events):
1. N events are produced once into a private topic with 6 partitions: bench/aggregator.py's
   workload (its `make_event`: a busy product's last hour, 50,000 users, up to 30 s of
   disorder) for its 20 KPI definitions (`KPIS`). The values sent are kept for the oracle.
   The broker's CPU per event produced is measured here, and bench/aggregator.py's raw
   consumer (read + orjson) reads the topic once, as a yardstick of the machine's speed.
2. For each process count k: a fresh schema of the `pacekeeper` database (migrated:
   hypertables, aggregates, policies) and a fresh consumer group; k `pacekeeper run
   aggregator` processes with private DLQ and kpi-updates topics start at once.
3. Every 0.25 s: the offsets the group stored in the database (they commit in the batch
   transaction) and the CPU time (/proc/<pid>/stat utime+stime) of the aggregator
   processes, of PostgreSQL (the postmaster on the database port and its children), of the
   broker (the process on the Kafka port) and of this script, and /proc/stat for the
   machine ("other" is the rest of the machine's busy time). Done when the stored offsets
   reach the topic's end offsets.
   - wall: from starting the processes until every event is committed (start-up and
     group joins included);
   - sustained: events per second between the first and the last commit
     (as bench/aggregator.py);
   - steady: events per second between 10 % and 90 % of the events committed; CPU per
     event per component over the same interval.
   Also the WAL bytes per event (pg_current_wal_lsn) and the rows inserted and updated per
   event per table (pg_stat_user_tables, over each hypertable's chunks).
4. Exactness against a plain-Python oracle over the events sent: every KPI over the whole
   hour, the dimensioned ones per dimension value, four of them minute by minute
   (`kpi_series`), and the `events` table holds each event exactly once. The tables are
   ANALYZEd first (without statistics the funnel's kpi_value takes minutes).
   The per-count figures of the summary are medians over the rounds.

Rebalance under load (for each --leave variant, `term` = SIGTERM, `kill` = SIGKILL):
a fresh topic, schema and group; two aggregators; --rate events/s for --rebalance-seconds
(plus one probe event every 100 ms, rotating over the 6 partitions, counted by a KPI per
partition); a third aggregator starts at 1/3 of the time and one of the first two is
stopped at 2/3. Every 0.2 s: the lag (end offsets minus stored offsets) and which probes
`kpi_value` counts, giving each probe's freshness (produce call to visible). Per phase:
lag and freshness, and after each change how long until the lag is back to normal. After
the producer stops: time until the lag is 0, and the same exactness check.

Writes bench/results/scale_out.json; exits 1 if any total is not exact (--keep-failed
keeps that run's schema for inspection). Needs the local Kafka and PostgreSQL
(make infra-up).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import bisect
import contextlib
import math
import operator
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from aggregator import (
    BOOTSTRAP,
    DATABASE_URL,
    KPIS,
    PARTITIONS,
    libpq,
    make_event,
    percentile,
    raw_consumer_rate,
)
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from common import drop_schemas, load_average, machine, write_result
from pydantic import TypeAdapter
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.engine import make_url

from shared.config.kpis import KpiSpec
from shared.config.store import spec_json
from shared.kafka import ensure_topics
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from shared.timescaledb import database_status

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "scale_out.json"
PACEKEEPER = Path(sys.executable).with_name("pacekeeper")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MINUTE_US = 60_000_000
# The rebalance runs count their probes per partition with this extra KPI.
PROBE_KPI: dict[str, Any] = {
    "name": "probe_by_partition",
    "kind": "count",
    "event": "bench_probe",
    "dimensions": ["properties.partition"],
}
# --keep-failed: leave a run's schema in place when its totals are not exact.
KEEP_FAILED = False
# Compared minute by minute with kpi_series.
SERIES_KPIS = ("orders", "page_views", "revenue", "visitors")


# --- CPU accounting ------------------------------------------------------------------------


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_modes() -> dict[str, float]:
    """The machine's CPU seconds since boot per mode, from /proc/stat."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return {n: v / CLOCK_TICKS for n, v in zip(names, values, strict=True)}


def machine_cpu() -> tuple[float, float, float]:
    """(busy, total, steal) CPU seconds of the whole machine since boot, from /proc/stat;
    busy leaves out idle, iowait and steal (time the hypervisor gave to other guests)."""
    with open("/proc/stat", "rb") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    total = sum(values)
    busy = total - values[3] - values[4] - values[7]
    return busy / CLOCK_TICKS, total / CLOCK_TICKS, values[7] / CLOCK_TICKS


def all_processes() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds, its reaped children's included."""
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat", "rb") as f:
                raw = f.read()
            name = raw[raw.index(b"(") + 1 : raw.rindex(b")")].decode(errors="replace")
            fields = raw[raw.rindex(b")") + 2 :].split()
            # utime + stime + the reaped children's cutime + cstime: a shell that ran a
            # short-lived command shows its CPU.
            ticks = sum(int(x) for x in fields[11:15])
            out[int(entry)] = (name, ticks / CLOCK_TICKS)
    return out


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (we run as the owner of the infra, or root)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{entry}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry}/fd/{fd}") in wanted:
                        return int(entry)
    return None


def pgrep(*args: str) -> list[int]:
    out = subprocess.run(["pgrep", *args], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def infra_pids() -> tuple[int | None, int | None]:
    """The postmaster of the database and the broker process, by the ports they listen on
    (falling back to their names)."""
    db_port = make_url(DATABASE_URL).port or 5432
    kafka_port = int(BOOTSTRAP.split(",")[0].rsplit(":", 1)[1])
    postmaster = listening_pid(db_port)
    if postmaster is None:
        found = pgrep("-o", "-x", "postgres")
        postmaster = found[0] if found else None
    broker = listening_pid(kafka_port)
    if broker is None:
        found = pgrep("-f", "kafka.Kafka")
        broker = found[0] if found else None
    return postmaster, broker


class CpuMeter:
    """Cumulative CPU seconds per component since the meter started. A process seen at the
    first sample counts from its value then; one that appears later counts from its start;
    one that exits keeps its last sampled value."""

    def __init__(self, postmaster: int | None, broker: int | None) -> None:
        self.postmaster = postmaster
        self.broker = broker
        self.aggregators: list[int] = []
        self._base: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._component: dict[int, str] = {}
        self._first = True
        self._machine0 = machine_cpu()
        self._everyone = all_processes()
        self._modes = machine_modes()

    def add_aggregator(self, pid: int) -> None:
        self.aggregators.append(pid)

    def _pids(self) -> Iterable[tuple[str, int]]:
        for pid in self.aggregators:
            yield "aggregators", pid
        if self.postmaster is not None:
            yield "postgres", self.postmaster
            for pid in children(self.postmaster):
                yield "postgres", pid
        if self.broker is not None:
            yield "broker", self.broker
        yield "bench", os.getpid()

    def sample(self) -> dict[str, float]:
        for component, pid in self._pids():
            cpu = proc_cpu(pid)
            if cpu is None:
                continue
            if pid not in self._base:
                self._base[pid] = cpu if self._first else 0.0
                self._component[pid] = component
            self._last[pid] = cpu
        self._first = False
        totals = {"aggregators": 0.0, "postgres": 0.0, "broker": 0.0, "bench": 0.0}
        for pid, last in self._last.items():
            totals[self._component[pid]] += last - self._base[pid]
        busy, total, steal = machine_cpu()
        totals["machine_busy"] = busy - self._machine0[0]
        totals["machine_total"] = total - self._machine0[1]
        totals["machine_steal"] = steal - self._machine0[2]
        return totals

    def modes(self) -> dict[str, float]:
        """CPU seconds per mode of the whole machine since the meter started."""
        return {k: round(v - self._modes[k], 2) for k, v in machine_modes().items()}

    def others(self, top: int = 5) -> list[dict[str, Any]]:
        """The busiest processes outside the components since the meter started (what
        'other' was): name, pid, CPU seconds."""
        now = all_processes()
        ours = set(self._component)
        deltas = [
            (cpu - self._everyone.get(pid, (name, 0.0))[1], pid, name)
            for pid, (name, cpu) in now.items()
            if pid not in ours
        ]
        deltas.sort(reverse=True)
        return [
            {"name": name, "pid": pid, "cpu_s": round(cpu, 2)}
            for cpu, pid, name in deltas[:top]
            if cpu >= 0.05
        ]

    def per_aggregator(self) -> list[float]:
        return [round(self._last.get(p, 0.0) - self._base.get(p, 0.0), 2) for p in self.aggregators]


COMPONENTS = ("aggregators", "postgres", "broker", "bench")


def cpu_between(a: dict[str, float], b: dict[str, float], events: int) -> dict[str, Any]:
    """CPU µs per event per component between two samples, 'other' being the rest of the
    machine's busy time, and how busy the machine was."""
    per: dict[str, Any] = {c: round((b[c] - a[c]) / events * 1e6, 1) for c in COMPONENTS}
    busy = b["machine_busy"] - a["machine_busy"]
    ours = sum(b[c] - a[c] for c in COMPONENTS)
    per["other"] = round((busy - ours) / events * 1e6, 1)
    per["machine_total"] = round(busy / events * 1e6, 1)
    total = b["machine_total"] - a["machine_total"]
    steal = b["machine_steal"] - a["machine_steal"]
    per["machine_busy_fraction"] = round(busy / total, 3) if total > 0 else None
    per["steal_fraction"] = round(steal / total, 3) if total > 0 else None
    return per


def speed_probe() -> float:
    """Milliseconds for a fixed piece of pure Python (best of 3): how fast this machine's
    cores are right now, to compare runs on a shared machine."""
    best = math.inf
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 1)


# --- the oracle ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    id: str
    type: str
    source: str
    time_us: int
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]

    @property
    def actor(self) -> str | None:
        return self.user_id or self.anonymous_id

    @property
    def minute(self) -> int:
        return self.time_us - self.time_us % MINUTE_US


def _us(value: str) -> int:
    moment = datetime.fromisoformat(value)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


_OPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


class Oracle:
    """KPI values in plain Python over the events as sent, independent of the aggregator's
    code (its semantics as tests/aggregator/oracle.py states them): whole-window values,
    per dimension value, and per minute."""

    def __init__(self, definitions: Sequence[dict[str, Any]]) -> None:
        self.specs = {d["name"]: d for d in definitions}
        self.events: list[Sent] = []
        self._seen: set[tuple[str, str]] = set()
        self._by_type: dict[str, list[Sent]] = {}
        self._by_type_minute: dict[tuple[str, int], list[Sent]] = {}
        self._cache: dict[tuple[str, str, int | None], float | None] = {}

    def add(self, value: bytes) -> None:
        raw = orjson.loads(value)
        if (raw["source"], raw["id"]) in self._seen:
            return  # the same (source, id) counts once
        self._seen.add((raw["source"], raw["id"]))
        event = Sent(
            raw["id"],
            raw["type"],
            raw["source"],
            _us(raw["time"]),
            raw.get("user_id"),
            raw.get("anonymous_id"),
            raw.get("properties") or {},
        )
        self.events.append(event)
        self._cache.clear()
        self._by_type.setdefault(event.type, []).append(event)
        self._by_type_minute.setdefault((event.type, event.minute), []).append(event)

    def minutes(self) -> list[int]:
        return sorted({e.minute for e in self.events})

    def window(self) -> tuple[datetime, datetime]:
        minutes = [e.minute for e in self.events]
        return _dt(min(minutes)), _dt(max(minutes) + MINUTE_US)

    @staticmethod
    def lookup(e: Sent, path: str) -> Any:
        if path in ("source", "type", "id", "user_id", "anonymous_id"):
            return getattr(e, path)
        value: Any = e.properties
        for part in path.split(".")[1:]:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    @staticmethod
    def _number(v: Any) -> float | None:
        if isinstance(v, bool) or v is None:
            return None
        if isinstance(v, int | float):
            return float(v)
        return None

    def _matches(self, e: Sent, event: str, where: dict[str, Any] | None) -> bool:
        if e.type != event:
            return False
        for path, cond in (where or {}).items():
            v = self.lookup(e, path)
            if isinstance(cond, dict):
                n = self._number(v)
                if n is None:
                    return False
                if "gte" in cond and not n >= cond["gte"]:
                    return False
                if "lte" in cond and not n <= cond["lte"]:
                    return False
                if "gt" in cond and not n > cond["gt"]:
                    return False
                if "lt" in cond and not n < cond["lt"]:
                    return False
            elif v != cond:
                return False
        return True

    def _dims_ok(self, e: Sent, dims: dict[str, str] | None) -> bool:
        return all(str(self.lookup(e, k)) == v for k, v in (dims or {}).items())

    def value(
        self,
        name: str,
        dims: dict[str, str] | None = None,
        minute: int | None = None,
    ) -> float | None:
        """The KPI over the whole window, or over one minute (epoch µs)."""
        key = (name, orjson.dumps(dims, option=orjson.OPT_SORT_KEYS).decode(), minute)
        if key not in self._cache:
            self._cache[key] = self._value(name, dims, minute)
        return self._cache[key]

    def _value(self, name: str, dims: dict[str, str] | None, minute: int | None) -> float | None:
        spec = self.specs[name]
        kind = spec["kind"]
        if kind == "ratio":
            num = self.value(spec["numerator"], dims, minute)
            den = self.value(spec["denominator"], dims, minute)
            return None if num is None or not den else num / den
        if kind == "formula":
            result = self._formula(ast.parse(spec["expression"], mode="eval").body, dims, minute)
            return None if result is None else float(result)
        if kind == "funnel":
            return self._funnel(spec)
        if kind == "retention":
            return self._retention(spec)
        candidates = (
            self._by_type.get(spec["event"], [])
            if minute is None
            else self._by_type_minute.get((spec["event"], minute), [])
        )
        chosen = [
            e
            for e in candidates
            if self._matches(e, spec["event"], spec.get("where")) and self._dims_ok(e, dims)
        ]
        if kind == "count":
            return float(len(chosen))
        if kind == "count_distinct":
            path = spec.get("field")
            values = {e.actor if path is None else self.lookup(e, path) for e in chosen}
            values.discard(None)
            return float(len(values))
        pairs = [(e.time_us, self._number(self.lookup(e, spec["field"]))) for e in chosen]
        nums = [(t, n) for t, n in pairs if n is not None]
        if kind == "sum":
            return math.fsum(n for _, n in nums)
        if not nums:
            return None
        if kind == "avg":
            return math.fsum(n for _, n in nums) / len(nums)
        if kind == "min":
            return min(n for _, n in nums)
        if kind == "max":
            return max(n for _, n in nums)
        if kind == "last":
            return max(nums)[1]
        if kind == "percentile":
            ordered = sorted(n for _, n in nums)
            q = float(spec["q"])
            return ordered[math.floor(q * (len(ordered) - 1))]
        raise ValueError(f"no oracle for kind {kind}")

    def _formula(self, node: ast.expr, dims: dict[str, str] | None, minute: int | None) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return self.value(node.id, dims, minute)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self._formula(node.operand, dims, minute)
            return None if inner is None else -inner
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left = self._formula(node.left, dims, minute)
            right = self._formula(node.right, dims, minute)
            if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
                return None
            return _OPS[type(node.op)](left, right)
        raise ValueError(f"unsupported formula node {ast.dump(node)}")

    def _funnel(self, spec: dict[str, Any]) -> float | None:
        """Two steps: actors with step 1 in the window, and those with step 2 in
        (t, t + within] after one of their step-1 events at t."""
        first, second = spec["steps"]
        within_us = {"h": 3_600_000_000, "m": 60_000_000, "d": 86_400_000_000}[
            spec["within"][-1]
        ] * int(spec["within"][:-1])
        entries: dict[str, list[int]] = {}
        for e in self._by_type.get(first["event"], []):
            if e.actor and self._matches(e, first["event"], first.get("where")):
                entries.setdefault(e.actor, []).append(e.time_us)
        for times in entries.values():
            times.sort()
        converted: set[str] = set()
        for e in self._by_type.get(second["event"], []):
            actor = e.actor
            if actor in entries and self._matches(e, second["event"], second.get("where")):
                times = entries[actor]
                j = bisect.bisect_left(times, e.time_us) - 1
                if j >= 0 and e.time_us - times[j] <= within_us:
                    converted.add(actor)
        return len(converted) / len(entries) if entries else None

    def _retention(self, spec: dict[str, Any]) -> float | None:
        """Day-N return (UTC, the business time zone of a fresh schema) of each actor's
        first cohort event."""
        first: dict[str, tuple[int, str]] = {}
        for e in self._by_type.get(spec["cohort_event"], []):
            if e.actor:
                key = (e.time_us, f"{e.source}\x1f{e.id}")
                if e.actor not in first or key < first[e.actor]:
                    first[e.actor] = key
        days: dict[str, set[Any]] = {}
        for e in self._by_type.get(spec["return_event"], []):
            if e.actor in first:
                days.setdefault(e.actor, set()).add(_dt(e.time_us).date())
        if not first:
            return None
        back = sum(
            1
            for actor, (t, _) in first.items()
            if _dt(t).date() + timedelta(days=spec["day"]) in days.get(actor, set())
        )
        return back / len(first)

    def questions(self) -> list[tuple[str, dict[str, str] | None]]:
        """Every KPI over the window, and each dimensioned one per value of each dimension."""
        out: list[tuple[str, dict[str, str] | None]] = [(name, None) for name in self.specs]
        for name, spec in self.specs.items():
            for dim in spec.get("dimensions", []):
                values = sorted(
                    {str(self.lookup(e, dim)) for e in self._by_type.get(spec["event"], [])}
                )
                out.extend((name, {dim: v}) for v in values)
        return out


def close(name: str, kind: str, actual: float | None, expected: float | None) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    if kind == "percentile":  # the sketch's relative accuracy
        return abs(actual - expected) <= 0.01 * abs(expected) + 1e-9
    if kind in ("count", "count_distinct"):
        return actual == expected
    return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def verify(conn: psycopg.Connection[Any], oracle: Oracle) -> dict[str, Any]:
    """Every KPI (and per dimension value) over the window, four KPIs per minute, and the
    events table: each event once. Returns the counts and any mismatch."""
    lo, hi = oracle.window()
    # Freshly written tables have no statistics until autovacuum gets to them; without them
    # kpi_value of the funnel took 42 s over 30,000 events (0.3 s after ANALYZE).
    started = time.perf_counter()
    conn.execute(
        "ANALYZE events, kpi_points, kpi_distinct, kpi_funnel_steps, kpi_retention_cohorts,"
        " kpi_retention_returns"
    )
    analyze_s = time.perf_counter() - started
    mismatches: list[dict[str, Any]] = []
    checks = 0
    slow: list[tuple[float, str]] = []
    for name, dims in oracle.questions():
        started = time.perf_counter()
        row = conn.execute(
            "SELECT kpi_value(%s, %s, %s, %s::jsonb)",
            (name, lo, hi, None if dims is None else orjson.dumps(dims).decode()),
        ).fetchone()
        slow.append((time.perf_counter() - started, f"kpi_value {name} {dims or ''}".strip()))
        actual = None if row is None or row[0] is None else float(row[0])
        expected = oracle.value(name, dims)
        checks += 1
        if not close(name, oracle.specs[name]["kind"], actual, expected):
            mismatches.append({"kpi": name, "dims": dims, "actual": actual, "expected": expected})
    minutes = 0
    for name in SERIES_KPIS:
        if name not in oracle.specs:
            continue
        started = time.perf_counter()
        series = dict(
            conn.execute(
                "SELECT time, value FROM kpi_series(%s, %s, %s, interval '1 minute')",
                (name, lo, hi),
            ).fetchall()
        )
        slow.append((time.perf_counter() - started, f"kpi_series {name} 1 minute"))
        for minute in oracle.minutes():
            expected = oracle.value(name, None, minute)
            value = series.get(_dt(minute))
            actual = None if value is None else float(value)
            checks += 1
            minutes += 1
            if not close(name, oracle.specs[name]["kind"], actual, expected):
                mismatches.append(
                    {"kpi": name, "minute": _dt(minute).isoformat(), "actual": actual,
                     "expected": expected}
                )  # fmt: skip
    row = conn.execute("SELECT count(*), count(DISTINCT (source, id)) FROM events").fetchone()
    stored, distinct = (int(row[0]), int(row[1])) if row else (0, 0)
    exact = not mismatches and stored == distinct == len(oracle.events)
    return {
        "exact": exact,
        "checks": checks,
        "minute_checks": minutes,
        "events_sent": len(oracle.events),
        "events_rows": stored,
        "distinct_event_ids": distinct,
        "mismatches": mismatches[:20],
        "analyze_s": round(analyze_s, 2),
        "slowest_queries_s": {q: round(t, 3) for t, q in sorted(slow, reverse=True)[:5]},
    }


# --- Kafka and the processes ---------------------------------------------------------------


async def end_offsets(consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
    got = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    return {tp.partition: int(offset) for tp, offset in got.items()}


def stored_offsets(conn: psycopg.Connection[Any], group: str) -> dict[int, int]:
    rows = conn.execute(
        "SELECT partition, next_offset FROM consumer_offsets WHERE group_id = %s", (group,)
    ).fetchall()
    return {int(p): int(o) for p, o in rows}


async def delete_topics(*topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_topics(list(topics))
    except Exception as error:  # noqa: BLE001  # clean-up only: say it, go on
        print(f"could not delete topics {topics}: {error!r}")
    finally:
        await admin.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Worker:
    """One `pacekeeper run aggregator` process."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float
    ready_at: float | None = None
    stopped_at: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class Fleet:
    """The aggregator processes of one run: same schema, topics and consumer group."""

    log_level = "WARNING"

    def __init__(self, schema: str, group: str, topic: str, meter: CpuMeter, logs: Path) -> None:
        self.env = {
            **os.environ,
            "PACEKEEPER_DATABASE_URL": DATABASE_URL,
            "PACEKEEPER_DATABASE_SCHEMA": schema,
            "PACEKEEPER_KAFKA_BOOTSTRAP": BOOTSTRAP,
            "PACEKEEPER_EVENTS_TOPIC": topic,
            "PACEKEEPER_DLQ_TOPIC": f"{topic}.dlq",
            "PACEKEEPER_KPI_UPDATES_TOPIC": f"{topic}.updates",
            "PACEKEEPER_AGGREGATOR_GROUP_ID": group,
            "PACEKEEPER_AGGREGATOR_TOPIC_PARTITIONS": str(PARTITIONS),
            "PACEKEEPER_LOG_LEVEL": self.log_level,
        }
        self.meter = meter
        self.logs = logs
        self.workers: list[Worker] = []
        self.http = httpx.AsyncClient(timeout=2.0)

    def spawn(self) -> Worker:
        port = free_port()
        log = self.logs / f"aggregator-{len(self.workers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(PACEKEEPER), "run", "aggregator"],
                cwd=REPO,
                env={**self.env, "PACEKEEPER_AGGREGATOR_HEALTH_PORT": str(port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, port, log, time.perf_counter())
        self.meter.add_aggregator(proc.pid)
        self.workers.append(worker)
        return worker

    async def ready(self, worker: Worker) -> bool:
        """Consuming: the database answered and the group assigned it partitions."""
        if worker.ready_at is not None:
            return True
        with contextlib.suppress(httpx.HTTPError):
            response = await self.http.get(f"http://127.0.0.1:{worker.port}/readyz")
            if response.status_code == 200:
                worker.ready_at = time.perf_counter()
                return True
        return False

    async def scrape(self, worker: Worker) -> None:
        """Events applied, duplicates dropped and commit time, from its /metrics."""
        wanted = {
            "pacekeeper_aggregator_events_applied_total": "events_applied",
            "pacekeeper_aggregator_duplicates_dropped_total": "duplicates_dropped",
            "pacekeeper_aggregator_commit_seconds_sum": "commit_seconds",
            "pacekeeper_aggregator_commit_seconds_count": "batches",
            "pacekeeper_aggregator_cardinality_folds_total": "cardinality_folds",
        }
        with contextlib.suppress(httpx.HTTPError):
            response = await self.http.get(f"http://127.0.0.1:{worker.port}/metrics")
            worker.metrics = {}
            for line in response.text.splitlines():
                name, _, value = line.partition(" ")
                name = name.split("{", 1)[0]
                if name in wanted and not line.startswith("#"):
                    key = wanted[name]
                    worker.metrics[key] = worker.metrics.get(key, 0.0) + float(value)

    async def stop(self, worker: Worker, sig: signal.Signals = signal.SIGTERM) -> float:
        """Signal it and wait for it to exit; seconds it took."""
        if worker.proc.poll() is None:
            worker.proc.send_signal(sig)
        sent = time.perf_counter()
        try:
            await asyncio.to_thread(worker.proc.wait, 40)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            await asyncio.to_thread(worker.proc.wait)
        worker.stopped_at = time.perf_counter()
        return worker.stopped_at - sent

    async def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                await self.stop(worker)
        await self.http.aclose()

    def failed(self) -> list[str]:
        """Logs of processes that exited by themselves with an error."""
        return [
            str(w.log)
            for w in self.workers
            if w.proc.returncode not in (0, None, -signal.SIGTERM, -signal.SIGKILL)
        ]


def kpi_adapter() -> TypeAdapter[Any]:
    return TypeAdapter(KpiSpec)


def prepare_schema(schema: str, definitions: Sequence[dict[str, Any]]) -> psycopg.Connection[Any]:
    """Migrate a throw-away schema, store the KPI definitions; a connection on it."""
    upgrade(BaseServiceSettings(database_url=DATABASE_URL, database_schema=schema))
    conn = psycopg.connect(
        libpq(DATABASE_URL), autocommit=True, options=f"-c search_path={schema},public"
    )
    adapter = kpi_adapter()
    for d in definitions:
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES (%s, %s)",
            (d["name"], orjson.dumps(spec_json(adapter.validate_python(d))).decode()),
        )
    return conn


def wal_lsn(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def wal_bytes(conn: psycopg.Connection[Any], since: str) -> int:
    row = conn.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (since,)
    ).fetchone()
    return int(row[0]) if row else 0


def rows_written(conn: psycopg.Connection[Any], schema: str, events: int) -> dict[str, Any]:
    """Rows inserted and updated per table of the schema (a hypertable: over its chunks),
    per event, from pg_stat_user_tables once the writers have exited."""
    time.sleep(1.0)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        """
        SELECT coalesce(c.hypertable_name, s.relname) AS name,
               sum(s.n_tup_ins)::bigint, sum(s.n_tup_upd)::bigint
        FROM pg_stat_user_tables s
        LEFT JOIN timescaledb_information.chunks c
          ON c.chunk_schema = s.schemaname AND c.chunk_name = s.relname
        WHERE s.schemaname = %(schema)s OR c.hypertable_schema = %(schema)s
        GROUP BY 1
        HAVING sum(s.n_tup_ins) + sum(s.n_tup_upd) > 0
        ORDER BY 1
        """,
        {"schema": schema},
    ).fetchall()
    tables = {
        str(name): {
            "inserted_per_event": round(int(ins) / events, 3),
            "updated_per_event": round(int(upd) / events, 3),
        }
        for name, ins, upd in rows
    }
    total = sum(int(ins) + int(upd) for _, ins, upd in rows)
    return {"tables": tables, "row_writes_per_event": round(total / events, 3)}


def topics_of(topic: str) -> dict[str, int]:
    return {topic: PARTITIONS, f"{topic}.dlq": 1, f"{topic}.updates": PARTITIONS}


# --- scale ---------------------------------------------------------------------------------


async def preload(
    topic: str, n: int, oracle: Oracle, meter: CpuMeter, console: Console
) -> dict[str, Any]:
    """N events of bench/aggregator.py's workload; the broker's CPU per event produced."""
    run, now, rng = uuid.uuid4().hex[:8], datetime.now(UTC), random.Random(1)
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
        compression_type="gzip",
    )
    await producer.start()
    before = meter.sample()
    started = time.perf_counter()
    size = 0
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"producing {n:,} events to {topic}", total=n)
            pending = []
            for i in range(n):
                key, value = make_event(rng, i, now, run, behind=3600 * (1 - i / n))
                size += len(key) + len(value)
                oracle.add(value)
                pending.append(await producer.send(topic, value=value, key=key))
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    pending = []
                    progress.update(task, completed=i + 1)
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    seconds = time.perf_counter() - started
    after = meter.sample()
    return {
        "events": n,
        "seconds": round(seconds, 2),
        "events_per_s": round(n / seconds),
        "bytes_per_event": round(size / n),
        "broker_cpu_us_per_event": round((after["broker"] - before["broker"]) / n * 1e6, 1),
        "producer_cpu_us_per_event": round((after["bench"] - before["bench"]) / n * 1e6, 1),
        "note": "producer: this script (aiokafka, acks=all, idempotent, gzip, linger 20 ms), "
        "which also builds the events and feeds the oracle",
    }


def at_fraction(samples: list[tuple[float, int, dict[str, float]]], count: float) -> int:
    """Index of the first sample with at least `count` events committed."""
    return next(i for i, (_, c, _) in enumerate(samples) if c >= count)


async def scale_run(
    k: int,
    topic: str,
    total: int,
    oracle: Oracle,
    infra: tuple[int | None, int | None],
    logs: Path,
    console: Console,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    schema, group = f"bench_scale_{run}", f"bench-scale-{run}"
    conn = prepare_schema(schema, KPIS)
    console.log(f"{k} process(es): schema {schema} ready")
    meter = CpuMeter(*infra)
    fleet = Fleet(schema, group, topic, meter, logs / f"scale-{k}")
    fleet.logs.mkdir(parents=True, exist_ok=True)
    keep = False
    try:
        lsn = wal_lsn(conn)
        samples: list[tuple[float, int, dict[str, float]]] = [
            (time.perf_counter(), 0, meter.sample())
        ]
        for _ in range(k):
            fleet.spawn()
        spawned = time.perf_counter()
        deadline = spawned + 900
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{k} aggregator process(es)", total=total)
            while time.perf_counter() < deadline:
                await asyncio.sleep(0.25)
                done = sum(stored_offsets(conn, group).values())
                samples.append((time.perf_counter(), done, meter.sample()))
                progress.update(task, completed=done)
                for w in fleet.workers:
                    await fleet.ready(w)
                if done >= total:
                    break
                if any(w.proc.poll() is not None for w in fleet.workers):
                    raise RuntimeError(f"an aggregator exited; logs in {fleet.logs}")
        t_done, done, _ = samples[-1]
        if done < total:
            raise RuntimeError(f"only {done:,} of {total:,} events committed in 900 s")
        wal = wal_bytes(conn, lsn)
        for w in fleet.workers:
            await fleet.scrape(w)
        moving = [s for s in samples if s[1] > 0]
        (t_first, c_first, _), (t_last, c_last, _) = moving[0], moving[-1]
        i10, i90 = at_fraction(samples, 0.1 * total), at_fraction(samples, 0.9 * total)
        (t10, c10, cpu10), (t90, c90, cpu90) = samples[i10], samples[i90]
        steady = (c90 - c10) / (t90 - t10)
        figures: dict[str, Any] = {
            "processes": k,
            "events": total,
            "wall_s": round(t_done - spawned, 2),
            "events_per_s_wall": round(total / (t_done - spawned)),
            "first_commit_after_s": round(t_first - spawned, 2),
            "all_ready_after_s": (
                round(max(w.ready_at for w in fleet.workers if w.ready_at) - spawned, 2)
                if all(w.ready_at for w in fleet.workers)
                else None
            ),
            "events_per_s_sustained": round((c_last - c_first) / (t_last - t_first)),
            "events_per_s_steady": round(steady),
            "steady_window": {"from_events": c10, "to_events": c90, "seconds": round(t90 - t10, 2)},
            "cpu_us_per_event_steady": cpu_between(cpu10, cpu90, c90 - c10),
            "cpu_us_per_event_whole_run": cpu_between(samples[0][2], samples[-1][2], total),
            "cpu_s_per_process": meter.per_aggregator(),
            "other_processes": meter.others(),
            "machine_cpu_s_by_mode": meter.modes(),
            "per_process": [
                {
                    "events_applied": int(w.metrics.get("events_applied", 0)),
                    "batches": int(w.metrics.get("batches", 0)),
                    "commit_seconds": round(w.metrics.get("commit_seconds", 0.0), 2),
                    "duplicates_dropped": int(w.metrics.get("duplicates_dropped", 0)),
                    "cardinality_folds": int(w.metrics.get("cardinality_folds", 0)),
                }
                for w in fleet.workers
            ],
        }
        console.log(f"{k} process(es): all {total:,} events committed; stopping")
        for w in fleet.workers:
            await fleet.stop(w)
        if failed := fleet.failed():
            raise RuntimeError(f"aggregator(s) failed: {failed}")
        console.log(f"{k} process(es): stopped; checking against the oracle")
        figures["wal_bytes_per_event"] = round(wal / total)
        figures["writes"] = rows_written(conn, schema, total)
        figures["exactness"] = verify(conn, oracle)
        console.log(f"{k} process(es): checked")
        keep = KEEP_FAILED and not figures["exactness"]["exact"]
        return figures
    finally:
        await fleet.close()
        conn.close()
        if keep:
            console.print(f"kept schema {schema} (group {group}) for inspection")
        else:
            drop_schemas(BaseServiceSettings(database_url=DATABASE_URL), schema)


# --- rebalance under load ------------------------------------------------------------------


@dataclass
class Probe:
    partition: int
    sent: float
    visible: float | None = None


async def rebalance_run(
    leave: str,
    args: argparse.Namespace,
    infra: tuple[int | None, int | None],
    logs: Path,
    console: Console,
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    schema, group = f"bench_rebal_{run}", f"bench-rebal-{run}"
    topic = f"bench.{run}.events.v1"
    await ensure_topics(BaseServiceSettings(database_url=DATABASE_URL), topics_of(topic))
    definitions = [*KPIS, PROBE_KPI]
    oracle = Oracle(definitions)
    conn = prepare_schema(schema, definitions)
    console.log(f"rebalance ({leave}): schema {schema} ready")
    meter = CpuMeter(*infra)
    fleet = Fleet(schema, group, topic, meter, logs / f"rebalance-{leave}")
    fleet.logs.mkdir(parents=True, exist_ok=True)
    offsets = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await offsets.start()
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    seconds: float = args.rebalance_seconds
    join_at, leave_at = seconds / 3, 2 * seconds / 3
    probes: list[Probe] = []
    timeline: list[tuple[float, int, int, int]] = []  # t, produced, lag, max partition lag
    sent = 0
    events: dict[str, Any] = {}
    keep = False
    try:
        first = [fleet.spawn(), fleet.spawn()]
        wait_until = time.perf_counter() + 60
        while not all([await fleet.ready(w) for w in first]):
            if time.perf_counter() > wait_until:
                raise RuntimeError(f"aggregators not ready in 60 s; logs in {fleet.logs}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # let the group settle
        cpu0 = meter.sample()
        t0 = time.perf_counter()
        origin = (datetime.now(UTC) - timedelta(minutes=1)).replace(second=0, microsecond=0)
        rng = random.Random(3)
        stop_producing = asyncio.Event()

        async def produce() -> None:
            nonlocal sent
            tick = 0.1
            per_tick = max(0, int(args.rate * tick) - 1)
            n = 0
            while (elapsed := time.perf_counter() - t0) < seconds:
                now = datetime.now(UTC)
                for _ in range(per_tick):
                    key, value = make_event(rng, n, now, run)
                    oracle.add(value)
                    await producer.send(topic, value=value, key=key)
                    n += 1
                    sent += 1
                partition = len(probes) % PARTITIONS
                probe = {
                    "id": f"{run}-probe-{len(probes)}",
                    "type": "bench_probe",
                    "source": "bench",
                    "time": now,
                    "received_at": now,
                    "properties": {"partition": str(partition)},
                }
                value = orjson.dumps(probe, option=orjson.OPT_UTC_Z)
                oracle.add(value)
                probes.append(Probe(partition, time.perf_counter()))
                await producer.send(topic, value=value, key=b"probe", partition=partition)
                sent += 1
                ticks = math.floor(elapsed / tick) + 1
                await asyncio.sleep(max(0.0, t0 + ticks * tick - time.perf_counter()))
            await producer.flush()
            events["producer_stopped_s"] = round(time.perf_counter() - t0, 2)
            stop_producing.set()

        async def changes() -> None:
            await asyncio.sleep(max(0.0, t0 + join_at - time.perf_counter()))
            third = fleet.spawn()
            events["join_s"] = round(third.started - t0, 2)
            await asyncio.sleep(max(0.0, t0 + leave_at - time.perf_counter()))
            leaving = fleet.workers[0]
            await fleet.scrape(leaving)
            events["leave_s"] = round(time.perf_counter() - t0, 2)
            sig = signal.SIGTERM if leave == "term" else signal.SIGKILL
            events["leave_exit_s"] = round(await fleet.stop(leaving, sig), 2)

        async def poll() -> None:
            names = ", ".join(
                f"kpi_value('probe_by_partition', %(lo)s, now() + interval '1 minute', "
                f'\'{{"properties.partition": "{p}"}}\'::jsonb)'
                for p in range(PARTITIONS)
            )
            counted = [0] * PARTITIONS
            by_partition: list[list[Probe]] = [[] for _ in range(PARTITIONS)]
            drained = False
            with Progress(console=console, transient=True) as progress:
                task = progress.add_task(f"rebalance ({leave})", total=seconds)
                while not drained and time.perf_counter() - t0 < seconds + args.drain_timeout:
                    await asyncio.sleep(0.2)
                    now = time.perf_counter()
                    row = conn.execute(f"SELECT {names}", {"lo": origin}).fetchone()
                    for queue in by_partition:
                        queue.clear()
                    for probe in probes:
                        by_partition[probe.partition].append(probe)
                    for p in range(PARTITIONS):
                        visible = int(row[p] or 0) if row else 0
                        while counted[p] < min(visible, len(by_partition[p])):
                            by_partition[p][counted[p]].visible = now
                            counted[p] += 1
                    stored = stored_offsets(conn, group)
                    ends = await end_offsets(offsets, topic)
                    lags = [max(0, ends[p] - stored.get(p, 0)) for p in range(PARTITIONS)]
                    timeline.append((now - t0, sent, sum(lags), max(lags)))
                    progress.update(
                        task,
                        completed=min(now - t0, seconds),
                        description=f"rebalance ({leave}): lag {sum(lags):,}",
                    )
                    drained = (
                        stop_producing.is_set()
                        and sum(lags) == 0
                        and all(p.visible is not None for p in probes)
                    )
                    for w in fleet.workers:
                        if w is not fleet.workers[0]:
                            await fleet.ready(w)

        await asyncio.gather(produce(), changes(), poll())
        third = fleet.workers[2]
        if third.ready_at is not None:
            events["join_ready_after_s"] = round(third.ready_at - third.started, 2)
        stopped = float(events.get("producer_stopped_s", seconds))
        end_t, _, end_lag, _ = timeline[-1]
        cpu1 = meter.sample()
        for w in fleet.workers[1:]:
            await fleet.scrape(w)
        result = summarize_rebalance(
            leave, seconds, join_at, leave_at, probes, timeline, t0, events, args.rate
        )
        result["drained"] = end_lag == 0
        result["drain_after_producer_stopped_s"] = round(end_t - stopped, 2)
        result["events_sent"] = sent
        result["cpu_us_per_event"] = cpu_between(cpu0, cpu1, sent)
        result["other_processes"] = meter.others()
        result["machine_cpu_s_by_mode"] = meter.modes()
        result["per_process"] = [
            {
                "role": ("left" if i == 0 else "stayed" if i == 1 else "joined"),
                "events_applied": int(w.metrics.get("events_applied", 0)),
                "duplicates_dropped": int(w.metrics.get("duplicates_dropped", 0)),
                "cardinality_folds": int(w.metrics.get("cardinality_folds", 0)),
            }
            for i, w in enumerate(fleet.workers)
        ]
        console.log(f"rebalance ({leave}): drained; stopping")
        for w in fleet.workers[1:]:
            await fleet.stop(w)
        console.log(f"rebalance ({leave}): stopped; checking against the oracle")
        if failed := fleet.failed():
            raise RuntimeError(f"aggregator(s) failed: {failed}")
        result["exactness"] = verify(conn, oracle)
        console.log(f"rebalance ({leave}): checked")
        keep = KEEP_FAILED and not result["exactness"]["exact"]
        return result
    finally:
        await producer.stop()
        await offsets.stop()
        await fleet.close()
        conn.close()
        if keep:
            console.print(f"kept schema {schema} (group {group}) for inspection")
        else:
            drop_schemas(BaseServiceSettings(database_url=DATABASE_URL), schema)
        await delete_topics(*topics_of(topic))


def summarize_rebalance(
    leave: str,
    seconds: float,
    join_at: float,
    leave_at: float,
    probes: list[Probe],
    timeline: list[tuple[float, int, int, int]],
    t0: float,
    events: dict[str, Any],
    rate: int,
) -> dict[str, Any]:
    """Lag and freshness per phase. A change disturbs when the lag passes max(1 s of events,
    2 x the steady phase's p95 lag) or a probe takes longer than max(1 s, 2 x the steady
    p95 freshness); recovered = the last such moment in its phase (probes sent up to 5 s
    before the next change), from the change: for the join from the third process's start
    and from the moment it had partitions (ready), for the leave from the signal."""
    fresh = [(p.sent - t0, (p.visible or math.inf) - p.sent) for p in probes]
    warm = 3.0
    join = float(events.get("join_s", join_at))
    gone = float(events.get("leave_s", leave_at))
    base = [f for t, f in fresh if warm <= t < join]
    late_s = max(1.0, 2 * percentile(base, 0.95)) if base else 1.0
    base_lags = [float(lag) for t, _, lag, _ in timeline if warm <= t < join]
    high_lag = max(float(rate), 2 * percentile(base_lags, 0.95) if base_lags else 0.0)

    def phase(lo: float, hi: float, changes: dict[str, float] | None) -> dict[str, Any]:
        points = [(t, lag, mx) for t, _, lag, mx in timeline if lo <= t < hi]
        lags = [lag for _, lag, _ in points]
        ours = [(t, f) for t, f in fresh if lo <= t < hi]
        values = [f for _, f in ours]
        out: dict[str, Any] = {
            "from_s": round(lo, 1),
            "to_s": round(hi, 1),
            "lag_max": max(lags, default=0),
            "lag_p50": int(percentile([float(x) for x in lags], 0.5)) if lags else 0,
            "partition_lag_max": max((mx for _, _, mx in points), default=0),
            "freshness_p50_s": round(percentile(values, 0.5), 3) if values else None,
            "freshness_p95_s": round(percentile(values, 0.95), 3) if values else None,
            "freshness_max_s": round(max(values), 3) if values else None,
            "probes": len(values),
        }
        if changes:
            high = [t for t, lag, _ in points if lag > high_lag]
            late = [t + f for t, f in ours if f > late_s and t < hi - 5]
            out["late_probes"] = len(late)
            for name, at in changes.items():
                out[f"lag_recovered_after_{name}_s"] = (
                    round(max(0.0, max(high) + 0.2 - at), 2) if high else 0.0
                )
                out[f"freshness_recovered_after_{name}_s"] = (
                    round(max(0.0, max(late) - at), 2) if late else 0.0
                )
        return out

    join_changes = {"start": join}
    if "join_ready_after_s" in events:
        join_changes["ready"] = join + float(events["join_ready_after_s"])
    return {
        "left_by": "SIGTERM" if leave == "term" else "SIGKILL",
        "rate_events_per_s": rate,
        "seconds": seconds,
        "timeline_s": {
            "third_started": join,
            "first_stopped": gone,
            "producer_stopped": events.get("producer_stopped_s", seconds),
        },
        **{k: v for k, v in events.items() if k not in ("join_s", "leave_s", "producer_stopped_s")},
        "late_probe_s": round(late_s, 3),
        "high_lag": round(high_lag),
        "steady": phase(warm, join, None),
        "join": phase(join, gone, join_changes),
        "leave": phase(gone, seconds, {"signal": gone}),
        "drain": phase(seconds, math.inf, None),
        "lag_per_second": [
            max(lag for t, _, lag, _ in timeline if s <= t < s + 1)
            for s in range(int(timeline[-1][0]) + 1)
            if any(s <= t < s + 1 for t, _, _, _ in timeline)
        ],
        "samples": {
            "lag": [[round(t, 2), lag] for t, _, lag, _ in timeline],
            "probes": [[round(t, 2), round(f, 3) if f != math.inf else None] for t, f in fresh],
        },
    }


# --- main ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def summarize_scale(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per process count: the median over its repeats of each rate and CPU cost."""
    out = []
    for k in sorted({r["processes"] for r in runs}):
        mine = [r for r in runs if r["processes"] == k]
        cpu = {
            c: round(median([r["cpu_us_per_event_steady"][c] for r in mine]), 1)
            for c in (*COMPONENTS, "other", "machine_total")
        }
        cpu["machine_busy_fraction"] = round(
            median([r["cpu_us_per_event_steady"]["machine_busy_fraction"] or 0 for r in mine]), 3
        )
        out.append(
            {
                "processes": k,
                "runs": len(mine),
                "events_per_s_steady": round(median([r["events_per_s_steady"] for r in mine])),
                "events_per_s_steady_all": [r["events_per_s_steady"] for r in mine],
                "events_per_s_sustained": round(
                    median([r["events_per_s_sustained"] for r in mine])
                ),
                "events_per_s_wall": round(median([r["events_per_s_wall"] for r in mine])),
                "cpu_us_per_event_steady": cpu,
                "wal_bytes_per_event": round(median([r["wal_bytes_per_event"] for r in mine])),
                "row_writes_per_event": round(
                    median([r["writes"]["row_writes_per_event"] for r in mine]), 2
                ),
                "exact": all(r["exactness"]["exact"] for r in mine),
            }
        )
    return out


def verdict(summary: list[dict[str, Any]], cpus: int) -> str:
    one = next((r for r in summary if r["processes"] == 1), None)
    if one is None or len(summary) < 2:
        return ""
    ratios = ", ".join(
        f"{r['processes']} processes {r['events_per_s_steady'] / one['events_per_s_steady']:.2f}x"
        for r in summary
        if r["processes"] != 1
    )
    busy = max(r["cpu_us_per_event_steady"]["machine_busy_fraction"] for r in summary)
    best = max(r["events_per_s_steady"] for r in summary) / one["events_per_s_steady"]
    if best < 1.5:
        return (
            f"On {cpus} cores with the broker and the database on the same cores, more "
            f"aggregator processes mostly compete for the same CPU: {ratios} the events/s of "
            f"one (steady window, median of runs), with the machine up to {busy:.0%} busy."
        )
    return (
        f"On {cpus} cores: {ratios} the events/s of one (steady window, median of runs), the "
        f"machine up to {busy:.0%} busy."
    )


def print_scale(runs: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="aggregator processes on one 6-partition topic (20 KPIs, exactly-once)")
    for column in (
        "processes",
        "wall s",
        "events/s wall",
        "events/s sustained",
        "events/s steady",
        "CPU µs/event agg",
        "postgres",
        "broker",
        "other",
        "machine busy",
        "exact",
    ):
        table.add_column(column, justify="right")
    for r in runs:
        cpu = r["cpu_us_per_event_steady"]
        table.add_row(
            str(r["processes"]),
            f"{r['wall_s']:.1f}",
            f"{r['events_per_s_wall']:,}",
            f"{r['events_per_s_sustained']:,}",
            f"{r['events_per_s_steady']:,}",
            f"{cpu['aggregators']:.0f}",
            f"{cpu['postgres']:.0f}",
            f"{cpu['broker']:.0f}",
            f"{cpu['other'] + cpu['bench']:.0f}",
            f"{cpu['machine_busy_fraction']:.0%}",
            f"yes ({r['exactness']['checks']})" if r["exactness"]["exact"] else "NO",
        )
    console.print(table)


def print_rebalance(result: dict[str, Any], console: Console) -> None:
    table = Table(title=f"rebalance under load, {result['rate_events_per_s']:,} events/s, "
                        f"one leaves by {result['left_by']}")  # fmt: skip
    for column in ("phase", "lag max", "partition lag max", "fresh p50 s", "p95 s", "max s",
                   "lag recovered s", "fresh again s"):  # fmt: skip
        table.add_column(column, justify="right")
    for name in ("steady", "join", "leave"):
        p = result[name]
        table.add_row(
            f"{name} [{p['from_s']}, {p['to_s']}) s",
            f"{p['lag_max']:,}",
            f"{p['partition_lag_max']:,}",
            str(p["freshness_p50_s"]),
            str(p["freshness_p95_s"]),
            str(p["freshness_max_s"]),
            " / ".join(str(v) for k, v in p.items() if k.startswith("lag_recovered_after")),
            " / ".join(str(v) for k, v in p.items() if k.startswith("freshness_recovered_after")),
        )
    console.print(table)
    console.print(
        "recovered: join from the third process's start / from its assignment "
        f"({result.get('join_ready_after_s')} s after its start); leave from the signal",
        highlight=False,
    )
    exact = result["exactness"]
    console.print(
        f"drained {result['drain_after_producer_stopped_s']} s after the producer stopped; "
        f"exact: {'yes' if exact['exact'] else 'NO'} ({exact['checks']} checks, "
        f"{exact['events_rows']:,} event rows of {exact['events_sent']:,} sent)",
        highlight=False,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--processes", default="1,2,3", help="comma-separated process counts")
    parser.add_argument(
        "--repeat", type=int, default=2, help="rounds over --processes (medians are reported)"
    )
    parser.add_argument("--rate", type=int, default=3000, help="events/s in the rebalance runs")
    parser.add_argument("--rebalance-seconds", type=float, default=60.0)
    parser.add_argument(
        "--leave", default="term,kill", help="rebalance variants: term (SIGTERM), kill (SIGKILL)"
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--no-rebalance", action="store_true")
    parser.add_argument("--no-scale", action="store_true")
    parser.add_argument("--log-level", default="WARNING", help="of the aggregator processes")
    parser.add_argument(
        "--keep-failed", action="store_true", help="keep the schema of a run that is not exact"
    )
    args = parser.parse_args()
    Fleet.log_level = args.log_level
    global KEEP_FAILED
    KEEP_FAILED = args.keep_failed
    counts = [int(x) for x in args.processes.split(",") if x.strip()]
    leaves = [] if args.no_rebalance else [x.strip() for x in args.leave.split(",") if x.strip()]
    if any(x not in ("term", "kill") for x in leaves):
        parser.error("--leave: term and/or kill")
    console = Console(width=None if sys.stdout.isatty() else 140)
    load_before = load_average()
    probe_before = speed_probe()
    infra = infra_pids()
    console.print(f"postmaster pid {infra[0]}, broker pid {infra[1]}", highlight=False)
    logs = Path(tempfile.mkdtemp(prefix="pacekeeper-scale-out-"))
    layout = database_status(BaseServiceSettings(database_url=DATABASE_URL)).summary()
    result: dict[str, Any] = {
        "benchmark": "scale_out",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/scale_out.py", *sys.argv[1:]]),
        "partitions": PARTITIONS,
        "kpi_definitions": len(KPIS),
        "database": layout,
    }
    scale: list[dict[str, Any]] = []
    if not args.no_scale:
        topic = f"bench.{uuid.uuid4().hex[:8]}.events.v1"
        await ensure_topics(BaseServiceSettings(database_url=DATABASE_URL), {topic: PARTITIONS})
        oracle = Oracle(KPIS)
        try:
            produced = await preload(topic, args.events, oracle, CpuMeter(*infra), console)
            console.print(
                f"produced {args.events:,} events in {produced['seconds']} s; broker "
                f"{produced['broker_cpu_us_per_event']} CPU µs per event produced",
                highlight=False,
            )
            result["produce"] = produced
            raw = await raw_consumer_rate(topic, args.events)
            result["raw_consumer_events_per_s"] = round(raw)
            console.print(
                f"raw consumer (read + orjson decode, bench/aggregator.py's): {raw:,.0f} events/s",
                highlight=False,
            )
            consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP)
            await consumer.start()
            try:
                total = sum((await end_offsets(consumer, topic)).values())
            finally:
                await consumer.stop()
            for rep in range(args.repeat):
                for k in counts:
                    figures = await scale_run(k, topic, total, oracle, infra, logs, console)
                    figures["repeat"] = rep + 1
                    scale.append(figures)
                    cpu = figures["cpu_us_per_event_steady"]
                    console.print(
                        f"{k} process(es): {figures['events_per_s_steady']:,} events/s steady, "
                        f"{figures['events_per_s_sustained']:,} sustained, wall "
                        f"{figures['wall_s']} s; CPU µs/event: aggregators "
                        f"{cpu['aggregators']}, postgres {cpu['postgres']}, broker "
                        f"{cpu['broker']}, other {cpu['other']}; machine "
                        f"{cpu['machine_busy_fraction']:.0%} busy; exact: "
                        f"{figures['exactness']['exact']}",
                        highlight=False,
                    )
        finally:
            await delete_topics(*topics_of(topic))
        print_scale(scale, console)
        summary = summarize_scale(scale)
        result["scale_summary"] = summary
        one = next((r for r in summary if r["processes"] == 1), None)
        if one is not None:
            result["ratios_to_one"] = {
                f"{r['processes']}_to_1": {
                    key: round(r[key] / one[key], 3)
                    for key in (
                        "events_per_s_steady",
                        "events_per_s_sustained",
                        "events_per_s_wall",
                    )
                }
                for r in summary
                if r["processes"] != 1
            }
            for name, ratio in result["ratios_to_one"].items():
                console.print(f"{name.replace('_to_', ' ÷ ')} (medians): {ratio}", highlight=False)
        result["verdict"] = verdict(summary, os.cpu_count() or 0)
        if result["verdict"]:
            console.print(result["verdict"], highlight=False)
    result["scale"] = scale
    rebalance: list[dict[str, Any]] = []
    for leave in leaves:
        figures = await rebalance_run(leave, args, infra, logs, console)
        rebalance.append(figures)
        print_rebalance(figures, console)
    result["rebalance"] = rebalance
    result["machine"] = machine(
        load_before, speed_probe_ms_before=probe_before, speed_probe_ms_after=speed_probe()
    )
    result["aggregator_logs"] = str(logs)
    write_result(RESULTS, result)
    console.print(f"wrote {RESULTS}")
    exact = all(r["exactness"]["exact"] for r in [*scale, *rebalance])
    if not exact:
        console.print("[red]some totals were NOT exact; see the JSON[/red]")
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
