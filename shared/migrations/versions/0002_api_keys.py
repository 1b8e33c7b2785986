"""api_keys: ingest keys, stored hashed, bound to one source

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The key itself is never stored. `prefix` is its first characters (not secret, enough
    # entropy to be unique) so a request finds its row by index and compares `hash` in
    # constant time; operators name a key by its prefix to revoke it.
    # `hash` is SHA-256 of a 256-bit random key: a slow password hash (argon2, bcrypt) only
    # helps against guessing low-entropy secrets, and would cost milliseconds per lookup.
    op.execute(
        """
        CREATE TABLE api_keys (
            id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            source     text        NOT NULL,
            prefix     text        NOT NULL UNIQUE,
            hash       bytea       NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            revoked_at timestamptz,
            CHECK (octet_length(hash) = 32)
        )
        """
    )
    op.execute("CREATE INDEX api_keys_source ON api_keys (source)")
    # No grant to grafana: key hashes are nobody's business but ingest's.


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS api_keys")
