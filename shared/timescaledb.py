"""What the database runs for a schema: PostgreSQL and TimescaleDB versions, hypertables, and
the policy jobs (compression, retention, continuous-aggregate refresh) with their runs.

Read by `pacekeeper db-status` (which `make infra-up` calls to prove the policies run), by
the demo's start-up lines, and by the tests that watch the background scheduler. Also the
operations on a schema's aggregates and jobs that must cooperate with the scheduler:
refreshing aggregates (by hand, or after a backfill rewrote history) and dropping a schema.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from shared.db import make_sync_engine
from shared.settings import BaseServiceSettings

_VERSIONS = text(
    "SELECT current_setting('server_version'), current_schema(),"
    " (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')"
)
_HYPERTABLES = text(
    "SELECT hypertable_name FROM timescaledb_information.hypertables"
    " WHERE hypertable_schema = current_schema() ORDER BY hypertable_name"
)
# One row per policy job of this schema; a continuous aggregate's job names the view.
_POLICY_JOBS = text(
    """
    SELECT j.job_id, j.proc_name, j.hypertable_name, j.schedule_interval,
           s.last_run_status, coalesce(s.total_successes, 0), coalesce(s.total_failures, 0),
           nullif(s.last_successful_finish, '-infinity')
    FROM timescaledb_information.jobs j
    LEFT JOIN timescaledb_information.job_stats s USING (job_id)
    WHERE j.hypertable_schema = current_schema()
    ORDER BY j.job_id
    """
)


@dataclass(frozen=True, slots=True)
class PolicyJob:
    job_id: int
    policy: str  # policy_compression, policy_retention, policy_refresh_continuous_aggregate
    relation: str  # the hypertable or continuous aggregate it works on
    schedule: timedelta
    last_status: str | None  # Success / Failed; None before the first run
    successes: int
    failures: int
    last_success: datetime | None

    @property
    def label(self) -> str:
        kind = self.policy.removeprefix("policy_").removesuffix("_continuous_aggregate")
        return f"{kind} {self.relation}"


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    server_version: str
    schema: str
    timescaledb: str | None  # the extension's version; None on plain PostgreSQL
    hypertables: tuple[str, ...]
    jobs: tuple[PolicyJob, ...]

    @property
    def failed(self) -> tuple[PolicyJob, ...]:
        return tuple(j for j in self.jobs if j.failures)

    @property
    def policies_proven(self) -> bool:
        """Every policy job has succeeded at least once and none has ever failed."""
        return bool(self.jobs) and not self.failed and all(j.successes for j in self.jobs)

    def summary(self) -> str:
        server = f"PostgreSQL {self.server_version.split()[0]}"
        if self.timescaledb is None:
            return f"{server}, plain tables (no TimescaleDB extension)"
        return (
            f"{server} with TimescaleDB {self.timescaledb}: hypertables "
            f"{', '.join(self.hypertables) or 'none'}; {len(self.jobs)} policy "
            f"job{'' if len(self.jobs) == 1 else 's'}"
        )


def read_status(conn: Connection) -> DatabaseStatus:
    server, schema, extension = conn.execute(_VERSIONS).one()
    if extension is None:
        return DatabaseStatus(server, schema, None, (), ())
    hypertables = tuple(r[0] for r in conn.execute(_HYPERTABLES))
    jobs = tuple(PolicyJob(*row) for row in conn.execute(_POLICY_JOBS))
    return DatabaseStatus(server, schema, extension, hypertables, jobs)


def database_status(settings: BaseServiceSettings) -> DatabaseStatus:
    engine = make_sync_engine(settings, application_name="pacekeeper-db-status")
    try:
        with engine.connect() as conn:
            return read_status(conn)
    finally:
        engine.dispose()


def wait_for_policies(
    settings: BaseServiceSettings, within: float, poll: float = 1.0
) -> DatabaseStatus:
    """The status once every policy job has succeeded at least once, or when one failed,
    or when `within` seconds have passed. New jobs run within seconds of their creation."""
    deadline = time.monotonic() + within
    while True:
        status = database_status(settings)
        if status.policies_proven or status.failed or time.monotonic() >= deadline:
            return status
        time.sleep(poll)


# The continuous aggregates over kpi_points and their bucket widths in seconds.
AGGREGATES: dict[str, int] = {"kpi_points_hourly": 3600, "kpi_points_daily": 86400}

_REFRESH = "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, %s::timestamptz)"
_EXISTS = "SELECT to_regclass(%s)"


def _while_policy_refreshes(within: float) -> dict[str, Any]:
    """TimescaleDB refuses a refresh while a policy job refreshes the same aggregate instead
    of waiting for it, and a new policy starts at once: wait and try again (a job ends in
    seconds). SQLAlchemy wraps the driver's error, so look at the cause too."""

    def busy(exc: BaseException) -> bool:
        cause = getattr(exc, "orig", exc)
        return isinstance(cause, psycopg.errors.LockNotAvailable)

    return {
        "retry": retry_if_exception(busy),
        "wait": wait_random_exponential(multiplier=0.2, max=5),
        "stop": stop_after_delay(within),
        "reraise": True,
    }


def refresh_aggregate(
    conn: psycopg.Connection[Any],
    view: str,
    lo: datetime | None = None,
    hi: datetime | None = None,
    *,
    within: float = 120.0,
) -> None:
    """CALL refresh_continuous_aggregate over [lo, hi) (None: unbounded) on an autocommit
    connection."""
    for attempt in Retrying(**_while_policy_refreshes(within)):
        with attempt:
            conn.execute(_REFRESH, (view, lo, hi))


async def rematerialize(
    engine: AsyncEngine, lo: datetime, hi: datetime, *, within: float = 600.0
) -> None:
    """On TimescaleDB, refresh every aggregate over [lo, hi) after its underlying minutes
    were rewritten (plain PostgreSQL has none). A refresh only rewrites buckets wholly
    inside its window, so the window is widened to whole buckets: the edge hour or day is
    partly recomputed too."""
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for view, width in AGGREGATES.items():
            if (await autocommit.exec_driver_sql(_EXISTS, (view,))).scalar() is None:
                continue
            start = datetime.fromtimestamp(lo.timestamp() // width * width, UTC)
            end = datetime.fromtimestamp(-(-hi.timestamp() // width) * width, UTC)
            async for attempt in AsyncRetrying(**_while_policy_refreshes(within)):
                with attempt:
                    await autocommit.exec_driver_sql(_REFRESH, (view, start, end))


_JOBS_OF = text(
    "SELECT job_id, application_name FROM timescaledb_information.jobs"
    " WHERE hypertable_schema = :schema"
    " AND (CAST(:relations AS text[]) IS NULL OR hypertable_name = ANY(:relations))"
)
_PAUSE = text("SELECT alter_job(:id, scheduled => false)")
_CANCEL = text(
    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = ANY(:names)"
)
_DELETE = text("SELECT delete_job(:id)")
# A worker is visible in pg_stat_activity under its job's name; in the moment between the
# scheduler marking a run as started and the worker showing up, only job_stats tells.
_RUNNING = text(
    "SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY(:names))"
    " + (SELECT count(*) FROM timescaledb_information.job_stats WHERE job_id = ANY(:ids)"
    "    AND job_status = 'Running' AND last_run_started_at > now() - interval '10 seconds')"
)


def retire_jobs(
    conn: Connection,
    schema: str,
    relations: tuple[str, ...] | None = None,
    *,
    within: float = 30.0,
) -> None:
    """Delete the policy jobs of `relations` in `schema` (None: all of them) once no run of
    theirs is in flight. Call it before dropping what the jobs work on.

    Dropping a continuous aggregate while its refresh policy runs, or is just starting, can
    crash that worker (TimescaleDB 2.28.3: signal 11, which restarts the whole server). So
    the jobs are paused and their runs cancelled first; the jobs are deleted only once no
    run has been seen twice in a row, 0.1 s apart (the scheduler may still be launching a
    run it chose before the pause). Commits as it goes; on an AUTOCOMMIT connection (an
    Alembic autocommit block) every statement is its own transaction already."""
    autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"

    def fresh() -> None:  # end the transaction: the next read sees a new snapshot
        if not autocommit:
            conn.commit()

    params = {"schema": schema, "relations": list(relations) if relations else None}
    jobs = conn.execute(_JOBS_OF, params).all()
    if not jobs:
        return
    names = [name for _id, name in jobs]
    ids = [job_id for job_id, _name in jobs]
    for job_id in ids:
        conn.execute(_PAUSE, {"id": job_id})
    fresh()
    deadline = time.monotonic() + within
    quiet = 0
    while quiet < 2:
        fresh()
        if conn.execute(_RUNNING, {"names": names, "ids": ids}).scalar():
            quiet = 0
            conn.execute(_CANCEL, {"names": names})
            if time.monotonic() > deadline:
                raise TimeoutError(f"policy jobs of schema {schema} still running: {names}")
        else:
            quiet += 1
        if quiet < 2:
            time.sleep(0.1)
    for job_id in ids:
        conn.execute(_DELETE, {"id": job_id})
    fresh()


def drop_schema(conn: Connection, schema: str, *, within: float = 30.0) -> None:
    """DROP SCHEMA … CASCADE, its policy jobs retired first (see `retire_jobs`)."""
    has_extension = conn.execute(
        text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
    ).scalar()
    if has_extension:
        retire_jobs(conn, schema, within=within)
    quoted = conn.dialect.identifier_preparer.quote(schema)
    conn.execute(text(f"DROP SCHEMA IF EXISTS {quoted} CASCADE"))
    conn.commit()
