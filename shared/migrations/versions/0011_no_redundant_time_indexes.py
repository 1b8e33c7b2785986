"""no redundant time indexes on the per-event hypertables

`create_hypertable` adds an index on the time column of every hypertable unless told not to.
On four tables that the aggregator writes for nearly every event, another index already
leads with the same column or every query also filters on `kpi`, so the extra index only
costs an insert per row:

- `events (time DESC)`: the primary key (time, source, id) serves time ranges (backfill).
- `kpi_distinct (bucket DESC)`, `kpi_funnel_steps (time DESC)`,
  `kpi_retention_returns (slot DESC)`: every read and delete filters on `kpi` first and
  takes the primary key or `kpi_funnel_steps_start`; chunk exclusion needs no index.

`kpi_points (bucket DESC)` stays: the continuous aggregates refresh by bucket range over
every KPI. In the aggregator benchmark's workload that is 2.2 index inserts fewer per
event: PostgreSQL's CPU per event fell from 42.4 to 35.7 µs (bench/aggregator_costs.py,
median of 3 interleaved rounds, designs `time-indexes` and `current`).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import has_timescaledb

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (index create_hypertable made, its column)
REDUNDANT = {
    "events": ("events_time_idx", "time"),
    "kpi_distinct": ("kpi_distinct_bucket_idx", "bucket"),
    "kpi_funnel_steps": ("kpi_funnel_steps_time_idx", "time"),
    "kpi_retention_returns": ("kpi_retention_returns_slot_idx", "slot"),
}


def upgrade() -> None:
    # Plain PostgreSQL never had them (no hypertables there).
    for index, _ in REDUNDANT.values():
        op.execute(f"DROP INDEX IF EXISTS {index}")


def downgrade() -> None:
    if not has_timescaledb():
        return
    for table, (index, column) in REDUNDANT.items():
        op.execute(f'CREATE INDEX IF NOT EXISTS {index} ON {table} ("{column}" DESC)')
