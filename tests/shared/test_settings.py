from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from shared.settings import BaseServiceSettings

pytestmark = pytest.mark.unit


def test_reads_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACEKEEPER_KAFKA_BOOTSTRAP", "broker:29092")
    monkeypatch.setenv("PACEKEEPER_TIMEZONE", "Asia/Shanghai")
    monkeypatch.setenv("PACEKEEPER_ALLOWED_LATENESS", "P3D")
    settings = BaseServiceSettings()
    assert settings.kafka_bootstrap == "broker:29092"
    assert settings.zone.key == "Asia/Shanghai"
    assert settings.allowed_lateness == timedelta(days=3)


@pytest.mark.parametrize("lateness", ["P8D", "PT0S", "-P1D"])
def test_lateness_beyond_what_the_aggregates_wait_for_is_refused(
    monkeypatch: pytest.MonkeyPatch, lateness: str
) -> None:
    # Continuous aggregates answer for minutes older than 8 days: a later event must not
    # change those minutes behind their back.
    monkeypatch.setenv("PACEKEEPER_ALLOWED_LATENESS", lateness)
    with pytest.raises(ValidationError, match="allowed_lateness"):
        BaseServiceSettings()


def test_unknown_timezone_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACEKEEPER_TIMEZONE", "Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown time zone"):
        BaseServiceSettings()


def test_production_refuses_default_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACEKEEPER_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="ADMIN_TOKEN"):
        BaseServiceSettings()
    monkeypatch.setenv("PACEKEEPER_ADMIN_TOKEN", "a-real-secret-token-value")
    with pytest.raises(ValidationError, match="local default password"):
        BaseServiceSettings()
    monkeypatch.setenv("PACEKEEPER_DATABASE_URL", "postgresql+psycopg://svc:S3cr3t@db/pacekeeper")
    assert BaseServiceSettings().environment == "production"


def test_schema_name_must_be_an_identifier() -> None:
    with pytest.raises(ValidationError, match="database_schema"):
        BaseServiceSettings(database_schema="x; drop table events")
