"""config as code: kpis, goals, rules, channels and app settings, with change notifications

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import grant_read_only

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SECTIONS = ("kpis", "goals", "rules", "channels")


def upgrade() -> None:
    # Running services LISTEN on this channel and reload what changed, without a restart.
    op.execute(
        """
        CREATE FUNCTION notify_config_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(
                'pacekeeper_config',
                json_build_object(
                    'section', TG_TABLE_NAME,
                    'op', TG_OP,
                    'name', COALESCE(to_jsonb(NEW), to_jsonb(OLD))
                            ->> CASE WHEN TG_TABLE_NAME = 'app_settings' THEN 'key' ELSE 'name' END
                )::text
            );
            RETURN NULL;
        END $$
        """
    )
    for section in SECTIONS:
        op.execute(
            f"""
            CREATE TABLE {section} (
                name       text        PRIMARY KEY,
                spec       jsonb       NOT NULL,
                version    integer     NOT NULL DEFAULT 1,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        op.execute(
            f"""
            CREATE TRIGGER {section}_notify AFTER INSERT OR UPDATE OR DELETE ON {section}
            FOR EACH ROW EXECUTE FUNCTION notify_config_change()
            """
        )
    op.execute(
        """
        CREATE TABLE app_settings (
            key        text PRIMARY KEY,
            value      text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("INSERT INTO app_settings (key, value) VALUES ('timezone', 'UTC')")
    op.execute(
        """
        CREATE TRIGGER app_settings_notify AFTER INSERT OR UPDATE ON app_settings
        FOR EACH ROW EXECUTE FUNCTION notify_config_change()
        """
    )
    # KPI definitions and the time zone are needed to read kpi_series; channels hold secrets.
    grant_read_only("kpis", "app_settings")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS app_settings")
    for section in SECTIONS:
        op.execute(f"DROP TABLE IF EXISTS {section}")
    op.execute("DROP FUNCTION IF EXISTS notify_config_change()")
