"""Who is calling: the API key from the request, checked against a short-lived cache.

A key is cached (found or not) for `ttl` seconds, so a revocation is seen within `ttl`
and a flood of requests with one key costs one database lookup per `ttl`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.ingest.keys import StoredKey, lookup_prefix, matches

Lookup = Callable[[str], Awaitable[StoredKey | None]]


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: every event it sends belongs to `source`."""

    key_prefix: str
    source: str


class KeyStoreUnavailable(Exception):
    """The key could not be checked (database down); the caller should retry later."""


def credentials(authorization: str | None) -> str | None:
    """The API key from `Bearer <key>` or HTTP Basic with the key as user (Segment's way)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, _password = decoded.partition(":")
        return user or None
    return None


@dataclass(slots=True)
class _Entry:
    key: StoredKey | None
    expires: float


class KeyCache:
    def __init__(
        self,
        lookup: Lookup,
        *,
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._pending: dict[str, asyncio.Future[StoredKey | None]] = {}

    async def authenticate(self, key: str | None) -> Principal | None:
        """The caller behind `key`, or None when the key is missing, unknown or revoked.

        Raises `KeyStoreUnavailable` when the key is not cached and the lookup fails.
        """
        if key is None:
            return None
        prefix = lookup_prefix(key)
        if prefix is None:
            return None  # malformed: no need to ask the database
        stored = await self._stored(prefix)
        if stored is None or not stored.active or not matches(key, stored):
            return None
        return Principal(key_prefix=prefix, source=stored.source)

    async def _stored(self, prefix: str) -> StoredKey | None:
        entry = self._entries.get(prefix)
        if entry is not None and entry.expires > self._clock():
            return entry.key
        pending = self._pending.get(prefix)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[StoredKey | None] = asyncio.get_running_loop().create_future()
        self._pending[prefix] = future
        try:
            stored = await self._lookup(prefix)
        except Exception as exc:  # any driver error means "cannot tell now"
            error = KeyStoreUnavailable(f"{type(exc).__name__}: {exc}")
            future.set_exception(error)
            future.exception()  # waiters, if any, get it; mark it retrieved either way
            raise error from exc
        else:
            future.set_result(stored)
            self._remember(prefix, stored)
            return stored
        finally:
            del self._pending[prefix]
            if not future.done():
                future.cancel()  # the lookup itself was cancelled (shutdown)

    def _remember(self, prefix: str, stored: StoredKey | None) -> None:
        if len(self._entries) >= self._max_entries:
            # Oldest first (dicts keep insertion order); random junk prefixes cannot grow memory.
            for old in list(self._entries)[: self._max_entries // 10 + 1]:
                del self._entries[old]
        self._entries.pop(prefix, None)
        self._entries[prefix] = _Entry(stored, self._clock() + self._ttl)
