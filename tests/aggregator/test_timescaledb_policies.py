"""TimescaleDB's background scheduler runs the policies of a schema by itself, and the KPI
functions stay exact on what the policies leave behind.

The test schema's policy jobs are made to run every few seconds (as they would over months
in production): the refresh policies materialize the hourly and daily aggregates, the
compression policies compress old chunks, the retention policy drops expired `events`
chunks. `kpi_value` / `kpi_series` must then equal a plain oracle over windows that span
compressed chunks, materialized hours and days, and raw minutes, and stay exact after the
real aggregator writes late events into compressed chunks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from tests.aggregator import oracle, workload
from tests.aggregator.conftest import settings_from
from tests.aggregator.helpers import running
from tests.conftest import Topics

pytestmark = pytest.mark.integration

Conn = psycopg.Connection[tuple[Any, ...]]
DAYS = 100
STRIDE = 7  # a point every 7 minutes: every hour and day has some, none has all
SOURCES = ("web", "app")
RETAIN = timedelta(days=90)

# Per-minute points written the way the aggregator stores them, one KPI per mergeable column.
POINT_KPIS = {
    "p_count": {"kind": "count", "event": "p", "dimensions": ["source"]},
    "p_sum": {"kind": "sum", "event": "p", "field": "properties.v", "dimensions": ["source"]},
    "p_min": {"kind": "min", "event": "p", "field": "properties.v", "dimensions": ["source"]},
    "p_max": {"kind": "max", "event": "p", "field": "properties.v", "dimensions": ["source"]},
    "p_avg": {"kind": "avg", "event": "p", "field": "properties.v", "dimensions": ["source"]},
}


@dataclass(frozen=True)
class Point:
    bucket: datetime
    source: str
    count: int
    sum: float
    min: float
    max: float


def history(now: datetime) -> list[Point]:
    start = (now - timedelta(days=DAYS)).replace(hour=0, minute=0)
    out = []
    for i in range(0, DAYS * 1440, STRIDE):
        bucket = start + timedelta(minutes=i)
        if bucket >= now:
            break
        for k, source in enumerate(SOURCES):
            out.append(
                Point(bucket, source, i % 5 + 1 + k, (i % 13) * 1.5 + k, i % 7 + k, i % 11 + 10)
            )
    return out


def expected(
    kpi: str, points: list[Point], lo: datetime, hi: datetime, source: str | None = None
) -> float | None:
    """The plain oracle: what the raw per-minute points say about [lo, hi)."""
    inside = [p for p in points if lo <= p.bucket < hi and source in (None, p.source)]
    if kpi == "p_count":
        return float(sum(p.count for p in inside))
    if kpi == "p_sum":
        return sum(p.sum for p in inside)
    if not inside:
        return None
    if kpi == "p_min":
        return min(p.min for p in inside)
    if kpi == "p_max":
        return max(p.max for p in inside)
    return sum(p.sum for p in inside) / sum(p.count for p in inside)


def same(actual: float | None, want: float | None) -> bool:
    return actual is None if want is None else actual == pytest.approx(want)


def wait_for(what: str, check: Callable[[], bool], within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")
        time.sleep(0.5)


def job_ids(conn: Conn, schema: str) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        "SELECT proc_name, hypertable_name, job_id FROM timescaledb_information.jobs"
        " WHERE hypertable_schema = %s",
        (schema,),
    )
    return {(r[0], r[1]): r[2] for r in rows}


def succeeded_since(conn: Conn, jobs: dict[tuple[str, str], int], since: datetime) -> bool:
    """Every job has finished a run successfully after `since`, and none ever failed."""
    rows = conn.execute(
        "SELECT job_id, coalesce(last_successful_finish > %s, false), total_failures"
        " FROM timescaledb_information.job_stats WHERE job_id = ANY(%s)",
        (since, list(jobs.values())),
    ).fetchall()
    failed = [r for r in rows if r[2]]
    assert not failed, f"policy jobs failed: {failed}"
    return len(rows) == len(jobs) and all(r[1] for r in rows)


def chunks(conn: Conn, schema: str, table: str) -> list[tuple[datetime, bool]]:
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT range_start, is_compressed FROM timescaledb_information.chunks"
            " WHERE hypertable_schema = %s AND hypertable_name = %s ORDER BY range_start",
            (schema, table),
        )
    ]


# What each policy is told, so that one run does in seconds what months of runs do: refresh
# over all history (in production they have refreshed since the first day), compress chunks
# older than an hour, drop events after 90 days.
CONFIG = {
    ("policy_retention", "events"): "jsonb_set(config, '{drop_after}', '\"90 days\"')",
    ("policy_compression", "events"): "jsonb_set(config, '{compress_after}', '\"01:00:00\"')",
    ("policy_compression", "kpi_points"): "jsonb_set(config, '{compress_after}', '\"01:00:00\"')",
    ("policy_refresh_continuous_aggregate", "kpi_points_hourly"): (
        "jsonb_set(config, '{start_offset}', 'null')"
    ),
    ("policy_refresh_continuous_aggregate", "kpi_points_daily"): (
        "jsonb_set(config, '{start_offset}', 'null')"
    ),
}


def run_now(conn: Conn, jobs: dict[tuple[str, str], int], *keys: tuple[str, str]) -> None:
    """Let the background scheduler start these jobs now, then wait for their success.
    One hypertable's jobs run one after the other, as their hours-apart schedules make
    them do in production: retention and compression of the same chunks at the same
    moment deadlock, and TimescaleDB then retries the loser later."""
    for key in keys:
        since = conn.execute("SELECT now()").fetchone()
        assert since is not None
        conn.execute(
            "SELECT alter_job(%s, scheduled => true, next_start => now(), config => (SELECT "
            + CONFIG[key]
            + " FROM _timescaledb_config.bgw_job WHERE id = %s))",
            (jobs[key], jobs[key]),
        )
        wait_for(
            f"{key} to run",
            lambda key=key, since=since[0]: succeeded_since(conn, {key: jobs[key]}, since),
        )


def store_history(conn: Conn, points: list[Point], now: datetime) -> int:
    for name, spec in POINT_KPIS.items():
        conn.execute(
            "INSERT INTO kpis (name, spec) VALUES (%s, %s::jsonb)",
            (name, orjson.dumps({"name": name, **spec}).decode()),
        )
    with conn.cursor().copy(
        "COPY kpi_points (kpi, dims, bucket, count, sum, min, max) FROM STDIN"
    ) as copy:
        for name in POINT_KPIS:
            for p in points:
                dims = orjson.dumps({"source": p.source}).decode()
                copy.write_row((name, dims, p.bucket, p.count, p.sum, p.min, p.max))
    # Raw events, one an hour, for the retention policy: the oldest ten days expire.
    conn.execute(
        "INSERT INTO events (time, source, id, type, properties, received_at)"
        " SELECT t, 'web', 'h-' || extract(epoch FROM t)::bigint, 'p', '{}'::jsonb, t"
        " FROM generate_series(%s::timestamptz, %s::timestamptz, interval '1 hour') AS t",
        (now - timedelta(days=DAYS), now - timedelta(days=1)),
    )
    expired = conn.execute(
        "SELECT count(*) FROM events WHERE time < %s", (now - RETAIN - timedelta(days=1),)
    ).fetchone()
    assert expired is not None
    return int(expired[0])


def assert_points_exact(
    conn: Conn, points: list[Point], windows: list[tuple[datetime, datetime]]
) -> int:
    checked = 0
    for name in POINT_KPIS:
        for source in (None, *SOURCES):
            dims = None if source is None else orjson.dumps({"source": source}).decode()
            for lo, hi in windows:
                row = conn.execute(
                    "SELECT kpi_value(%s, %s, %s, %s::jsonb)", (name, lo, hi, dims)
                ).fetchone()
                assert row is not None
                assert same(row[0], expected(name, points, lo, hi, source)), (name, source, lo, hi)
                checked += 1
    return checked


def assert_series_exact(
    conn: Conn, points: list[Point], lo: datetime, hi: datetime, step: timedelta
) -> None:
    for name in ("p_count", "p_max"):
        rows = conn.execute(
            "SELECT time, value FROM kpi_series(%s, %s, %s, %s)", (name, lo, hi, step)
        ).fetchall()
        assert rows, (name, lo, hi, step)
        for start, value in rows:
            end = min(start + step, hi)
            assert same(value, expected(name, points, max(start, lo), end)), (name, start)


async def test_policies_run_by_themselves_and_kpis_stay_exact(
    db: Conn,
    schema: str,
    service_env: dict[str, str],
    definitions_stored: None,
    topics: Topics,
    unique: str,
    kafka_bootstrap: str,
    database_url: str,
) -> None:
    conn = db
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # One-day chunks for KPI minutes too, so yesterday's is old enough to compress.
    conn.execute("SELECT set_chunk_time_interval('kpi_points', interval '1 day')")
    points = history(now)
    expired = store_history(conn, points, now)
    assert expired > 0

    jobs = job_ids(conn, schema)
    assert set(jobs) == set(CONFIG)
    run_now(conn, jobs, *CONFIG)
    horizon = now - timedelta(hours=2)
    for table in ("events", "kpi_points"):
        old = [
            done
            for start, done in chunks(conn, schema, table)
            if start < horizon - timedelta(days=1)
        ]
        assert old, table
        assert all(old), f"the compression policy left old {table} chunks uncompressed"
    assert chunks(conn, schema, "events")[0][0] >= now - RETAIN - timedelta(days=1)
    remaining = conn.execute(
        "SELECT count(*) FROM events WHERE time < %s", (now - RETAIN - timedelta(days=1),)
    )
    assert remaining.fetchone() == (0,), "the retention policy dropped no expired chunk"
    materialized = conn.execute(
        "SELECT (SELECT count(*) FROM kpi_points_hourly), (SELECT count(*) FROM kpi_points_daily)"
    ).fetchone()
    assert materialized is not None
    assert materialized[0] > (DAYS - 10) * 24 * len(POINT_KPIS)
    assert materialized[1] > (DAYS - 10) * len(POINT_KPIS)

    windows = [
        # compressed minutes at both edges, materialized hours and days between, raw minutes
        (now - timedelta(days=95, minutes=-17), now - timedelta(minutes=2)),
        (now - timedelta(days=45, hours=-3, minutes=-5), now - timedelta(days=9, minutes=7)),
        (now - timedelta(days=20, hours=5), now - timedelta(days=19, hours=1)),  # hours only
        (now - timedelta(hours=20, minutes=3), now + timedelta(minutes=1)),
    ]
    assert assert_points_exact(conn, points, windows) == len(POINT_KPIS) * 3 * len(windows)
    day0 = (now - timedelta(days=92)).replace(hour=0, minute=0)
    assert_series_exact(conn, points, day0, now, timedelta(days=1))
    assert_series_exact(conn, points, now - timedelta(days=9, hours=5), now, timedelta(hours=1))

    # Late events through the real aggregator into chunks the policy compressed: within
    # the allowed lateness, up to a week back.
    settings = settings_from(
        service_env,
        aggregator_group_id=unique,
        aggregator_topic_partitions=2,
        aggregator_batch_max_wait=0.1,
    )
    recent = workload.make_events(
        300, seed=5, base=now - timedelta(hours=1), span=timedelta(minutes=50)
    )
    late = workload.make_events(900, seed=6, base=now - timedelta(days=6), span=timedelta(days=5))
    compressed_before = {start for start, done in chunks(conn, schema, "kpi_points") if done}
    assert any(
        start <= e.time < start + timedelta(days=1) for e in late for start in compressed_before
    )
    stream = workload.deliveries(recent, seed=5) + workload.deliveries(late, seed=6)
    async with running(settings):
        await workload.produce(kafka_bootstrap, topics.events, stream)
        await workload.wait_consumed(
            database_url, schema, unique, topics.events, len(stream), within=120
        )
    truth = oracle.dedupe(stream)
    late_windows = [
        (now - timedelta(days=6, minutes=-13), now + timedelta(minutes=1)),
        (now - timedelta(days=4, hours=3), now - timedelta(days=2, minutes=29)),
    ]
    assert workload.assert_all_kpis_exact(database_url, schema, truth, late_windows) > 40
    stored = conn.execute("SELECT count(*) FROM events WHERE id LIKE '6-%%'").fetchone()
    assert stored == (len(late),)

    # The compression policy compresses the chunks the late events reopened, and every
    # answer stays the same.
    partial = (
        "SELECT count(*) FROM timescaledb_information.chunks c"
        " JOIN _timescaledb_catalog.chunk k ON k.table_name = c.chunk_name"
        " WHERE c.hypertable_schema = %s AND c.hypertable_name = 'kpi_points'"
        " AND c.is_compressed AND k.status & 8 <> 0"  # 8: partially compressed
    )
    reopened = conn.execute(partial, (schema,)).fetchone()
    assert reopened is not None
    assert reopened[0] > 0, "the late events landed in no compressed chunk"
    run_now(conn, jobs, ("policy_compression", "events"), ("policy_compression", "kpi_points"))
    still = conn.execute(partial, (schema,)).fetchone()
    assert still == (0,), "the compression policy left reopened chunks partly uncompressed"
    assert workload.assert_all_kpis_exact(database_url, schema, truth, late_windows) > 40
    assert assert_points_exact(conn, points, windows[:2]) == len(POINT_KPIS) * 3 * 2
