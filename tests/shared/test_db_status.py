"""The verdict `pacekeeper db-status` gives on the policy jobs it read."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.timescaledb import DatabaseStatus, PolicyJob

pytestmark = pytest.mark.unit


def job(
    job_id: int, successes: int, failures: int, policy: str = "policy_compression"
) -> PolicyJob:
    return PolicyJob(job_id, policy, "events", timedelta(hours=12), None, successes, failures, None)


def status(*jobs: PolicyJob, extension: str | None = "2.28.3") -> DatabaseStatus:
    return DatabaseStatus("15.20 (Debian 15.20-0+deb12u1)", "public", extension, ("events",), jobs)


def test_proven_once_every_job_succeeded_and_none_failed() -> None:
    assert status(job(1, 1, 0), job(2, 3, 0)).policies_proven
    assert not status(job(1, 1, 0), job(2, 0, 0)).policies_proven  # one has not run yet
    assert not status().policies_proven  # no policies at all proves nothing


def test_one_failure_is_never_forgotten() -> None:
    failing = status(job(1, 5, 0), job(2, 7, 1, "policy_retention"))
    assert not failing.policies_proven
    assert [j.label for j in failing.failed] == ["retention events"]


def test_summary_names_versions_and_plain_tables() -> None:
    assert status(job(1, 1, 0)).summary() == (
        "PostgreSQL 15.20 with TimescaleDB 2.28.3: hypertables events; 1 policy job"
    )
    assert status(extension=None).summary() == (
        "PostgreSQL 15.20, plain tables (no TimescaleDB extension)"
    )
