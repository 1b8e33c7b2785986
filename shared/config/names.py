"""The names a user types, one rule each, and errors that say which characters are allowed
(pydantic's "String should match pattern '^[a-z]…$'" tells a user nothing).

KPI names appear in formulas (`revenue / orders`), so they are identifiers: no `-` or `.`.
Every other name (goals, rules, channels) may also hold `-` and `.` (`checkout-collapse`,
`ops-oncall`).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

KPI_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,62}$"


def _rule(pattern: str, description: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"{value!r} is not a valid name: {description}")
        return value

    return AfterValidator(check)


KpiName = Annotated[
    str,
    _rule(
        KPI_NAME_PATTERN,
        "a lowercase letter, then up to 62 lowercase letters, digits or '_'"
        " (no '-' or '.': formulas use KPI names)",
    ),
    WithJsonSchema({"type": "string", "pattern": KPI_NAME_PATTERN}),
]
Name = Annotated[
    str,
    _rule(
        NAME_PATTERN,
        "a lowercase letter or digit, then up to 62 lowercase letters, digits, '_', '.' or '-'",
    ),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}),
]
