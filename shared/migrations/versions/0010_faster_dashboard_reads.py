"""faster dashboard reads: pk_points scans only the minutes and hours it keeps, and the KPI
functions run without JIT compilation

Measured with bench/series_latency.py (100 days of minutes, 3 dimension sets, as the
read-only grafana role) before this revision:

- pk_points on TimescaleDB took whole hours and days from the continuous aggregates but
  still read every minute of the window: the "not inside the whole hours" condition was a
  filter, not an index range (90 days: 388,797 minute rows read, 354,060 thrown away), so
  reading through the aggregates was 0.7-0.8x as fast as reading the minutes alone. Each
  part now has its own range: minutes before the first whole hour and after the last,
  hours before the first whole day and after the last, then the days.
- kpi_series took ~0.7 s whatever the window: the planner takes pk_grid for 1,000 rows,
  so the plan's cost passes PostgreSQL's JIT thresholds and ~120 functions were compiled on
  every call, for queries that read a few thousand rows. kpi_value and kpi_series now run
  with `jit = off` (7 days at 1 hour: 686 ms -> 19 ms with the old pk_points).

Same answers as before: the five ranges are exactly the parts the old function kept.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import CAGG_HORIZON, has_timescaledb, revision_module

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KPI_FUNCTIONS = (
    "kpi_value(text, timestamptz, timestamptz, jsonb)",
    "kpi_series(text, timestamptz, timestamptz, interval, jsonb)",
)
_EDGES = ("pk_whole_from(timestamptz, integer)", "pk_whole_to(timestamptz, integer)")


def _ranged_pk_points() -> None:
    # Whole buckets of `width` seconds inside the window, and only final ones: a bucket
    # counts from the aggregates once it ended before the horizon (late events are
    # accepted for 7 days; the aggregates answer for what is older than 8).
    op.execute(
        """
        CREATE FUNCTION pk_whole_from(lo timestamptz, width integer) RETURNS timestamptz
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT to_timestamp(ceil(extract(epoch FROM lo) / width) * width)
        $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION pk_whole_to(hi timestamptz, width integer) RETURNS timestamptz
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT to_timestamp(floor(extract(epoch FROM least(
                hi, now() - interval '{CAGG_HORIZON}')) / width) * width)
        $$
        """
    )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION pk_points(kpi_name text, lo timestamptz, hi timestamptz,
                                             f jsonb)
        RETURNS TABLE(c numeric, s double precision, mn double precision, mx double precision)
        LANGUAGE sql STABLE AS $$
            SELECT sum(c), sum(s), min(mn), max(mx) FROM (
                -- minutes before the first whole hour (all of them when there is none)
                SELECT p.count AS c, p.sum AS s, p.min AS mn, p.max AS mx
                FROM kpi_points p
                WHERE p.kpi = kpi_name AND p.dims @> f AND p.bucket >= lo
                  AND p.bucket < CASE WHEN pk_whole_from(lo, 3600) < pk_whole_to(hi, 3600)
                                      THEN pk_whole_from(lo, 3600) ELSE hi END
                UNION ALL  -- minutes after the last whole hour
                SELECT p.count, p.sum, p.min, p.max
                FROM kpi_points p
                WHERE pk_whole_from(lo, 3600) < pk_whole_to(hi, 3600)
                  AND p.kpi = kpi_name AND p.dims @> f
                  AND p.bucket >= pk_whole_to(hi, 3600) AND p.bucket < hi
                UNION ALL  -- whole hours before the first whole day (all when none)
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h
                WHERE pk_whole_from(lo, 3600) < pk_whole_to(hi, 3600)
                  AND h.kpi = kpi_name AND h.dims @> f
                  AND h.bucket >= pk_whole_from(lo, 3600)
                  AND h.bucket < CASE WHEN pk_whole_from(lo, 86400) < pk_whole_to(hi, 86400)
                                      THEN pk_whole_from(lo, 86400)
                                      ELSE pk_whole_to(hi, 3600) END
                UNION ALL  -- whole hours after the last whole day
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h
                WHERE pk_whole_from(lo, 86400) < pk_whole_to(hi, 86400)
                  AND h.kpi = kpi_name AND h.dims @> f
                  AND h.bucket >= pk_whole_to(hi, 86400) AND h.bucket < pk_whole_to(hi, 3600)
                UNION ALL  -- whole days
                SELECT d.count, d.sum, d.min, d.max
                FROM kpi_points_daily d
                WHERE pk_whole_from(lo, 86400) < pk_whole_to(hi, 86400)
                  AND d.kpi = kpi_name AND d.dims @> f
                  AND d.bucket >= pk_whole_from(lo, 86400) AND d.bucket < pk_whole_to(hi, 86400)
            ) parts
        $$
        """
    )


def upgrade() -> None:
    if has_timescaledb():
        _ranged_pk_points()
    for signature in _KPI_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {signature} SET jit = off")


def downgrade() -> None:
    for signature in _KPI_FUNCTIONS:
        op.execute(f"ALTER FUNCTION {signature} RESET jit")
    if has_timescaledb():
        op.execute(revision_module("0007").pk_points_with_days())
        for signature in _EDGES:
            op.execute(f"DROP FUNCTION {signature}")
