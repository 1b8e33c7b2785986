"""PostgreSQL over TLS that the client verifies: `sslmode=verify-full` in
PACEKEEPER_DATABASE_URL against the local cluster's certificate (deploy/local/postgres.sh
makes it for 127.0.0.1), through the services' own engines; a server the CA did not sign
is refused."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text

from shared.db import make_engine, make_sync_engine
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings
from tests.conftest import drop_schema, libpq_url
from tests.security.secure_broker import Authority

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
CA = Path(os.environ.get("PACEKEEPER_STATE_DIR", REPO / ".local")) / "postgres" / "tls" / "ca.pem"
TLS_OF_THIS_SESSION = text("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")


def verified(database_url: str, ca: Path) -> str:
    return f"{database_url}?sslmode=verify-full&sslrootcert={ca}"


async def test_the_services_engines_connect_with_verify_full(
    database_url: str, unique: str
) -> None:
    assert CA.exists(), "deploy/local/postgres.sh up writes the cluster's CA certificate here"
    settings = BaseServiceSettings(database_url=verified(database_url, CA), database_schema=unique)
    upgrade(settings)  # migrations, over the verified connection
    try:
        engine = make_engine(settings, application_name="test-tls", pool_size=1)
        try:
            async with engine.connect() as conn:
                ssl, version = (await conn.execute(TLS_OF_THIS_SESSION)).one()
                tables = await conn.scalar(
                    text("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
                )
        finally:
            await engine.dispose()
        assert ssl is True
        assert version.startswith("TLSv1.")
        assert tables
        sync = make_sync_engine(settings, application_name="test-tls")
        try:
            with sync.connect() as conn:
                assert conn.execute(TLS_OF_THIS_SESSION).one()[0] is True
        finally:
            sync.dispose()
    finally:
        drop_schema(database_url, unique)


def test_a_server_certificate_from_another_ca_is_refused(database_url: str, tmp_path: Path) -> None:
    stranger = Authority.create("not the cluster's CA").write_pem(tmp_path / "other-ca.pem")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(libpq_url(verified(database_url, stranger)), connect_timeout=10)
