"""Events mapped onto our shape but not yet validated, and their validation: every error is
reported in the field names the client used (Segment's `messageId`, CloudEvents' `data`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from shared.events import Accepted, FieldError, TimePolicy, validate_event

Aliases = Mapping[str, str]
NO_ALIASES: Aliases = MappingProxyType({})


@dataclass(slots=True)
class Candidate:
    """One event as sent, mapped onto our shape; `errors` found while mapping it, if any."""

    raw: Any
    aliases: Aliases = field(default_factory=lambda: NO_ALIASES)
    errors: list[FieldError] = field(default_factory=list)
    # False when mapping failed so early that `raw` is not in our shape at all.
    mapped: bool = True


def _renamed(error: FieldError, aliases: Aliases) -> FieldError:
    if not aliases or not error.field:
        return error
    head, dot, rest = error.field.partition(".")
    bracket = head.find("[")
    if bracket > 0:
        head, rest, dot = head[:bracket], head[bracket:] + dot + rest, ""
    alias = aliases.get(head)
    if alias is None:
        return error
    return FieldError(error.index, f"{alias}{dot}{rest}", error.reason, error.code)


def validate(
    candidates: list[Candidate],
    *,
    source: str,
    received_at: datetime,
    policy: TimePolicy,
) -> tuple[list[Accepted], list[FieldError]]:
    """All events and no errors, or no events and every error of every refused event:
    a request is published whole or not at all."""
    events: list[Accepted] = []
    errors: list[FieldError] = []
    for index, candidate in enumerate(candidates):
        if not candidate.mapped:
            errors.extend(candidate.errors)
            continue
        result = validate_event(
            candidate.raw, index, source=source, received_at=received_at, policy=policy
        )
        if isinstance(result, Accepted) and not candidate.errors:
            events.append(result)
            continue
        errors.extend(candidate.errors)
        if not isinstance(result, Accepted):
            seen = {error.field for error in candidate.errors}
            errors.extend(
                renamed
                for renamed in (_renamed(error, candidate.aliases) for error in result)
                if renamed.field not in seen
            )
    return ([] if errors else events), errors
