"""Credentials from headers and the key cache (revocation seen within its TTL)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime

import pytest

from services.ingest.auth import KeyCache, KeyStoreUnavailable, Principal, credentials
from services.ingest.keys import StoredKey, generate_key

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def _basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer pk_abc", "pk_abc"),
        ("bearer   pk_abc  ", "pk_abc"),
        (_basic("pk_abc"), "pk_abc"),
        (_basic("pk_abc", "ignored"), "pk_abc"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Basic %%%", None),
        ("Basic " + base64.b64encode(b"\xff\xfe").decode(), None),
        (_basic(""), None),
        ("Digest x", None),
    ],
)
def test_credentials(header: str | None, expected: str | None) -> None:
    assert credentials(header) == expected


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Store:
    """The repository's lookup, in memory: counts how often the database would be asked."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}
        self.lookups = 0
        self.fail = False
        self.delay = 0.0

    def add(self, source: str = "web-shop") -> str:
        new = generate_key()
        self.keys[new.prefix] = StoredKey(1, source, new.prefix, new.hash, NOW, None)
        return new.key

    def revoke(self, key: str) -> None:
        prefix = key[: len(next(iter(self.keys)))]
        stored = self.keys[prefix]
        self.keys[prefix] = StoredKey(
            stored.id, stored.source, stored.prefix, stored.hash, NOW, NOW
        )

    async def lookup(self, prefix: str) -> StoredKey | None:
        self.lookups += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise OSError("connection refused")
        return self.keys.get(prefix)


async def test_a_known_key_is_its_source_and_is_cached() -> None:
    store, clock = Store(), FakeClock()
    cache = KeyCache(store.lookup, ttl=5, clock=clock)
    key = store.add("crm")
    assert await cache.authenticate(key) == Principal(key[:12], "crm")
    assert await cache.authenticate(key) == Principal(key[:12], "crm")
    assert store.lookups == 1


async def test_revocation_is_seen_after_the_ttl() -> None:
    store, clock = Store(), FakeClock()
    cache = KeyCache(store.lookup, ttl=5, clock=clock)
    key = store.add()
    assert await cache.authenticate(key) is not None
    store.revoke(key)
    clock.now = 4.9
    assert await cache.authenticate(key) is not None
    clock.now = 5.1
    assert await cache.authenticate(key) is None


async def test_wrong_secret_with_a_known_prefix_is_refused() -> None:
    store = Store()
    cache = KeyCache(store.lookup, ttl=5)
    key = store.add()
    forged = key[:12] + ("A" if key[12] != "A" else "B") + key[13:]
    assert await cache.authenticate(forged) is None


async def test_malformed_keys_never_reach_the_database() -> None:
    store = Store()
    cache = KeyCache(store.lookup, ttl=5)
    for key in (None, "", "pk_short", "xx_" + "a" * 43, "pk_" + "a" * 44):
        assert await cache.authenticate(key) is None
    assert store.lookups == 0


async def test_unknown_keys_are_cached_too_and_memory_is_bounded() -> None:
    store = Store()
    cache = KeyCache(store.lookup, ttl=5, max_entries=100)
    for i in range(1000):
        assert await cache.authenticate(f"pk_{i:09d}" + "a" * 34) is None
    assert store.lookups == 1000
    assert len(cache._entries) <= 100
    await cache.authenticate("pk_000000999" + "a" * 34)
    assert store.lookups == 1000


async def test_concurrent_misses_share_one_lookup() -> None:
    store = Store()
    store.delay = 0.05
    cache = KeyCache(store.lookup, ttl=5)
    key = store.add()
    results = await asyncio.gather(*(cache.authenticate(key) for _ in range(20)))
    assert all(r is not None for r in results)
    assert store.lookups == 1


async def test_a_failing_store_is_unavailable_for_every_waiter() -> None:
    store = Store()
    store.fail, store.delay = True, 0.02
    cache = KeyCache(store.lookup, ttl=5)
    key = store.add()
    results = await asyncio.gather(
        *(cache.authenticate(key) for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, KeyStoreUnavailable) for r in results)
    store.fail = False
    assert await cache.authenticate(key) is not None  # failures are not cached
