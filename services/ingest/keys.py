"""API keys: generation (pure) and the `api_keys` repository (all of its SQL lives here)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    Row,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

KEY_PREFIX = "pk_"
# 32 random bytes → 43 url-safe characters: 256 bits, far beyond guessing.
_SECRET_BYTES = 32
KEY_CHARS = len(KEY_PREFIX) + 43
# "pk_" + 9 characters (54 bits): unique in practice, and not enough to guess the rest.
LOOKUP_CHARS = len(KEY_PREFIX) + 9

api_keys = Table(
    "api_keys",
    MetaData(),
    Column("id", BigInteger, primary_key=True),
    Column("source", Text, nullable=False),
    Column("prefix", Text, nullable=False, unique=True),
    Column("hash", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: `key` is shown once and never stored."""

    key: str
    prefix: str
    hash: bytes


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: int
    source: str
    prefix: str
    hash: bytes
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def generate_key() -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)
    return NewKey(key=key, prefix=key[:LOOKUP_CHARS], hash=hash_key(key))


def lookup_prefix(key: str) -> str | None:
    """The indexed part of a well-formed key, or None for anything that cannot be one."""
    if len(key) != KEY_CHARS or not key.startswith(KEY_PREFIX):
        return None
    return key[:LOOKUP_CHARS]


def matches(key: str, stored: StoredKey) -> bool:
    return hmac.compare_digest(hash_key(key), stored.hash)


def _stored(row: Row[Any]) -> StoredKey:
    mapping = row._mapping
    return StoredKey(
        id=mapping["id"],
        source=mapping["source"],
        prefix=mapping["prefix"],
        hash=bytes(mapping["hash"]),
        created_at=mapping["created_at"],
        revoked_at=mapping["revoked_at"],
    )


async def create(conn: AsyncConnection, source: str) -> tuple[StoredKey, NewKey]:
    new = generate_key()
    row = (
        await conn.execute(
            insert(api_keys)
            .values(source=source, prefix=new.prefix, hash=new.hash, created_at=func.now())
            .returning(*api_keys.c)
        )
    ).one()
    return _stored(row), new


async def find_by_prefix(conn: AsyncConnection, prefix: str) -> StoredKey | None:
    row = (await conn.execute(select(api_keys).where(api_keys.c.prefix == prefix))).one_or_none()
    return None if row is None else _stored(row)


async def revoke(conn: AsyncConnection, key_or_prefix: str) -> StoredKey | None:
    """Revoke the key named by its prefix (or the whole key); None when no active key matches."""
    prefix = lookup_prefix(key_or_prefix) or key_or_prefix
    row = (
        await conn.execute(
            update(api_keys)
            .where(api_keys.c.prefix == prefix, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(*api_keys.c)
        )
    ).one_or_none()
    return None if row is None else _stored(row)


async def list_keys(conn: AsyncConnection, source: str | None = None) -> list[StoredKey]:
    query = select(api_keys).order_by(api_keys.c.id)
    if source is not None:
        query = query.where(api_keys.c.source == source)
    return [_stored(row) for row in (await conn.execute(query)).all()]
