"""The cheap check that tells the alerts service to reload its definitions."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Per config table: row count, version sum and newest change. Deleting, adding or editing
# any definition changes at least one of the three; the time zone is read as it is.
_DIGEST = text(
    "SELECT "
    + ", ".join(
        f"(SELECT count(*) || ':' || coalesce(sum(version), 0) || ':' ||"
        f" coalesce(max(updated_at)::text, '') FROM {table})"
        for table in ("kpis", "rules", "goals", "channels")
    )
    + ", (SELECT value FROM app_settings WHERE key = 'timezone')"
)


async def config_digest(session: AsyncSession) -> tuple[str | None, ...]:
    """Changes whenever any definition or the time zone changes."""
    return tuple((await session.execute(_DIGEST)).one())
