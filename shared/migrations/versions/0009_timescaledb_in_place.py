"""TimescaleDB for a database first migrated on plain PostgreSQL, converted in place

A database migrated while the timescaledb extension was missing has plain tables and
kpi_value reading per-minute points only. Once the extension exists in it (`CREATE
EXTENSION timescaledb`, as deploy/local/postgres.sh and the compose image do), this
revision gives it what a database created on TimescaleDB has, data included: the same
hypertables (rows moved into chunks), compression and retention, the hourly and daily
continuous aggregates materialized over all stored history, their refresh policies, and
pk_points reading them. It runs the TimescaleDB branches of 0001, 0004 and 0007, so both
paths build the same thing. Nothing to do on a database that already has them, or that
still has no extension.

Moving rows into chunks rewrites the tables under an exclusive lock: stop the services for
it on a large database (it takes about as long as copying the tables).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import has_timescaledb, revision_module

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _already_hypertables() -> bool:
    return bool(
        op.get_bind()
        .exec_driver_sql(
            "SELECT 1 FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'events'"
        )
        .scalar()
    )


def upgrade() -> None:
    if not has_timescaledb() or _already_hypertables():
        return
    revision_module("0001").timescaledb_layout(migrate_data=True)
    revision_module("0004").partition_state(migrate_data=True)
    # The plain pk_points makes way for the one that reads the hourly aggregate. SQL
    # functions that call it hold no dependency on it, so nothing else has to go.
    op.execute("DROP FUNCTION pk_points(text, timestamptz, timestamptz, jsonb)")
    revision_module("0004").points(timescale=True)
    # The hourly policy refreshes the last 10 days; all older history is materialized here
    # first. Its first run waits an hour, or TimescaleDB would refuse one of the two
    # refreshes of the same aggregate.
    op.execute(
        "SELECT alter_job(job_id, next_start => now() + interval '1 hour')"
        " FROM timescaledb_information.jobs WHERE hypertable_schema = current_schema()"
        " AND hypertable_name = 'kpi_points_hourly'"
    )
    with op.get_context().autocommit_block():
        op.execute(
            "CALL refresh_continuous_aggregate('kpi_points_hourly', NULL,"
            " date_trunc('hour', now() - interval '1 hour'))"
        )
    revision_module("0007").upgrade()  # the daily aggregate, materialized, and its policy


def downgrade() -> None:
    # Hypertables stay hypertables: the revisions below drop them like the tables they were.
    pass
