"""Silences and acknowledgements: two ways to keep an alert quiet, one idea, `mutes(labels)`.

A silence mutes every alert whose labels match all its matchers while it is active
(Alertmanager's matchers: `=`, `!=`, `=~`, `!~`, regexes anchored at both ends). An
acknowledgement mutes the repeats of one alert episode until it resolves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Protocol, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.alerts.evaluation.rules import fingerprint
from shared.config.alerting import LabelName
from shared.text import RefusesNul


class Muter(Protocol):
    def mutes(self, labels: Mapping[str, str]) -> bool: ...


class MatchType(StrEnum):
    equal = "="
    not_equal = "!="
    regex = "=~"
    not_regex = "!~"


class Matcher(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: LabelName
    value: Annotated[str, StringConstraints(max_length=500)]
    type: MatchType = MatchType.equal

    @model_validator(mode="after")
    def _regex_compiles(self) -> Self:
        if self.type in (MatchType.regex, MatchType.not_regex):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return self

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(self.value)

    def matches(self, labels: Mapping[str, str]) -> bool:
        # A missing label matches as the empty string, as in Alertmanager.
        actual = labels.get(self.name, "")
        if self.type is MatchType.equal:
            return actual == self.value
        if self.type is MatchType.not_equal:
            return actual != self.value
        found = self._pattern.fullmatch(actual) is not None
        return found if self.type is MatchType.regex else not found


class SilenceIn(RefusesNul):
    """A silence as the API takes it."""

    model_config = ConfigDict(extra="forbid")

    matchers: list[Matcher] = Field(min_length=1, max_length=20)
    starts_at: datetime | None = None
    ends_at: datetime
    created_by: Annotated[str, StringConstraints(max_length=200)] = ""
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime

    def active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class Silencer:
    """The silences active at `now`."""

    silences: tuple[Silence, ...]
    now: datetime

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return any(s.active(self.now) and s.mutes(labels) for s in self.silences)


@dataclass(frozen=True, slots=True)
class Acknowledger:
    """Fingerprints whose current episode was acknowledged."""

    acked: frozenset[str] = field(default_factory=frozenset)

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return fingerprint(labels) in self.acked


def any_mutes(muters: Iterable[Muter], labels: Mapping[str, str]) -> bool:
    return any(m.mutes(labels) for m in muters)
