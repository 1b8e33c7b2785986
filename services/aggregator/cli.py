"""`pacekeeper backfill`: recompute a KPI from stored events, with a progress bar."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shared.durations import parse_duration
from shared.settings import BaseServiceSettings
from shared.terminal import labelled


def _moment(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def backfill_command(
    kpi: str = typer.Option(..., "--kpi", help="KPI to recompute"),
    t_from: str = typer.Option(
        ..., "--from", help="start, ISO 8601 (UTC unless an offset is given)"
    ),
    t_to: str | None = typer.Option(None, "--to", help="end (exclusive), default now"),
    chunk: str = typer.Option("1h", help="events per transaction, as a time span"),
) -> None:
    """Recompute a KPI (new or changed definition) from stored events, while the aggregator runs."""
    # Imported here so `pacekeeper --help` and the other commands do not load SQLAlchemy.
    from services.aggregator.backfill import BackfillError, backfill

    console = Console(stderr=True)
    try:
        start = _moment(t_from)
        end = _moment(t_to) if t_to else datetime.now(UTC)
        size: timedelta = parse_duration(chunk)
    except ValueError as exc:
        console.print(labelled("error", "red", str(exc)), highlight=False)
        raise typer.Exit(code=2) from None
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[events]} events"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"backfill {kpi}", total=None, events=0)
        seen = 0

        def advance(done: int, total: int, events: int) -> None:
            nonlocal seen
            seen += events
            progress.update(task, completed=done, total=total, events=seen)

        try:
            result = asyncio.run(
                backfill(BaseServiceSettings(), kpi, start, end, chunk=size, progress=advance)
            )
        except BackfillError as exc:
            console.print(labelled("error", "red", str(exc)), highlight=False)
            raise typer.Exit(code=1) from None
    console.print(
        f"[green]backfilled[/green] {result.kpi}: {result.events} events, "
        f"{result.t_from.isoformat()} → {result.t_to.isoformat()} in {result.chunks} chunks"
    )


kpis_app = typer.Typer(help="KPI definitions and their versions.", no_args_is_help=True)


@kpis_app.command("history")
def history_command(name: str = typer.Argument(..., help="KPI name")) -> None:
    """Every version of a KPI's definition: when and by whom it was applied, what changed,
    its state and the progress of its history's recompute."""
    from rich.table import Table

    from shared.config.store import kpi_history
    from shared.db import make_engine, make_sessionmaker, transaction
    from shared.i18n import format_datetime, format_percent, translations

    settings = BaseServiceSettings()
    _ = translations(settings.locale).gettext

    async def read() -> list[Any]:
        engine = make_engine(settings, application_name="pacekeeper-cli")
        try:
            async with transaction(make_sessionmaker(engine)) as session:
                return await kpi_history(session, name)
        finally:
            await engine.dispose()

    versions = asyncio.run(read())
    console = Console()
    if not versions:
        console.print(labelled("error", "red", _("No KPI named %(name)s.") % {"name": name}))
        raise typer.Exit(code=1)
    states = {
        "recomputing": _("recomputing"),
        "active": _("active"),
        "retired": _("retired"),
        "superseded": _("superseded"),
    }
    table = Table(title=_("Definition history of %(name)s") % {"name": name})
    for column in (
        _("Version"),
        _("Applied"),
        _("By"),
        _("What changed"),
        _("State"),
        _("Progress"),
    ):
        table.add_column(column)
    for v in versions:
        changes = "\n".join(c.describe() for c in v.changes) or _("first definition")
        progress = ""
        if v.progress is not None:
            progress = _("%(share)s of the history, %(events)s events") % {
                "share": format_percent(v.progress, settings.locale),
                "events": v.events_processed,
            }
        table.add_row(
            str(v.version),
            format_datetime(v.applied_at, settings.locale),
            v.applied_by,
            changes,
            states[v.state.value],
            progress,
        )
    console.print(table)
