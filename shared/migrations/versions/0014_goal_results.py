"""goal results: each closed goal period's result as reported, and its restatements

Late events (accepted for up to the allowed lateness) change periods that already closed.
`goal_results` keeps one row per goal and closed period: the result as first reported when
the period closed (value, target, met/missed), the result as it stands now, the last
restatement (when, by how much) and what readers were last told (the reference a
'restated' notification is measured against). `goal_restatements` keeps every change, for
the audit trail. Both are readable by the read-only `grafana` role.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import grant_read_only

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# NULL: no verdict (no target, as for growth over an empty previous period, or no value).
_STATUS = "CHECK ({column} IN ('met', 'missed'))"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE goal_results (
            goal             text             NOT NULL,
            period_start     timestamptz      NOT NULL,
            period_end       timestamptz      NOT NULL,
            kpi              text             NOT NULL,
            direction        text             NOT NULL,
            reported_value   double precision,
            reported_target  double precision,
            reported_status  text             {_STATUS.format(column="reported_status")},
            reported_at      timestamptz      NOT NULL,
            value            double precision,
            target           double precision,
            status           text             {_STATUS.format(column="status")},
            checked_at       timestamptz      NOT NULL,
            restatements     integer          NOT NULL DEFAULT 0,
            restated_at      timestamptz,
            restated_delta   double precision,
            restated_relative double precision,
            notified_value   double precision,
            notified_status  text             {_STATUS.format(column="notified_status")},
            notified_restatement integer,
            notified_at      timestamptz,
            PRIMARY KEY (goal, period_start)
        )
        """
    )
    # The evaluator re-reads the periods still open for restatement: the newest ones.
    op.execute("CREATE INDEX goal_results_period_end ON goal_results (period_end)")
    op.execute(
        f"""
        CREATE TABLE goal_restatements (
            goal         text             NOT NULL,
            period_start timestamptz      NOT NULL,
            number       integer          NOT NULL,
            restated_at  timestamptz      NOT NULL,
            before_value double precision,
            value        double precision,
            target       double precision,
            status       text             {_STATUS.format(column="status")},
            delta        double precision,
            relative     double precision,
            notified     boolean          NOT NULL,
            PRIMARY KEY (goal, period_start, number),
            FOREIGN KEY (goal, period_start) REFERENCES goal_results (goal, period_start)
                ON DELETE CASCADE
        )
        """
    )
    grant_read_only("goal_results", "goal_restatements")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS goal_restatements")
    op.execute("DROP TABLE IF EXISTS goal_results")
