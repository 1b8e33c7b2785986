"""Exact-state rows this process has committed recently, so a batch writes only new ones.

Distinct values and retention comebacks are sets: a row (kpi, dims, minute, value) or
(kpi, actor, slot) is stored once however many events produce it. A user active for a
while produces the same rows batch after batch, and inserting them with ON CONFLICT DO
NOTHING costs twice a plain insert. Rows this cache knows are dropped before the write;
the rest are nearly always new and go in with a plain COPY (the repository falls back to
ON CONFLICT if one was stored by another process after all).

Only rows of committed transactions are remembered, and everything is forgotten when the
definitions change (a backfill may have rebuilt the state differently) or when the
process opens a new database connection (after a restart, a restore or a failover the
database may not hold what this process saw committed).

Two generations bound the memory: when the young one is full it becomes the old one and
the previous old one is dropped, so the rows seen most recently are the ones kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

Row = TypeVar("Row")


class KnownRows(Generic[Row]):
    def __init__(self, capacity: int) -> None:
        self._half = max(1, capacity // 2)
        self._young: set[Row] = set()
        self._old: set[Row] = set()

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def unknown(self, rows: Iterable[Row]) -> list[Row]:
        young, old = self._young, self._old
        return [row for row in rows if row not in young and row not in old]

    def remember(self, rows: Iterable[Row]) -> None:
        self._young.update(rows)
        if len(self._young) >= self._half:
            self._old, self._young = self._young, set()

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()
