"""daily continuous aggregate: whole old days of kpi_points come from one row per
(kpi, dims, day)

On TimescaleDB, `kpi_value` over a quarter read ~2,100 hourly rows per dimension set from
the hourly aggregate; with the daily one it reads ~90 day rows plus the ragged hours and
minutes at the edges. Days are UTC days (a continuous aggregate has one fixed bucketing);
a window aligned to another time zone's midnight takes its edge hours from the hourly
aggregate, so the answer is the same in any zone. Like the hourly aggregate it answers
only for days past the 8-day horizon, which its policy (daily, over the last 40 days) has
materialized days before; the migration materializes every older day already stored. On
plain PostgreSQL nothing changes: the functions read kpi_points.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import (
    CAGG_HORIZON,
    grant_read_only,
    has_timescaledb,
    retire_policies,
)

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNATURE = "pk_points(kpi_name text, lo timestamptz, hi timestamptz, f jsonb)"
_RETURNS = "TABLE(c numeric, s double precision, mn double precision, mx double precision)"


def _pk_points(parts_from_days: str, days_window: str) -> str:
    """pk_points reading minutes at the edges, whole old hours from the hourly aggregate,
    and (when `parts_from_days` is given) whole old days from the daily one."""
    return f"""
        CREATE OR REPLACE FUNCTION {_SIGNATURE} RETURNS {_RETURNS}
        LANGUAGE sql STABLE AS $$
            WITH edges AS (
                SELECT to_timestamp(ceil(extract(epoch FROM lo) / 3600) * 3600) AS h1,
                       to_timestamp(floor(extract(epoch FROM least(
                           hi, now() - interval '{CAGG_HORIZON}')) / 3600) * 3600) AS h2,
                       to_timestamp(ceil(extract(epoch FROM lo) / 86400) * 86400) AS d1,
                       to_timestamp(floor(extract(epoch FROM least(
                           hi, now() - interval '{CAGG_HORIZON}')) / 86400) * 86400) AS d2
            ), parts AS (
                SELECT p.count AS c, p.sum AS s, p.min AS mn, p.max AS mx
                FROM kpi_points p, edges e
                WHERE p.kpi = kpi_name AND p.bucket >= lo AND p.bucket < hi AND p.dims @> f
                  AND NOT (e.h1 < e.h2 AND p.bucket >= e.h1 AND p.bucket < e.h2)
                UNION ALL
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h, edges e
                WHERE e.h1 < e.h2 AND h.kpi = kpi_name AND h.bucket >= e.h1
                  AND h.bucket < e.h2 AND h.dims @> f {days_window}
                {parts_from_days}
            )
            SELECT sum(c), sum(s), min(mn), max(mx) FROM parts
        $$
    """


def pk_points_with_days() -> str:
    return _pk_points(
        days_window="AND NOT (e.d1 < e.d2 AND h.bucket >= e.d1 AND h.bucket < e.d2)",
        parts_from_days="""
            UNION ALL
            SELECT d.count, d.sum, d.min, d.max
            FROM kpi_points_daily d, edges e
            WHERE e.d1 < e.d2 AND d.kpi = kpi_name AND d.bucket >= e.d1
              AND d.bucket < e.d2 AND d.dims @> f""",
    )


def upgrade() -> None:
    if not has_timescaledb():
        return
    op.execute(
        """
        CREATE MATERIALIZED VIEW kpi_points_daily
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT kpi, dims, time_bucket(interval '1 day', bucket) AS bucket,
               sum(count) AS count, sum(sum) AS sum, min(min) AS min, max(max) AS max
        FROM kpi_points
        GROUP BY kpi, dims, time_bucket(interval '1 day', bucket)
        WITH NO DATA
        """
    )
    op.execute(pk_points_with_days())
    grant_read_only("kpi_points_daily")
    # The policy only refreshes the last 40 days; days older than that, already stored
    # when this migration runs, are materialized now (CALL cannot run in a transaction).
    # The policy comes after: its first run starts at once, and TimescaleDB refuses a
    # refresh while another one of the same aggregate runs.
    with op.get_context().autocommit_block():
        op.execute(
            "CALL refresh_continuous_aggregate('kpi_points_daily', NULL,"
            " date_trunc('day', now() - interval '1 day', 'UTC'))"
        )
    op.execute(
        "SELECT add_continuous_aggregate_policy('kpi_points_daily',"
        " start_offset => interval '40 days', end_offset => interval '1 day',"
        " schedule_interval => interval '1 day')"
    )


def downgrade() -> None:
    if not has_timescaledb():
        return
    op.execute(_pk_points(days_window="", parts_from_days=""))
    retire_policies("kpi_points_daily")
    op.execute("DROP MATERIALIZED VIEW kpi_points_daily")
