"""faster dashboard reads: pk_points scans only the minutes, hours and days it keeps, and
the KPI functions run without JIT compilation

Measured with bench/series_latency.py (100 days of minutes, 3 dimension sets, 10 of 15
chunks compressed, as the read-only grafana role, p50):

- pk_points on TimescaleDB took whole hours and days from the continuous aggregates but
  still read every minute of the window: "not inside the whole hours" was a filter, not an
  index range (90 days: 388,797 minute rows read, 354,060 thrown away), so reading through
  the aggregates was 0.7-0.8x as fast as reading the minutes alone. Each part now has its
  own range, computed once by pk_ranges: minutes before the first whole hour and after the
  last, hours before the first whole day and after the last, then the days. The ranges are
  columns of a function scan so that they reach every chunk's index, compressed chunks
  included (as expressions they did not, and a series decompressed each compressed chunk
  for every step: 4.4 s for 90 days at one point a day).
- kpi_series took ~0.7 s whatever the window: the planner takes pk_grid for 1,000 rows, so
  the plan's cost passed PostgreSQL's JIT thresholds and ~120 functions were compiled on
  every call, for queries that read a few thousand rows. kpi_value and kpi_series now run
  with `jit = off`.

kpi_series 7 days at 1 hour 686 -> 23 ms, 30 days at 1 day 698 -> 16 ms, 90 days at 1 day
728 -> 30 ms; kpi_value over 90 days 56 -> 12 ms. The answers are the same: the five ranges
are exactly the parts the old function kept (property-tested in test_timescaledb.py).

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
_HELPERS = (
    "pk_ranges(timestamptz, timestamptz)",
    "pk_whole_from(timestamptz, integer)",
    "pk_whole_to(timestamptz, integer)",
)


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
    # The five ranges as plain values of a function scan: conditions on them reach the
    # index of each chunk, compressed ones included (as `bucket < <expression>` they did
    # not, and a compressed chunk was decompressed whole for every step of a series).
    op.execute(
        """
        CREATE FUNCTION pk_ranges(lo timestamptz, hi timestamptz)
        RETURNS TABLE(minutes_to timestamptz, minutes_from timestamptz,
                      hours_from timestamptz, hours_to timestamptz,
                      late_hours_from timestamptz, late_hours_to timestamptz,
                      days_from timestamptz, days_to timestamptz)
        LANGUAGE plpgsql STABLE AS $$
        DECLARE
            h1 timestamptz := pk_whole_from(lo, 3600);
            h2 timestamptz := pk_whole_to(hi, 3600);
            d1 timestamptz := pk_whole_from(lo, 86400);
            d2 timestamptz := pk_whole_to(hi, 86400);
        BEGIN
            IF h1 >= h2 THEN  -- no whole final hour: every minute of the window
                RETURN QUERY SELECT hi, hi, h1, h1, h1, h1, d1, d1;
            ELSIF d1 >= d2 THEN  -- whole hours, no whole final day
                RETURN QUERY SELECT h1, h2, h1, h2, h2, h2, d1, d1;
            ELSE  -- minutes at the edges, hours around the days, the days
                RETURN QUERY SELECT h1, h2, h1, d1, d2, h2, d1, d2;
            END IF;
        END $$
        """
    )
    op.execute(
        """
        CREATE OR REPLACE FUNCTION pk_points(kpi_name text, lo timestamptz, hi timestamptz,
                                             f jsonb)
        RETURNS TABLE(c numeric, s double precision, mn double precision, mx double precision)
        LANGUAGE sql STABLE AS $$
            SELECT sum(parts.c), sum(parts.s), min(parts.mn), max(parts.mx)
            FROM pk_ranges(lo, hi) r CROSS JOIN LATERAL (
                SELECT p.count AS c, p.sum AS s, p.min AS mn, p.max AS mx
                FROM kpi_points p
                WHERE p.kpi = kpi_name AND p.dims @> f
                  AND p.bucket >= lo AND p.bucket < r.minutes_to
                UNION ALL
                SELECT p.count, p.sum, p.min, p.max
                FROM kpi_points p
                WHERE p.kpi = kpi_name AND p.dims @> f
                  AND p.bucket >= r.minutes_from AND p.bucket < hi
                UNION ALL
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h
                WHERE h.kpi = kpi_name AND h.dims @> f
                  AND h.bucket >= r.hours_from AND h.bucket < r.hours_to
                UNION ALL
                SELECT h.count, h.sum, h.min, h.max
                FROM kpi_points_hourly h
                WHERE h.kpi = kpi_name AND h.dims @> f
                  AND h.bucket >= r.late_hours_from AND h.bucket < r.late_hours_to
                UNION ALL
                SELECT d.count, d.sum, d.min, d.max
                FROM kpi_points_daily d
                WHERE d.kpi = kpi_name AND d.dims @> f
                  AND d.bucket >= r.days_from AND d.bucket < r.days_to
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
        for signature in _HELPERS:
            op.execute(f"DROP FUNCTION {signature}")
