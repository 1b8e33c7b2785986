"""`pacekeeper apply`: store a validated config in one transaction and say what changed."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from shared.config import PacekeeperConfig
from shared.config.store import SECTIONS, apply_config
from shared.db import make_engine, make_sessionmaker, transaction
from shared.settings import BaseServiceSettings


async def apply_file(config: PacekeeperConfig, *, prune: bool, console: Console) -> None:
    settings = BaseServiceSettings()
    engine = make_engine(settings, application_name="pacekeeper-apply", pool_size=1)
    try:
        async with transaction(make_sessionmaker(engine)) as session:
            result = await apply_config(session, config, prune=prune)
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
