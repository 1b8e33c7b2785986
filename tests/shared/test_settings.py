from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.kafka_security import client_security
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


def test_sasl_ssl_needs_a_user_and_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACEKEEPER_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="PACEKEEPER_KAFKA_SASL_USERNAME"):
        BaseServiceSettings()
    monkeypatch.setenv("PACEKEEPER_KAFKA_SASL_USERNAME", "ops")
    monkeypatch.setenv("PACEKEEPER_KAFKA_SASL_PASSWORD", "secret")
    options = client_security(BaseServiceSettings())
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("ops", "secret")
    assert options["ssl_context"].check_hostname  # a broker's name is always verified


def test_plaintext_adds_no_client_options() -> None:
    assert client_security(BaseServiceSettings()) == {}


def test_a_client_certificate_needs_its_key_and_files_that_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certificate = tmp_path / "client.pem"
    certificate.write_text("not read until a client connects")
    monkeypatch.setenv("PACEKEEPER_KAFKA_SSL_CERTFILE", str(certificate))
    with pytest.raises(ValidationError, match="go together"):
        BaseServiceSettings()
    monkeypatch.setenv("PACEKEEPER_KAFKA_SSL_KEYFILE", str(tmp_path / "missing.pem"))
    with pytest.raises(ValidationError, match="kafka_ssl_keyfile"):
        BaseServiceSettings()


def test_run_names_the_setting_a_service_cannot_start_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from services.cli import app

    monkeypatch.setenv("PACEKEEPER_KAFKA_SSL_CAFILE", "/nonexistent/ca.pem")
    result = CliRunner().invoke(app, ["run", "aggregator"])
    assert result.exit_code == 2
    assert "PACEKEEPER_KAFKA_SSL_CAFILE" in result.output
    assert "Traceback" not in result.output


def test_min_insync_replicas_cannot_exceed_the_replication_factor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PACEKEEPER_KAFKA_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("PACEKEEPER_KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "2")
    assert BaseServiceSettings().kafka_topic_min_insync_replicas == 2
    monkeypatch.setenv("PACEKEEPER_KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "4")
    with pytest.raises(ValidationError, match="no write could succeed"):
        BaseServiceSettings()
