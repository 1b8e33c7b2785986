"""The KPI definitions the aggregator applies, kept current without a restart.

Correctness comes from the batch transaction: it reads the stored versions (behind the
definitions barrier, see repository.definitions_barrier) and reloads when they differ, so
a batch is always applied with the definitions committed before it began. LISTEN/NOTIFY
on `pacekeeper_config` only makes the reload eager, so the first batch after an
`apply` does not pay for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.aggregator import metrics, repository
from services.aggregator.catalog import Catalog, compile_catalog
from shared.config.kpis import KpiSpec

log = logging.getLogger(__name__)
CHANNEL = "pacekeeper_config"
_SPEC = TypeAdapter(KpiSpec)


class Definitions:
    """The catalog is keyed by storage key: each KPI's active version, and while a new
    version of it recomputes its history, that version too (see services.aggregator.recompute)."""

    def __init__(self) -> None:
        self.catalog: Catalog = compile_catalog({})
        self.versions: dict[str, repository.VersionKey] = {}
        # KPI name -> the storage key of its active version, and of one recomputing.
        self.active: dict[str, str] = {}
        self.pending: dict[str, str] = {}
        self.stale = asyncio.Event()

    async def load(self, session: AsyncSession) -> None:
        specs: dict[str, KpiSpec] = {}
        announce_as: dict[str, str | None] = {}
        versions: dict[str, repository.VersionKey] = {}
        active_keys: dict[str, str] = {}
        pending_keys: dict[str, str] = {}
        for kpi in await repository.kpi_definitions(session):
            versions[kpi.name] = kpi.versions  # remembered even when invalid: no reload loop
            for key, spec, active in kpi.writes:
                try:
                    specs[key] = _SPEC.validate_python(spec)
                except ValidationError as exc:
                    log.error(
                        "skipping invalid KPI definition", extra={"kpi": key, "error": str(exc)}
                    )
                    continue
                (active_keys if active else pending_keys)[kpi.name] = key
                if key != kpi.name or not active:
                    announce_as[key] = kpi.name if active else None
        self.catalog = compile_catalog(specs, announce_as)
        self.active, self.pending = active_keys, pending_keys
        if versions != self.versions:
            log.info("KPI definitions loaded", extra={"kpis": len(specs)})
        self.versions = versions
        self.stale.clear()
        metrics.definitions_loaded.set(len(specs))

    async def ensure_current(self, session: AsyncSession) -> bool:
        """Inside a batch transaction: reload if anything changed; True when it did."""
        versions = await repository.definitions_barrier(session)
        if versions == self.versions:
            return False
        await self.load(session)
        return True


async def listen(
    database_url: str,
    on_change: Callable[[], Coroutine[Any, Any, None]],
    *,
    retry_delay: float = 2.0,
) -> None:
    """Call `on_change` for every config notification until cancelled; reconnects on errors."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                # Anything may have changed while we were not listening.
                await on_change()
                async for _ in conn.notifies():
                    await on_change()
        except (psycopg.Error, OSError) as exc:
            log.warning("config listener reconnecting", extra={"error": str(exc)})
            await asyncio.sleep(retry_delay)
