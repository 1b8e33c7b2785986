"""`pacekeeper` command line: wiring only; each command lives with the service it belongs to."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from services.aggregator.cli import backfill_command, kpis_app
from services.demo.cli import register as register_demo_commands
from services.ingest.cli import app as keys_app

app = typer.Typer(
    name="pacekeeper",
    help="Operations KPIs you can trust: ingest, aggregate, alert.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


class Service(StrEnum):
    ingest = "ingest"
    aggregator = "aggregator"
    alerts = "alerts"


@app.command()
def run(service: Service = typer.Argument(..., help="ingest | aggregator | alerts")) -> None:
    """Run one service in the foreground until Ctrl-C or SIGTERM."""
    if service is Service.ingest:
        from services.ingest.main import main as run_service
    elif service is Service.aggregator:
        from services.aggregator.main import main as run_service
    else:
        from services.alerts.main import main as run_service
    from pydantic import ValidationError

    try:
        run_service()
    except ValidationError as exc:  # a setting the service cannot start with: name each one
        for error in exc.errors():
            field = "_".join(str(part) for part in error["loc"]).upper()
            typer.echo(
                f"error: {f'PACEKEEPER_{field}' if field else 'settings'}: {error['msg']}", err=True
            )
        raise typer.Exit(2) from None


@app.command()
def migrate(revision: str = typer.Option("heads", help="Alembic revision to upgrade to")) -> None:
    """Migrate the database to the newest schema (idempotent)."""
    import asyncio

    from shared.config.apply import sync_timezone
    from shared.migrations import upgrade
    from shared.settings import BaseServiceSettings

    settings = BaseServiceSettings()
    upgrade(settings, revision)
    typer.echo(f"database migrated to {revision}")
    if asyncio.run(sync_timezone(settings)):
        typer.echo(f"business time zone set to {settings.timezone}")


@app.command("db-status")
def db_status(
    wait: float = typer.Option(
        0, min=0, help="seconds to wait until every policy job has succeeded at least once"
    ),
) -> None:
    """The database's PostgreSQL and TimescaleDB versions, hypertables and policy jobs.
    Exits 1 if a policy job failed, or if --wait passed without every job succeeding."""
    from rich.console import Console
    from rich.table import Table

    from shared.durations import format_duration
    from shared.settings import BaseServiceSettings
    from shared.timescaledb import wait_for_policies

    console = Console(highlight=False)
    status = wait_for_policies(BaseServiceSettings(), within=wait)
    console.print(f"database: {status.summary()} (schema {status.schema})")
    if status.timescaledb is None:
        return
    table = Table("job", "policy", "every", "last run", "successes", "failures")
    for job in status.jobs:
        table.add_row(
            str(job.job_id),
            job.label,
            format_duration(job.schedule),
            job.last_status or "not yet",
            str(job.successes),
            str(job.failures),
        )
    console.print(table)
    if status.failed:
        console.print(f"[red]policy jobs failed: {', '.join(j.label for j in status.failed)}[/]")
        raise typer.Exit(1)
    if wait and not status.policies_proven:
        console.print(f"[red]not every policy job succeeded within {wait:g} s[/]")
        raise typer.Exit(1)


@app.command("apply")
def apply_config(
    file: Path = typer.Option(..., "-f", "--file", exists=True, dir_okay=False, readable=True),
    prune: bool = typer.Option(False, help="Delete stored definitions that the file omits"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate only; store nothing"),
    by: str = typer.Option(
        "", "--by", help="Who applies it, kept with each new KPI version (default: user@host)"
    ),
) -> None:
    """Validate a pacekeeper.yaml and store it; running services pick the change up."""
    import asyncio
    import getpass
    import socket

    from rich.console import Console

    from shared.config import ConfigError, load_config_file
    from shared.config.apply import apply_file
    from shared.terminal import labelled

    console = Console(stderr=True)
    try:
        config = load_config_file(file)
    except ConfigError as exc:
        for problem in exc.problems:
            console.print(labelled("error", "red", f"{file}: {problem}"), highlight=False)
        raise typer.Exit(code=1) from None
    if dry_run:
        console.print(labelled("valid", "green", str(file)), highlight=False)
        return
    applied_by = by or f"{getpass.getuser()}@{socket.gethostname()}"
    asyncio.run(apply_file(config, prune=prune, console=console, applied_by=applied_by))


app.command("backfill")(backfill_command)
app.add_typer(keys_app, name="keys")
app.add_typer(kpis_app, name="kpis")
register_demo_commands(app)  # simulate, scorecard, report, demo


def main() -> None:
    app()
