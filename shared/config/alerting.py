"""Goals, rules and channels as declared in `pacekeeper.yaml` (and mirrored by the alerts API)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Literal, Self
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)

from shared.config.kpis import MAX_TEXT, FieldPath, check_field_path
from shared.config.names import KpiName, Name
from shared.durations import MAX_DURATION, Duration, parse_duration
from shared.text import RefusesNul

LabelName = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]{0,62}$")]
Labels = dict[LabelName, Annotated[str, StringConstraints(max_length=200)]]
Dims = dict[FieldPath, str]

# `15m`, `1h`, `1d`, or period-to-date: `ptd:day|week|month|quarter|year`.
_PTD = re.compile(r"^ptd:(day|week|month|quarter|year)$")


# Goal dates a calendar, a pace and a projection can work with (a goal of 0001-01-01 to
# 9999-12-31 overflowed the pace's date arithmetic).
EARLIEST_DAY = date(1970, 1, 1)
LATEST_DAY = date(2199, 12, 31)


class Direction(StrEnum):
    at_least = "at_least"
    at_most = "at_most"


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    quarter = "quarter"
    year = "year"


class Severity(StrEnum):
    page = "page"
    ticket = "ticket"
    info = "info"


class GoalSpec(RefusesNul):
    """A SMART goal: a fixed target by a deadline, or a recurring growth/target per period."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: Name
    kpi: KpiName
    description: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = ""
    target: float | None = None
    growth: float | None = Field(None, gt=-1, description="relative to the baseline, 0.2 = +20%")
    direction: Direction = Direction.at_least
    start: Annotated[date, Field(ge=EARLIEST_DAY, le=LATEST_DAY)] | None = None
    deadline: Annotated[date, Field(ge=EARLIEST_DAY, le=LATEST_DAY)] | None = None
    period: Period | None = None
    baseline: float | None = None
    dims: Dims = Field(default_factory=dict)
    # How far the projection may miss the target (relative to it) and still be `at_risk`
    # rather than `off_track`.
    at_risk_margin: float = Field(0.1, ge=0, le=1)
    # A closed period restated by late events notifies when its verdict crosses (met <->
    # missed) or its value moves by at least this much (relative); unset: the service's
    # PACEKEEPER_ALERTS_RESTATE_THRESHOLD.
    restate_threshold: float | None = Field(None, ge=0)
    severity: Severity = Severity.ticket
    labels: Labels = Field(default_factory=dict)
    channels: list[Name] = Field(default_factory=list)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.target is None) == (self.growth is None):
            raise ValueError("give exactly one of target (a value) or growth (e.g. 0.2 for +20%)")
        if self.period is None:
            if self.start is None or self.deadline is None:
                raise ValueError("a one-off goal needs start and deadline (or give a period)")
            if self.deadline < self.start:
                raise ValueError("deadline is before start")
            if self.deadline - self.start > MAX_DURATION:
                raise ValueError(f"a goal spans at most {MAX_DURATION.days} days")
        elif self.start is not None or self.deadline is not None:
            raise ValueError("a recurring goal (period) takes no start or deadline")
        return self


class RuleKind(StrEnum):
    threshold = "threshold"
    change = "change"
    absence = "absence"
    anomaly = "anomaly"


class Op(StrEnum):
    lt = "<"
    le = "<="
    gt = ">"
    ge = ">="
    eq = "=="
    ne = "!="


class MinSample(BaseModel):
    """Do not judge a rate on too little data: `kpi` over the same window must reach `value`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kpi: KpiName
    value: float = Field(ge=0)


class Annotations(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    summary: Annotated[str, StringConstraints(max_length=500)] = ""
    description: Annotated[str, StringConstraints(max_length=2000)] = ""


Window = Annotated[str, StringConstraints(min_length=2, max_length=20)]


class Deviation(StrEnum):
    """Which side of its usual band an anomaly rule pages on."""

    below = "below"
    above = "above"
    both = "both"


class AnomalySpec(BaseModel):
    """The seasonal baseline of an anomaly rule: the KPI over the same window 1..`weeks`
    weeks earlier (same weekday and time of day), its median, and a band of `k` robust
    deviations (MAD x 1.4826) around it, never narrower than `min_spread` x |median| nor
    `min_spread_abs` on each side (a flat history has a MAD of 0 and would page on noise)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    direction: Deviation = Deviation.both
    k: float = Field(3.0, gt=0, le=100)
    weeks: int = Field(8, ge=1, le=52)
    # Weeks of history with a value needed for a verdict (none, like min_sample, below it).
    min_weeks: int = Field(4, ge=1, le=52)
    min_spread: float = Field(0.05, ge=0, le=10)
    min_spread_abs: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.min_weeks > self.weeks:
            raise ValueError("min_weeks cannot exceed weeks")
        return self


# Windows an anomaly rule can shift by whole weeks and still compare like with like.
_ANOMALY_PTD = re.compile(r"^ptd:(day|week)$")
MAX_ANOMALY_WINDOW = timedelta(days=7)
_DEFAULT_ANOMALY = AnomalySpec()


class RuleSpec(RefusesNul):
    """threshold: KPI over `window` compared with `value`;
    change: KPI over `window` vs the same window `offset` earlier, relative change `op value`
    (e.g. op "<", value -0.3 = dropped more than 30%); absence: no data for `window`;
    anomaly: KPI over `window` outside its usual band for that weekday and time (`anomaly`)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    name: Name
    kind: RuleKind = RuleKind.threshold
    kpi: KpiName
    window: Window = "15m"
    op: Op = Op.gt
    value: float = 0.0
    offset: Duration | None = None
    for_: Duration = Field(timedelta(0), alias="for")
    keep_firing_for: Duration = timedelta(0)
    group_by: list[FieldPath] = Field(default_factory=list, max_length=5)
    dims: Dims = Field(default_factory=dict)
    min_sample: MinSample | None = None
    anomaly: AnomalySpec | None = None
    severity: Severity = Severity.page
    labels: Labels = Field(default_factory=dict)
    annotations: Annotations = Field(default_factory=Annotations)
    channels: list[Name] = Field(default_factory=list)

    @property
    def anomaly_settings(self) -> AnomalySpec:
        """An anomaly rule's baseline settings, the defaults when it gives none."""
        return self.anomaly or _DEFAULT_ANOMALY

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if _PTD.match(value):
            return value
        if parse_duration(value) <= timedelta(0):
            raise ValueError("window must be positive")
        return value

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, value: list[str]) -> list[str]:
        for key in value:
            check_field_path(key)
        return value

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.kind is RuleKind.change and self.offset is None:
            raise ValueError("a change rule needs offset, e.g. 7d for 'vs the same time last week'")
        if self.kind is not RuleKind.change and self.offset is not None:
            raise ValueError("offset applies to change rules only")
        if self.kind is RuleKind.absence and _PTD.match(self.window):
            raise ValueError("an absence rule needs a duration window such as 30m")
        if self.kind is RuleKind.anomaly:
            if _PTD.match(self.window):
                if not _ANOMALY_PTD.match(self.window):
                    raise ValueError(
                        "an anomaly rule compares with past weeks: its window is a duration"
                        " up to 7d, ptd:day or ptd:week"
                    )
            elif parse_duration(self.window) > MAX_ANOMALY_WINDOW:
                raise ValueError("an anomaly rule's window is at most 7d (one week)")
        elif self.anomaly is not None:
            raise ValueError("anomaly applies to anomaly rules only")
        return self


class ChannelType(StrEnum):
    webhook = "webhook"
    slack = "slack"
    email = "email"
    alertmanager = "alertmanager"
    feishu = "feishu"
    dingtalk = "dingtalk"
    wecom = "wecom"


class Route(BaseModel):
    """Which alerts a channel takes beyond those that name it: by severity and label values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    severity: list[Severity] = Field(default_factory=list)
    labels: Labels = Field(default_factory=dict)


# Chat webhooks whose path or query *is* the credential: anyone with the URL can post.
_URL_IS_SECRET = frozenset(
    {ChannelType.slack, ChannelType.feishu, ChannelType.dingtalk, ChannelType.wecom}
)
MASK = "**********"


def masked_url(url: str, *, whole_path: bool) -> str:
    """A URL safe to show: no user or password, no query values, and for chat webhooks no
    path (its token). Scheme, host and port stay, so an operator can tell which it is."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = (f"{MASK}@" if parts.username or parts.password else "") + (
        f"[{host}]" if ":" in host else host
    )
    if parts.port is not None:
        netloc += f":{parts.port}"
    path = f"/{MASK}" if whole_path and parts.path not in ("", "/") else parts.path
    query = "&".join(
        f"{key}={MASK}" for key, _value in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


# Alertmanager forgets an alert that is not re-sent within its resolve_timeout (5m by
# default), so alerts pushed there are repeated every minute, as Prometheus does.
ALERTMANAGER_REPEAT = timedelta(minutes=1)
DEFAULT_REPEAT = timedelta(hours=4)


class ChannelSpec(RefusesNul):
    """A receiver plus its route, like an Alertmanager route with one receiver: which alerts
    it takes (`match`, or rules/goals naming it) and how they are grouped and repeated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    type: ChannelType
    url: AnyHttpUrl | None = None
    secret: SecretStr | None = None
    # email
    to: list[Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        default_factory=list
    )
    sender: Annotated[str, StringConstraints(max_length=320)] | None = None
    smtp_host: Annotated[str, StringConstraints(max_length=253)] | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: Annotated[str, StringConstraints(max_length=320)] | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    match: Route | None = None
    # Grouping, as in an Alertmanager route: labels that split notifications, the wait
    # before a new group's first notification, the wait before a changed group is notified
    # again, and the wait before an unchanged, still-firing group is repeated.
    group_by: list[LabelName] = Field(default_factory=lambda: ["alertname"], max_length=10)
    group_wait: Duration = timedelta(seconds=30)
    group_interval: Duration = timedelta(minutes=5)
    repeat_interval: Duration | None = None
    send_resolved: bool = True

    @property
    def effective_repeat_interval(self) -> timedelta:
        if self.repeat_interval is not None:
            return self.repeat_interval
        return ALERTMANAGER_REPEAT if self.type is ChannelType.alertmanager else DEFAULT_REPEAT

    @field_serializer("secret", "smtp_password", when_used="always")
    def _reveal_for_storage(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        # Secrets are masked everywhere except when the store writes them (context reveal).
        if value is None:
            return None
        context = info.context or {}
        return value.get_secret_value() if context.get("reveal") else MASK

    @field_serializer("url", when_used="always")
    def _mask_url(self, value: AnyHttpUrl | None, info: SerializationInfo) -> str | None:
        if value is None:
            return None
        if (info.context or {}).get("reveal"):
            return str(value)
        return masked_url(str(value), whole_path=self.type in _URL_IS_SECRET)

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if self.type is ChannelType.email:
            if not self.to or not self.smtp_host:
                raise ValueError("an email channel needs `to` and `smtp_host`")
        elif self.url is None:
            raise ValueError(f"a {self.type.value} channel needs `url`")
        return self


ConfigSection = Literal["kpis", "goals", "rules", "channels"]
