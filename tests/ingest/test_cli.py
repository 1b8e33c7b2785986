"""`pacekeeper keys create|revoke|list` against a real, migrated schema."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli import app
from shared.settings import BaseServiceSettings

pytestmark = pytest.mark.integration


def test_create_prints_the_key_alone_on_the_last_line_then_revoke(
    settings: BaseServiceSettings,
) -> None:
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--source", "web-shop"])
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("pk_")
    assert len(key) == 46
    assert " " not in key

    listed = runner.invoke(app, ["keys", "list"])
    assert key[:12] in listed.output
    assert "active" in listed.output
    assert key not in listed.output

    revoked = runner.invoke(app, ["keys", "revoke", key[:12]])
    assert revoked.exit_code == 0, revoked.output
    again = runner.invoke(app, ["keys", "revoke", key[:12]])
    assert again.exit_code == 1


def test_create_refuses_a_bad_source(settings: BaseServiceSettings) -> None:
    result = CliRunner().invoke(app, ["keys", "create", "--source", "Not A Source!"])
    assert result.exit_code != 0
