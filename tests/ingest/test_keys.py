"""API keys: generation (pure) and the repository on a real, migrated PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.ingest import keys
from shared.db import make_engine
from shared.settings import BaseServiceSettings


@pytest.mark.unit
def test_generated_keys_are_random_and_well_formed() -> None:
    generated = {keys.generate_key().key for _ in range(100)}
    assert len(generated) == 100
    for key in generated:
        assert len(key) == keys.KEY_CHARS
        assert keys.lookup_prefix(key) == key[: keys.LOOKUP_CHARS]


@pytest.mark.unit
def test_only_the_right_key_matches_its_hash() -> None:
    new = keys.generate_key()
    stored = keys.StoredKey(1, "s", new.prefix, new.hash, None, None)  # type: ignore[arg-type]
    assert keys.matches(new.key, stored)
    assert not keys.matches(new.key[:-1] + "x", stored)
    assert len(new.hash) == 32


@pytest.mark.unit
@pytest.mark.parametrize("key", ["", "pk_", "pk_abc", "sk_" + "a" * 43, "pk_" + "a" * 42])
def test_malformed_keys_have_no_prefix(key: str) -> None:
    assert keys.lookup_prefix(key) is None


@pytest.fixture
async def engine(settings: BaseServiceSettings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings, application_name="pacekeeper-test", pool_size=1)
    yield engine
    await engine.dispose()


@pytest.mark.integration
async def test_create_find_revoke_list(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        stored, new = await keys.create(conn, "web-shop")
        await keys.create(conn, "crm")
    assert stored.active
    assert stored.source == "web-shop"

    async with engine.connect() as conn:
        found = await keys.find_by_prefix(conn, new.prefix)
        assert found == stored
        assert await keys.find_by_prefix(conn, "pk_nothing12") is None
        # Only the hash is stored, never the key.
        row = (
            await conn.execute(text("select * from api_keys where id = :id"), {"id": stored.id})
        ).one()
        assert new.key not in {str(value) for value in row}

    async with engine.begin() as conn:
        revoked = await keys.revoke(conn, new.key)  # the whole key names it too
        assert revoked is not None
        assert revoked.revoked_at is not None
        assert await keys.revoke(conn, new.prefix) is None  # already revoked

    async with engine.connect() as conn:
        assert [k.source for k in await keys.list_keys(conn)] == ["web-shop", "crm"]
        [crm] = await keys.list_keys(conn, "crm")
        assert crm.active


@pytest.mark.integration
async def test_grafana_cannot_read_key_hashes(engine: AsyncEngine, schema: str) -> None:
    async with engine.connect() as conn:
        granted = (
            await conn.execute(
                text(
                    "select count(*) from information_schema.role_table_grants"
                    " where table_schema = :schema and table_name = 'api_keys'"
                    " and grantee = 'grafana'"
                ),
                {"schema": schema},
            )
        ).scalar_one()
    assert granted == 0
