"""The demo's commands as a user types them (no services needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import typer
from typer.testing import CliRunner

from services.cli import app
from services.demo.cli import parse_time, read_keys

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def test_parse_time() -> None:
    assert parse_time("now", NOW) == NOW
    assert parse_time("-3h", NOW) == NOW - timedelta(hours=3)
    assert parse_time("+1h30m", NOW) == NOW + timedelta(minutes=90)
    assert parse_time("2026-11-20T08:00:00Z", NOW) == datetime(2026, 11, 20, 8, tzinfo=UTC)
    assert parse_time("2026-11-20T08:00", NOW) == datetime(2026, 11, 20, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        parse_time("-soon", NOW)


def test_read_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# demo keys\nads = pk_b\n\n", encoding="utf-8")
    assert read_keys(["web-shop=pk_a"], path) == {"web-shop": "pk_a", "ads": "pk_b"}
    with pytest.raises(typer.BadParameter):
        read_keys(["web-shop"], None)


def test_simulate_dry_run_prints_the_same_ndjson_for_the_same_seed() -> None:
    args = ["simulate", "--dry-run", "--seed", "3", "--start", "2026-11-20T09:00Z"]
    args += ["--end", "2026-11-20T09:10Z", "--scenario", "checkout-collapse"]
    args += ["--incident-at", "2026-11-20T09:00Z"]
    runner = CliRunner()
    first = runner.invoke(app, args)
    second = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    lines = [orjson.loads(line) for line in first.stdout.splitlines()]
    assert len(lines) > 50
    assert {line["source"] for line in lines} >= {"web-shop", "mobile-app"}
    assert all(line["event"]["time"] < "2026-11-20T09:10" for line in lines)


def test_simulate_needs_keys_to_send() -> None:
    result = CliRunner().invoke(app, ["simulate", "--duration", "1", "--key", "web-shop=pk_x"])
    assert result.exit_code == 2
    assert "no API key" in result.output


def test_report_refuses_an_unknown_format() -> None:
    result = CliRunner().invoke(app, ["report", "--period", "2026-11", "--format", "docx"])
    assert result.exit_code == 2
