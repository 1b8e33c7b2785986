"""Typed settings shared by every service; each service extends `BaseServiceSettings`.

Every value comes from an environment variable with the prefix `PACEKEEPER_`.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.i18n import DEFAULT_LOCALE, Locale

EVENTS_TOPIC = "pacekeeper.events.v1"
DLQ_TOPIC = "pacekeeper.events.dlq.v1"
KPI_UPDATES_TOPIC = "pacekeeper.kpi-updates.v1"

LOCAL_DATABASE_URL = "postgresql+psycopg://pacekeeper:pacekeeper@127.0.0.1:5432/pacekeeper"
# Well-known local defaults; refused when PACEKEEPER_ENVIRONMENT=production.
_UNSAFE_ADMIN_TOKENS = {"", "changeme", "pacekeeper-local-admin"}


class BaseServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PACEKEEPER_", extra="ignore", frozen=True)

    environment: str = Field("local", description="local | test | production")
    kafka_bootstrap: str = "127.0.0.1:9092"
    # Topics the services create when missing (shared.kafka.ensure_topics). On a cluster:
    # 3 and 2, so that one broker may be lost without losing or refusing an event.
    kafka_topic_replication_factor: int = Field(1, ge=1, le=32)
    kafka_topic_min_insync_replicas: int | None = Field(None, ge=1, le=32)
    # How every producer, consumer and admin client talks to the brokers (shared.kafka).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    # The CA that signed the brokers' certificates; unset: the system's trusted CAs.
    kafka_ssl_cafile: FilePath | None = None
    # A client certificate and its key (PEM), for brokers that require one (ssl.client.auth).
    kafka_ssl_certfile: FilePath | None = None
    kafka_ssl_keyfile: FilePath | None = None
    kafka_ssl_key_password: SecretStr | None = None
    events_topic: str = EVENTS_TOPIC
    dlq_topic: str = DLQ_TOPIC
    kpi_updates_topic: str = KPI_UPDATES_TOPIC
    database_url: SecretStr = SecretStr(LOCAL_DATABASE_URL)
    # Tests isolate themselves in a schema of their own; services follow it via search_path.
    database_schema: str | None = None
    timezone: str = "UTC"
    # The language of the report, the web scorecard and notification texts, with its number,
    # currency and date formats (shared.i18n): en | zh-CN.
    locale: Locale = DEFAULT_LOCALE
    admin_token: SecretStr = SecretStr("pacekeeper-local-admin")
    log_level: str = "INFO"
    log_json: bool = False
    # At most 7 days: kpi_value reads minutes older than 8 days from the continuous
    # aggregates (shared.migrations.helpers.CAGG_HORIZON), which must have been refreshed
    # after the last event that could change them.
    allowed_lateness: timedelta = Field(timedelta(days=7), gt=timedelta(0), le=timedelta(days=7))
    max_future_skew: timedelta = timedelta(hours=24)
    # What one HTTP client may cost the server (shared.http_server).
    http_max_header_bytes: int = Field(32 * 1024, ge=1024, le=1024 * 1024)
    http_header_timeout_seconds: float = Field(10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    http_linger_timeout_seconds: float = Field(5.0, gt=0, le=60)
    http_linger_bytes: int = Field(64 * 1024 * 1024, ge=0, le=1024 * 1024 * 1024)
    dedupe_window: timedelta = timedelta(days=7)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("database_schema")
    @classmethod
    def _plain_identifier(cls, value: str | None) -> str | None:
        if value is not None and not value.replace("_", "").isalnum():
            raise ValueError("database_schema must be letters, digits and underscores")
        return value

    @model_validator(mode="after")
    def _complete_kafka_security(self) -> BaseServiceSettings:
        if self.kafka_security_protocol == "SASL_SSL" and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                "PACEKEEPER_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs"
                " PACEKEEPER_KAFKA_SASL_USERNAME and PACEKEEPER_KAFKA_SASL_PASSWORD"
            )
        min_isr = self.kafka_topic_min_insync_replicas
        if min_isr is not None and min_isr > self.kafka_topic_replication_factor:
            raise ValueError(
                "PACEKEEPER_KAFKA_TOPIC_MIN_INSYNC_REPLICAS cannot exceed"
                " PACEKEEPER_KAFKA_TOPIC_REPLICATION_FACTOR: no write could succeed"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                "PACEKEEPER_KAFKA_SSL_CERTFILE and PACEKEEPER_KAFKA_SSL_KEYFILE go together"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> BaseServiceSettings:
        if self.environment == "production":
            if self.admin_token.get_secret_value() in _UNSAFE_ADMIN_TOKENS:
                raise ValueError("PACEKEEPER_ADMIN_TOKEN must be set to a secret in production")
            if "pacekeeper:pacekeeper@" in self.database_url.get_secret_value():
                raise ValueError("PACEKEEPER_DATABASE_URL uses the local default password")
        return self

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)
