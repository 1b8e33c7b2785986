"""events, event dedupe and per-minute kpi_points

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import grant_read_only, has_timescaledb, retire_policies

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def timescaledb_layout(migrate_data: bool = False) -> None:
    """Hypertables, compression and retention; `migrate_data` for tables that already hold
    rows (a database migrated before the extension existed, see 0009)."""
    migrate = ", migrate_data => true" if migrate_data else ""
    op.execute(
        f"SELECT create_hypertable('events', 'time', chunk_time_interval => interval '1 day'"
        f"{migrate})"
    )
    op.execute(
        "SELECT create_hypertable('kpi_points', 'bucket',"
        f" chunk_time_interval => interval '7 days'{migrate})"
    )
    op.execute(
        "ALTER TABLE events SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'source, type',"
        " timescaledb.compress_orderby = 'time DESC, id')"
    )
    # Late events are accepted for 7 days, so compress only older chunks.
    op.execute("SELECT add_compression_policy('events', interval '8 days')")
    op.execute("SELECT add_retention_policy('events', interval '400 days')")
    op.execute(
        "ALTER TABLE kpi_points SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'kpi, dims',"
        " timescaledb.compress_orderby = 'bucket DESC')"
    )
    op.execute("SELECT add_compression_policy('kpi_points', interval '30 days')")


def upgrade() -> None:
    # Every accepted event once. No unique key on (source, id): a hypertable's unique keys
    # must contain `time`, so dedupe lives in event_dedupe, written in the same transaction.
    op.execute(
        """
        CREATE TABLE events (
            time         timestamptz NOT NULL,
            source       text        NOT NULL,
            id           text        NOT NULL,
            type         text        NOT NULL,
            user_id      text,
            anonymous_id text,
            properties   jsonb       NOT NULL DEFAULT '{}'::jsonb,
            received_at  timestamptz NOT NULL,
            PRIMARY KEY (time, source, id)
        )
        """
    )
    op.execute("CREATE INDEX events_type_time ON events (type, time DESC)")

    # (source, id) seen within the dedupe window; purged by first_seen after the window.
    op.execute(
        """
        CREATE TABLE event_dedupe (
            source     text        NOT NULL,
            id         text        NOT NULL,
            first_seen timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (source, id)
        )
        """
    )
    op.execute("CREATE INDEX event_dedupe_first_seen ON event_dedupe (first_seen)")

    # Per-minute state of every KPI and dimension set: mergeable parts only (count, sum,
    # min, max, last, and a log-bucket sketch for percentiles), so any window re-aggregates
    # exactly from minutes.
    op.execute(
        """
        CREATE TABLE kpi_points (
            kpi        text             NOT NULL,
            dims       jsonb            NOT NULL DEFAULT '{}'::jsonb,
            bucket     timestamptz      NOT NULL,
            count      bigint           NOT NULL DEFAULT 0,
            sum        double precision NOT NULL DEFAULT 0,
            min        double precision,
            max        double precision,
            last_value double precision,
            last_time  timestamptz,
            sketch     jsonb,
            updated_at timestamptz      NOT NULL DEFAULT now(),
            PRIMARY KEY (kpi, dims, bucket),
            CHECK (bucket = date_trunc('minute', bucket))
        )
        """
    )
    op.execute("CREATE INDEX kpi_points_kpi_bucket ON kpi_points (kpi, bucket)")

    if has_timescaledb():
        timescaledb_layout()

    grant_read_only("kpi_points")  # Grafana reads KPIs, never raw events


def downgrade() -> None:
    retire_policies()
    op.execute("DROP TABLE IF EXISTS kpi_points")
    op.execute("DROP TABLE IF EXISTS event_dedupe")
    op.execute("DROP TABLE IF EXISTS events")
