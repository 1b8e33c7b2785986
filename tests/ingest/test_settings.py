"""Ingest settings refuse values that would break the contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.ingest.settings import IngestSettings

pytestmark = pytest.mark.unit


def test_defaults_follow_the_contract() -> None:
    settings = IngestSettings()
    assert (settings.ingest_host, settings.ingest_port) == ("127.0.0.1", 8080)
    assert settings.ingest_max_request_bytes == 512 * 1024
    assert settings.ingest_key_cache_ttl <= 10


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACEKEEPER_INGEST_PORT", "9999")
    monkeypatch.setenv("PACEKEEPER_INGEST_RATE_PER_SECOND", "50")
    settings = IngestSettings()
    assert (settings.ingest_port, settings.ingest_rate_per_second) == (9999, 50)


@pytest.mark.parametrize(
    "values",
    [
        {"ingest_key_cache_ttl": 11},  # a revoked key must stop within 10 s
        {"ingest_rate_burst": 999},  # a full batch of 1000 must be able to pass
        {"ingest_max_request_bytes": 1024 * 1024},  # the contract's limit is 512 KiB
        {"ingest_produce_timeout": 0},
    ],
)
def test_unsafe_values_are_refused(values: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        IngestSettings(**values)  # type: ignore[arg-type]
