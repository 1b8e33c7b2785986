"""Where the config lives: tables `kpis`, `goals`, `rules`, `channels`, `app_settings`.

The caller owns the transaction; these functions only read and write within it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from prometheus_client import Counter
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import PacekeeperConfig, error_message
from shared.config.alerting import ChannelSpec, GoalSpec, RuleSpec
from shared.config.kpis import KpiSpec

log = logging.getLogger(__name__)

SECTIONS = ("kpis", "goals", "rules", "channels")
INVALID_ROWS = Counter(
    "pacekeeper_config_rows_invalid_total",
    "Stored definitions left out because they do not validate, by section",
    ["section"],
)
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "kpis": TypeAdapter(KpiSpec),
    "goals": TypeAdapter(GoalSpec),
    "rules": TypeAdapter(RuleSpec),
    "channels": TypeAdapter(ChannelSpec),
}


class NamedSpec(Protocol):
    @property
    def name(self) -> str: ...

    def model_dump(self, **kwargs: Any) -> dict[str, Any]: ...


def spec_json(spec: NamedSpec) -> dict[str, Any]:
    """The stored form: JSON with aliases (`for`, `in`) and secrets revealed for the services."""
    return spec.model_dump(mode="json", by_alias=True, context={"reveal": True})


@dataclass
class ApplyResult:
    created: dict[str, list[str]] = field(default_factory=dict)
    updated: dict[str, list[str]] = field(default_factory=dict)
    unchanged: dict[str, list[str]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)

    def count(self, what: str) -> int:
        return sum(len(v) for v in getattr(self, what).values())


async def upsert_spec(session: AsyncSession, section: str, spec: NamedSpec) -> str:
    """Insert or update one definition; returns created | updated | unchanged."""
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r}")
    name = spec.name
    payload = spec_json(spec)
    row = (
        await session.execute(
            text(f"SELECT spec FROM {section} WHERE name = :name FOR UPDATE"), {"name": name}
        )
    ).first()
    if row is None:
        await session.execute(
            text(f"INSERT INTO {section} (name, spec) VALUES (:name, CAST(:spec AS jsonb))"),
            {"name": name, "spec": _dumps(payload)},
        )
        return "created"
    if row[0] == payload:
        return "unchanged"
    await session.execute(
        text(
            f"UPDATE {section} SET spec = CAST(:spec AS jsonb), version = version + 1,"
            " updated_at = now() WHERE name = :name"
        ),
        {"name": name, "spec": _dumps(payload)},
    )
    return "updated"


async def delete_spec(session: AsyncSession, section: str, name: str) -> bool:
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r}")
    result = await session.execute(
        text(f"DELETE FROM {section} WHERE name = :name RETURNING name"), {"name": name}
    )
    return result.first() is not None


async def apply_config(
    session: AsyncSession, config: PacekeeperConfig, *, prune: bool = False
) -> ApplyResult:
    """Store a validated config. With `prune`, definitions missing from the file are deleted."""
    result = ApplyResult()
    if config.timezone:
        await set_setting(session, "timezone", config.timezone)
    for section in SECTIONS:
        specs: list[NamedSpec] = list(getattr(config, section))
        for spec in specs:
            outcome = await upsert_spec(session, section, spec)
            getattr(result, outcome).setdefault(section, []).append(spec.name)
        if prune:
            keep = [s.name for s in specs]
            rows = await session.execute(
                text(f"DELETE FROM {section} WHERE NOT (name = ANY(:keep)) RETURNING name"),
                {"keep": keep},
            )
            deleted = [r[0] for r in rows]
            if deleted:
                result.deleted[section] = deleted
    return result


async def load_section(session: AsyncSession, section: str) -> dict[str, Any]:
    """Every stored definition of a section, validated back into its model, by name.

    A row that no longer validates (stored by an older version with looser checks, or
    edited by hand) is left out and logged, never the whole section: one bad rule must
    not stop the API and the evaluator for every other one."""
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r}")
    rows = await session.execute(text(f"SELECT name, spec FROM {section} ORDER BY name"))
    adapter = _ADAPTERS[section]
    valid: dict[str, Any] = {}
    for name, spec in rows:
        try:
            valid[name] = adapter.validate_python(spec)
        except ValidationError as exc:
            # No input values in the log: a channel's row holds its secrets.
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(row)'}: {error_message(e)}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            INVALID_ROWS.labels(section).inc()
            log.warning("skipping stored %s %r that does not validate: %s", section, name, problems)
    return valid


async def load_kpis(session: AsyncSession) -> dict[str, KpiSpec]:
    return await load_section(session, "kpis")


async def load_goals(session: AsyncSession) -> dict[str, GoalSpec]:
    return await load_section(session, "goals")


async def load_rules(session: AsyncSession) -> dict[str, RuleSpec]:
    return await load_section(session, "rules")


async def load_channels(session: AsyncSession) -> dict[str, ChannelSpec]:
    return await load_section(session, "channels")


async def get_setting(session: AsyncSession, key: str) -> str | None:
    row = (
        await session.execute(text("SELECT value FROM app_settings WHERE key = :k"), {"k": key})
    ).first()
    return None if row is None else str(row[0])


async def set_setting(session: AsyncSession, key: str, value: str) -> None:
    await session.execute(
        text(
            "INSERT INTO app_settings (key, value) VALUES (:k, :v) ON CONFLICT (key) DO UPDATE"
            " SET value = EXCLUDED.value, updated_at = now()"
            " WHERE app_settings.value IS DISTINCT FROM EXCLUDED.value"
        ),
        {"k": key, "v": value},
    )


def _dumps(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()
