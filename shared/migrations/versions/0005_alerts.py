"""alerts: alert state per fingerprint, notification groups, delivery outbox and attempts,
silences, acknowledgements, goal status history, evaluator lease

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row per fingerprint (rule or goal + labels): its current episode. A resolved alert
    # that breaches again starts a new episode on the same row, so acknowledgements and
    # notifications can name (fingerprint, episode) exactly.
    op.execute(
        """
        CREATE TABLE alerts (
            id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            fingerprint    text        NOT NULL UNIQUE,
            origin         text        NOT NULL CHECK (origin IN ('rule', 'goal')),
            name           text        NOT NULL,
            labels         jsonb       NOT NULL,
            annotations    jsonb       NOT NULL DEFAULT '{}'::jsonb,
            dims           jsonb       NOT NULL DEFAULT '{}'::jsonb,
            channels       text[]      NOT NULL DEFAULT '{}',
            state          text        NOT NULL
                           CHECK (state IN ('inactive', 'pending', 'firing', 'resolved')),
            episode        integer     NOT NULL DEFAULT 1,
            active_at      timestamptz,
            fired_at       timestamptz,
            resolved_at    timestamptz,
            last_breach_at timestamptz,
            value          double precision,
            context        jsonb       NOT NULL DEFAULT '{}'::jsonb,
            updated_at     timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX alerts_active ON alerts (state) WHERE state <> 'inactive'")
    op.execute("CREATE INDEX alerts_name ON alerts (name)")

    # Notification groups, per channel and group key, as Alertmanager's aggregation groups:
    # `notified` is the set of (fingerprint, episode) the last notification showed firing,
    # the basis for "what changed" and for sending each resolve exactly once.
    op.execute(
        """
        CREATE TABLE alert_groups (
            channel       text        NOT NULL,
            group_key     text        NOT NULL,
            group_labels  jsonb       NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            last_flush_at timestamptz,
            notified      jsonb       NOT NULL DEFAULT '[]'::jsonb,
            seq           integer     NOT NULL DEFAULT 0,
            PRIMARY KEY (channel, group_key)
        )
        """
    )

    # The outbox: written in the same transaction as the state change that caused it,
    # delivered after commit. The idempotency key lets a receiver drop the one duplicate a
    # crash between "sent" and "marked delivered" can cause.
    op.execute(
        """
        CREATE TABLE deliveries (
            id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            channel         text        NOT NULL,
            group_key       text        NOT NULL,
            seq             integer     NOT NULL,
            idempotency_key text        NOT NULL UNIQUE,
            status          text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'delivered', 'failed')),
            payload         jsonb       NOT NULL,
            attempts        integer     NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            created_at      timestamptz NOT NULL DEFAULT now(),
            delivered_at    timestamptz,
            last_error      text
        )
        """
    )
    op.execute(
        "CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending'"
    )

    # Every delivery attempt, successful or not, with what the receiver said.
    op.execute(
        """
        CREATE TABLE notifications (
            id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id bigint      NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            channel     text        NOT NULL,
            attempt     integer     NOT NULL,
            status      text        NOT NULL CHECK (status IN ('sent', 'failed')),
            retryable   boolean,
            http_status integer,
            error       text,
            started_at  timestamptz NOT NULL,
            duration_ms double precision NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX notifications_delivery ON notifications (delivery_id)")
    op.execute("CREATE INDEX notifications_started ON notifications (started_at)")

    op.execute(
        """
        CREATE TABLE silences (
            id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            matchers   jsonb       NOT NULL,
            starts_at  timestamptz NOT NULL,
            ends_at    timestamptz NOT NULL,
            created_by text        NOT NULL DEFAULT '',
            comment    text        NOT NULL DEFAULT '',
            created_at timestamptz NOT NULL DEFAULT now(),
            CHECK (ends_at > starts_at)
        )
        """
    )
    op.execute("CREATE INDEX silences_ends ON silences (ends_at)")

    # An acknowledgement holds for one episode: it stops repeats until the alert resolves.
    op.execute(
        """
        CREATE TABLE acknowledgements (
            fingerprint text        NOT NULL,
            episode     integer     NOT NULL,
            acked_by    text        NOT NULL DEFAULT '',
            comment     text        NOT NULL DEFAULT '',
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (fingerprint, episode)
        )
        """
    )

    # One row per goal evaluation whose status differs from the goal's previous one.
    op.execute(
        """
        CREATE TABLE goal_status (
            id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            goal         text        NOT NULL,
            period_start timestamptz NOT NULL,
            period_end   timestamptz NOT NULL,
            status       text        NOT NULL
                         CHECK (status IN ('achieved', 'on_track', 'at_risk', 'off_track')),
            value        double precision,
            target       double precision,
            expected     double precision,
            projection   double precision,
            evaluated_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX goal_status_goal ON goal_status (goal, evaluated_at DESC)")

    # Bookkeeping only: the advisory lock decides who evaluates; this row says who does,
    # since when, and counts takeovers (epoch) for the API and the logs.
    op.execute(
        """
        CREATE TABLE evaluator_lease (
            name         text        PRIMARY KEY,
            holder       text        NOT NULL,
            epoch        bigint      NOT NULL,
            acquired_at  timestamptz NOT NULL,
            heartbeat_at timestamptz NOT NULL
        )
        """
    )


def downgrade() -> None:
    for table in (
        "evaluator_lease",
        "goal_status",
        "acknowledgements",
        "silences",
        "notifications",
        "deliveries",
        "alert_groups",
        "alerts",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
