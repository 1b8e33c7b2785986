"""Alerts settings: `PACEKEEPER_ALERTS_*` on top of the shared base."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, SecretStr, model_validator

from shared.settings import BaseServiceSettings


class AlertsSettings(BaseServiceSettings):
    alerts_host: str = "127.0.0.1"
    alerts_port: int = Field(8082, ge=0, le=65535)
    # GETs only; unset means only the admin token can read.
    alerts_read_token: SecretStr | None = None
    # Public URL of this API, linked from notifications (Alertmanager's externalURL).
    alerts_external_url: str = "http://127.0.0.1:8082"

    # Every rule and goal is evaluated this often; KPI updates from the aggregator trigger
    # the affected rules in between.
    alerts_tick_seconds: float = Field(30.0, gt=0)
    # KPI updates arriving within this long are evaluated together (the aggregator commits
    # batches every few hundred ms; one evaluation per burst, not per message).
    alerts_update_debounce_seconds: float = Field(0.05, ge=0)
    # Due notification groups (group_wait, group_interval, repeat_interval) are looked at
    # this often, so timers are honoured to within this much.
    alerts_dispatch_seconds: float = Field(1.0, gt=0)
    alerts_consume_updates: bool = True
    # Evaluate and enqueue, but leave delivery to another instance or a later start. For
    # staged roll-outs and for the crash test, which must stop between the two.
    alerts_deliver: bool = True

    # Leader election: a standby tries the advisory lock this often. The server drops a
    # dead leader's connection after ~11 s of failed TCP keepalives (5 s idle + 3 x 2 s),
    # so a standby takes over within 15 s even when the leader's host vanishes.
    alerts_standby_poll_seconds: float = Field(2.0, gt=0)
    alerts_lease_heartbeat_seconds: float = Field(5.0, gt=0)

    # Delivery: attempts per notification and the exponential backoff between them.
    alerts_delivery_max_attempts: int = Field(8, ge=1, le=100)
    alerts_delivery_backoff_seconds: float = Field(1.0, gt=0)
    alerts_delivery_backoff_max_seconds: float = Field(300.0, gt=0)
    alerts_delivery_timeout_seconds: float = Field(10.0, gt=0)
    alerts_delivery_concurrency: int = Field(16, ge=1, le=256)
    # Deliveries to loopback, private, link-local and reserved addresses (the database, the
    # cloud metadata service) are refused unless this is set: the local demo's receiver.
    alerts_allow_private_targets: bool = False
    # The API's own connections, apart from the evaluator's: no reader can take the
    # evaluator's connections, and a read that asks for too much is cancelled after this
    # long (a 100-year series of a formula KPI held a connection for over a minute).
    alerts_api_pool_size: int = Field(8, ge=1, le=100)
    # The largest request body the API reads: a whole pacekeeper.yaml section of definitions
    # is a few KiB; anything near this is a mistake or an attack.
    alerts_max_body_bytes: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024)
    alerts_api_statement_timeout_seconds: float = Field(10.0, gt=0, le=600)

    # Resolved alerts stay listed under GET /v1/alerts this long.
    alerts_resolved_retention_hours: float = Field(168.0, gt=0)
    # Goal readings for dashboards (goal_reading_history, one per goal and 5 minutes) are
    # kept this long: ~26,000 rows per goal for 90 days.
    alerts_goal_history_retention: timedelta = Field(timedelta(days=90), gt=timedelta(0))
    # A closed goal period restated by late events notifies when its verdict crosses (met
    # <-> missed) or its value moves at least this much, relative to what was last reported
    # (a goal's `restate_threshold` overrides it).
    alerts_restate_threshold: float = Field(0.05, ge=0)
    alerts_shutdown_timeout_seconds: float = Field(10.0, gt=0)

    # The web scorecard (GET / on this port): a login with either token opens a session
    # cookie this long. Secure cookies need HTTPS in front of the service (a proxy).
    alerts_web_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    alerts_web_secure_cookie: bool = False
    # Open pages refresh their numbers this often; every viewer shares one reading of the
    # database per `cache` seconds, so a hundred open tabs cost what one does.
    alerts_web_refresh_seconds: float = Field(10.0, ge=1, le=3600)
    alerts_web_cache_seconds: float = Field(5.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _tokens_differ(self) -> AlertsSettings:
        read = self.alerts_read_token
        if read is not None and read.get_secret_value() == self.admin_token.get_secret_value():
            raise ValueError("PACEKEEPER_ALERTS_READ_TOKEN must differ from the admin token")
        return self
