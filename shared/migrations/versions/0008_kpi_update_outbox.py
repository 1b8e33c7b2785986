"""kpi-updates outbox: the changed KPI ranges commit with the batch that changed them

The aggregator used to publish a batch's changed ranges on `pacekeeper.kpi-updates.v1`
after its transaction committed; a crash between the commit and the publish lost them.
Now the batch transaction writes them here, and a relay publishes rows and deletes them
once the broker acknowledged them (at least once; a reader treats a message as "look
again", so a repeat is harmless).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE kpi_update_outbox (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            kpi text COLLATE "C" NOT NULL,
            t_from timestamptz NOT NULL,
            t_to timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS kpi_update_outbox")
