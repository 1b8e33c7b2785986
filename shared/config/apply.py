"""`pacekeeper apply`: store a validated config in one transaction and say what changed."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from shared.config import PacekeeperConfig
from shared.config.store import SECTIONS, apply_config, set_setting
from shared.db import make_engine, make_sessionmaker, transaction
from shared.settings import BaseServiceSettings


async def apply_file(
    config: PacekeeperConfig, *, prune: bool, console: Console, applied_by: str | None = None
) -> None:
    settings = BaseServiceSettings()
    engine = make_engine(settings, application_name="pacekeeper-apply", pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            result = await apply_config(session, config, prune=prune, applied_by=applied_by)
            if config.timezone is None and "timezone" in settings.model_fields_set:
                await set_setting(session, "timezone", settings.timezone)
    finally:
        await engine.dispose()
    table = Table("section", "created", "updated", "unchanged", "deleted", title="pacekeeper apply")
    for section in SECTIONS:
        table.add_row(
            section,
            *(
                str(len(getattr(result, what).get(section, [])))
                for what in ("created", "updated", "unchanged", "deleted")
            ),
        )
    console.print(table)


async def sync_timezone(settings: BaseServiceSettings) -> bool:
    """Store PACEKEEPER_TIMEZONE where the SQL functions read it, when it was set explicitly.

    The business time zone lives in `app_settings` because `kpi_series` needs it inside the
    database; a config file's `timezone:` wins over the environment when both are given.
    """
    if "timezone" not in settings.model_fields_set:
        return False
    engine = make_engine(settings, application_name="pacekeeper-migrate", pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            await set_setting(session, "timezone", settings.timezone)
    finally:
        await engine.dispose()
    return True
