"""versioned KPI definitions: every applied definition kept, history recomputed per version,
and the KPI functions reading the active version

`kpi_versions` holds one row per applied definition of a KPI: the definition, what changed
against the version before (a list of field changes), who applied it and when, its state
(`recomputing` → `active` → `retired`, or `superseded` when a newer definition came before
it finished) and the recompute's progress. Each version's state lives in the KPI state
tables under its own storage key — the KPI's name for the first version, `name@N` for a
version N that recomputes history — so a recompute never touches what readers see.

`pk_spec`, through which `kpi_value`, `kpi_series` and the derived KPIs resolve a name,
returns the active version's definition with its storage key as `name`: a reader sees one
version's state, whichever committed switch its snapshot holds, never a half-recomputed
one. `pk_storage` gives the same key to other readers of the state tables.

Every KPI already stored gets version 1, active, stored under its name: nothing moves.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

from shared.migrations.helpers import grant_execute, grant_read_only

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = "CHECK (state IN ('recomputing', 'active', 'retired', 'superseded'))"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE kpi_versions (
            kpi              text        NOT NULL,
            version          integer     NOT NULL,
            spec             jsonb       NOT NULL,
            storage          text        NOT NULL,
            diff             jsonb       NOT NULL DEFAULT '[]'::jsonb,
            applied_by       text        NOT NULL DEFAULT session_user,
            applied_at       timestamptz NOT NULL DEFAULT now(),
            state            text        NOT NULL {_STATES},
            -- The recompute: events in [recompute_from, recompute_to) were stored before
            -- the version's first recompute run; later ones reach it through the consumer.
            recompute_from   timestamptz,
            recompute_to     timestamptz,
            recomputed_until timestamptz,
            events_processed bigint      NOT NULL DEFAULT 0,
            activated_at     timestamptz,
            retired_at       timestamptz,
            -- A retired or superseded version's state has been deleted (its key is free).
            state_dropped    boolean     NOT NULL DEFAULT false,
            PRIMARY KEY (kpi, version)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX kpi_versions_one_active ON kpi_versions (kpi) WHERE state = 'active'"
    )
    op.execute(
        "CREATE UNIQUE INDEX kpi_versions_one_recomputing ON kpi_versions (kpi)"
        " WHERE state = 'recomputing'"
    )
    op.execute(
        """
        INSERT INTO kpi_versions (kpi, version, spec, storage, applied_by, applied_at, state,
                                  activated_at)
        SELECT name, version, spec, name, 'migration', updated_at, 'active', updated_at
        FROM kpis
        """
    )
    op.execute(
        """
        CREATE FUNCTION pk_storage(kpi_name text) RETURNS text LANGUAGE sql STABLE AS $$
            SELECT coalesce((SELECT v.storage FROM kpi_versions v
                             WHERE v.kpi = kpi_name AND v.state = 'active'), kpi_name)
        $$
        """
    )
    # Same error as before for an unknown KPI; a KPI without a version row (stored by hand)
    # reads its definition and its name as before.
    op.execute(
        """
        CREATE OR REPLACE FUNCTION pk_spec(kpi_name text) RETURNS jsonb
        LANGUAGE plpgsql STABLE AS $$
        DECLARE
            found jsonb;
            active jsonb;
        BEGIN
            SELECT k.spec INTO found FROM kpis k WHERE k.name = kpi_name;
            IF found IS NULL THEN
                RAISE EXCEPTION 'unknown KPI %', kpi_name USING ERRCODE = 'undefined_object';
            END IF;
            SELECT v.spec || jsonb_build_object('name', v.storage) INTO active
            FROM kpi_versions v WHERE v.kpi = kpi_name AND v.state = 'active';
            RETURN coalesce(active, found);
        END $$
        """
    )
    grant_read_only("kpi_versions")
    grant_execute("pk_storage(text)")


def downgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION pk_spec(kpi_name text) RETURNS jsonb
        LANGUAGE plpgsql STABLE AS $$
        DECLARE
            found jsonb;
        BEGIN
            SELECT k.spec INTO found FROM kpis k WHERE k.name = kpi_name;
            IF found IS NULL THEN
                RAISE EXCEPTION 'unknown KPI %', kpi_name USING ERRCODE = 'undefined_object';
            END IF;
            RETURN found;
        END $$
        """
    )
    op.execute("DROP FUNCTION IF EXISTS pk_storage(text)")
    op.execute("DROP TABLE IF EXISTS kpi_versions")
