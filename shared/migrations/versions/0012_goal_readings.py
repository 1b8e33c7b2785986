"""goal readings for dashboards: the latest reading of every goal and a bounded history

The alerts service works out every goal's pacing (target, value, expected by now,
projection, attainment, status, and the dimension values pulling it the wrong way) on each
evaluation, but kept only status changes (`goal_status`). Dashboards need the numbers:
`goal_readings` holds each goal's latest reading, `goal_reading_history` one reading per
goal and 5 minutes (the latest of each 5 minutes), pruned after the alerts service's
retention. Both are readable by the read-only `grafana` role.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import grant_read_only

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATUS = "CHECK (status IN ('achieved', 'on_track', 'at_risk', 'off_track'))"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE goal_readings (
            goal                 text             PRIMARY KEY,
            kpi                  text             NOT NULL,
            direction            text             NOT NULL,
            period_start         timestamptz      NOT NULL,
            period_end           timestamptz      NOT NULL,
            elapsed              double precision NOT NULL,
            status               text             NOT NULL {_STATUS},
            value                double precision,
            target               double precision,
            expected             double precision,
            projection           double precision,
            gap                  double precision,
            attainment           double precision,
            projected_attainment double precision,
            contributors         jsonb            NOT NULL DEFAULT '[]'::jsonb,
            evaluated_at         timestamptz      NOT NULL
        )
        """
    )
    op.execute(
        f"""
        CREATE TABLE goal_reading_history (
            goal         text             NOT NULL,
            bucket       timestamptz      NOT NULL,
            period_start timestamptz      NOT NULL,
            status       text             NOT NULL {_STATUS},
            value        double precision,
            target       double precision,
            expected     double precision,
            projection   double precision,
            attainment   double precision,
            evaluated_at timestamptz      NOT NULL,
            PRIMARY KEY (goal, bucket)
        )
        """
    )
    # The pruning deletes by age across every goal.
    op.execute("CREATE INDEX goal_reading_history_bucket ON goal_reading_history (bucket)")
    grant_read_only("goal_readings", "goal_reading_history")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS goal_reading_history")
    op.execute("DROP TABLE IF EXISTS goal_readings")
