"""cheaper per-event writes: byte-order identifier keys, a BRIN index for the dedupe
purge, no per-type events index

Every event costs a row in `event_dedupe` and `events` and, per KPI that needs it, rows of
exact state (distinct values, funnel steps, retention), all inside the aggregator's batch
transaction:

- The identifier columns of those tables (KPI names, event keys, actors, distinct values)
  compare in byte order ("C"): they are identifiers, not words, and locale-aware
  comparison is a large part of every unique-index insert.
- `event_dedupe.first_seen` is only read by the purge ("older than the window"), and rows
  arrive in first_seen order: a BRIN index answers that for almost nothing per insert.
- `events (type, time)` served only `pacekeeper backfill`, which reads a time range of a
  few types; the primary key (time, source, id) serves that range scan.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Identifier columns of the per-event tables, compared in byte order from now on.
BYTE_ORDER = {
    "event_dedupe": ("source", "id"),
    "kpi_distinct": ("kpi", "value"),
    "kpi_funnel_steps": ("kpi", "actor"),
    "kpi_retention_cohorts": ("kpi", "actor"),
    "kpi_retention_returns": ("kpi", "actor"),
}


def _collate(collation: str) -> None:
    for table, columns in BYTE_ORDER.items():
        changes = ", ".join(f'ALTER COLUMN {c} TYPE text COLLATE "{collation}"' for c in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def upgrade() -> None:
    _collate("C")
    op.execute("DROP INDEX event_dedupe_first_seen")
    op.execute("CREATE INDEX event_dedupe_first_seen ON event_dedupe USING brin (first_seen)")
    op.execute("DROP INDEX events_type_time")


def downgrade() -> None:
    op.execute("CREATE INDEX events_type_time ON events (type, time DESC)")
    op.execute("DROP INDEX event_dedupe_first_seen")
    op.execute("CREATE INDEX event_dedupe_first_seen ON event_dedupe (first_seen)")
    _collate("default")
