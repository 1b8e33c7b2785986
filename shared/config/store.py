"""Where the config lives: tables `kpis`, `goals`, `rules`, `channels`, `app_settings`.

The caller owns the transaction; these functions only read and write within it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from prometheus_client import Counter
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.config import PacekeeperConfig, error_message
from shared.config.alerting import ChannelSpec, GoalSpec, RuleSpec
from shared.config.kpi_versions import (
    Change,
    VersionState,
    diff,
    has_state,
    needs_recompute,
    storage_key,
)
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


async def upsert_spec(
    session: AsyncSession, section: str, spec: NamedSpec, *, applied_by: str | None = None
) -> str:
    """Insert or update one definition; returns created | updated | unchanged. A KPI's
    every new definition is also a new version (see `record_kpi_version`)."""
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r}")
    name = spec.name
    payload = spec_json(spec)
    row = (
        await session.execute(
            text(f"SELECT spec, version FROM {section} WHERE name = :name FOR UPDATE"),
            {"name": name},
        )
    ).first()
    if row is None:
        version = 1
        if section == "kpis":  # a KPI deleted and defined again continues its numbering
            version = await _next_kpi_version(session, name)
        await session.execute(
            text(
                f"INSERT INTO {section} (name, spec, version)"
                " VALUES (:name, CAST(:spec AS jsonb), :version)"
            ),
            {"name": name, "spec": _dumps(payload), "version": version},
        )
        if section == "kpis":
            await record_kpi_version(session, name, None, payload, version, applied_by)
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
    if section == "kpis":
        await record_kpi_version(session, name, row[0], payload, int(row[1]) + 1, applied_by)
    return "updated"


async def delete_spec(session: AsyncSession, section: str, name: str) -> bool:
    if section not in SECTIONS:
        raise ValueError(f"unknown config section {section!r}")
    result = await session.execute(
        text(f"DELETE FROM {section} WHERE name = :name RETURNING name"), {"name": name}
    )
    deleted = result.first() is not None
    if deleted and section == "kpis":
        await _retire_kpi_versions(session, [name])
    return deleted


# --- KPI versions --------------------------------------------------------------------------

_NEXT_VERSION = text("SELECT coalesce(max(version), 0) + 1 FROM kpi_versions WHERE kpi = :kpi")
_ACTIVE_VERSION = text(
    "SELECT spec, storage FROM kpi_versions WHERE kpi = :kpi AND state = 'active' FOR UPDATE"
)
_SUPERSEDE = text(
    "UPDATE kpi_versions SET state = 'superseded', retired_at = now()"
    " WHERE kpi = :kpi AND state = 'recomputing'"
)
_RETIRE_ACTIVE = text(
    "UPDATE kpi_versions SET state = 'retired', retired_at = now(),"
    " state_dropped = state_dropped OR storage = :keep"
    " WHERE kpi = :kpi AND state = 'active'"
)
_RETIRE_ALL = text(
    "UPDATE kpi_versions SET state = CASE state WHEN 'active' THEN 'retired'"
    " ELSE 'superseded' END, retired_at = now()"
    " WHERE kpi = ANY(CAST(:kpis AS text[])) AND state IN ('active', 'recomputing')"
)
_ADOPT = text(
    "INSERT INTO kpi_versions (kpi, version, spec, storage, applied_by, state, activated_at)"
    " VALUES (:kpi, :version, CAST(:spec AS jsonb), :kpi, 'unknown', 'active', now())"
    " ON CONFLICT (kpi, version) DO UPDATE SET state = 'active', storage = :kpi"
)
_INSERT_VERSION = text(
    """
    INSERT INTO kpi_versions (kpi, version, spec, storage, diff, applied_by, state,
                              activated_at)
    VALUES (:kpi, :version, CAST(:spec AS jsonb), :storage, CAST(:diff AS jsonb),
            coalesce(:by, session_user), :state,
            CASE WHEN :state = 'active' THEN now() END)
    """
)


async def _next_kpi_version(session: AsyncSession, kpi: str) -> int:
    return int((await session.execute(_NEXT_VERSION, {"kpi": kpi})).scalar_one())


async def record_kpi_version(
    session: AsyncSession,
    kpi: str,
    before: dict[str, Any] | None,
    after: dict[str, Any],
    version: int,
    applied_by: str | None,
) -> VersionState:
    """Store version `version` of a KPI (its definition is already in `kpis`).

    A new KPI, or a definition whose state is the same as the active version's (only its
    description, unit or quantile changed, or a ratio/formula, which has none), becomes
    active at once. Anything else starts `recomputing` under a key of its own: the
    aggregator fills it from `events` in the background and switches to it when done, and
    until then readers keep getting the active version. A version still recomputing is
    superseded by the newer one."""
    active = (await session.execute(_ACTIVE_VERSION, {"kpi": kpi})).first()
    fresh = before is None
    if active is None and before is not None:
        # Stored without versions (by hand): the definition it replaces becomes the active
        # version readers keep until the new one is ready.
        await session.execute(_ADOPT, {"kpi": kpi, "version": version - 1, "spec": _dumps(before)})
    active_spec, active_storage = (before, kpi) if active is None else (active[0], active[1])
    await session.execute(_SUPERSEDE, {"kpi": kpi})
    if fresh or not needs_recompute(active_spec, after):
        state = VersionState.active
        # A new KPI applies from now on (history by `pacekeeper backfill`); a ratio or
        # formula keeps no state, so the old version's goes.
        reuse = not fresh and has_state(after)
        storage = active_storage if reuse else storage_key(kpi, version)
        await session.execute(_RETIRE_ACTIVE, {"kpi": kpi, "keep": storage})
    else:
        state = VersionState.recomputing
        storage = storage_key(kpi, version)
    changes = [] if fresh else [c.as_json() for c in diff(before, after)]
    await session.execute(
        _INSERT_VERSION,
        {
            "kpi": kpi,
            "version": version,
            "spec": _dumps(after),
            "storage": storage,
            "diff": orjson.dumps(changes).decode(),
            "by": applied_by,
            "state": state.value,
        },
    )
    return state


async def _retire_kpi_versions(session: AsyncSession, kpis: list[str]) -> None:
    """A deleted KPI's versions: none active any more; the aggregator drops their state."""
    if kpis:
        await session.execute(_RETIRE_ALL, {"kpis": kpis})


async def apply_config(
    session: AsyncSession,
    config: PacekeeperConfig,
    *,
    prune: bool = False,
    applied_by: str | None = None,
) -> ApplyResult:
    """Store a validated config. With `prune`, definitions missing from the file are deleted.
    `applied_by` is recorded with every new KPI version (default: the database user)."""
    result = ApplyResult()
    if config.timezone:
        await set_setting(session, "timezone", config.timezone)
    for section in SECTIONS:
        specs: list[NamedSpec] = list(getattr(config, section))
        for spec in specs:
            outcome = await upsert_spec(session, section, spec, applied_by=applied_by)
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
                if section == "kpis":
                    await _retire_kpi_versions(session, deleted)
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


@dataclass(frozen=True, slots=True)
class KpiVersion:
    """One applied definition of a KPI, as `pacekeeper kpis history` and the API show it."""

    version: int
    state: VersionState
    applied_at: datetime
    applied_by: str
    changes: list[Change]
    recompute_from: datetime | None
    recompute_to: datetime | None
    recomputed_until: datetime | None
    events_processed: int
    activated_at: datetime | None

    @property
    def progress(self) -> float | None:
        """Share of the history recomputed, 0..1; None before the recompute started or for
        a version that needed none."""
        lo, hi, until = self.recompute_from, self.recompute_to, self.recomputed_until
        if lo is None or hi is None or until is None:
            return None
        return 1.0 if hi <= lo else min(1.0, (until - lo) / (hi - lo))

    def as_json(self) -> dict[str, Any]:
        def moment(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "version": self.version,
            "state": self.state.value,
            "applied_at": moment(self.applied_at),
            "applied_by": self.applied_by,
            "changes": [c.as_json() for c in self.changes],
            "recompute": None
            if self.recompute_from is None
            else {
                "from": moment(self.recompute_from),
                "to": moment(self.recompute_to),
                "until": moment(self.recomputed_until),
                "progress": self.progress,
                "events": self.events_processed,
            },
            "activated_at": moment(self.activated_at),
        }


_HISTORY = text(
    """
    SELECT version, state, applied_at, applied_by, diff, recompute_from, recompute_to,
           recomputed_until, events_processed, activated_at
    FROM kpi_versions WHERE kpi = :kpi ORDER BY version
    """
)
_CHANGED_BETWEEN = text(
    "SELECT kpi, max(applied_at) FROM kpi_versions WHERE version > 1"
    " AND applied_at >= :t_from AND applied_at < :t_to GROUP BY kpi"
)


async def kpi_history(session: AsyncSession, kpi: str) -> list[KpiVersion]:
    """Every version of a KPI, oldest first (empty for a KPI never applied)."""
    return [
        KpiVersion(
            version=r.version,
            state=VersionState(r.state),
            applied_at=r.applied_at,
            applied_by=r.applied_by,
            changes=[Change(c["path"], c.get("before"), c.get("after")) for c in r.diff],
            recompute_from=r.recompute_from,
            recompute_to=r.recompute_to,
            recomputed_until=r.recomputed_until,
            events_processed=r.events_processed,
            activated_at=r.activated_at,
        )
        for r in await session.execute(_HISTORY, {"kpi": kpi})
    ]


async def definitions_changed(
    session: AsyncSession, t_from: datetime, t_to: datetime
) -> dict[str, datetime]:
    """KPIs whose definition changed (a version after the first applied) in [t_from, t_to),
    with the last such moment."""
    rows = await session.execute(_CHANGED_BETWEEN, {"t_from": t_from, "t_to": t_to})
    return {str(kpi): at for kpi, at in rows}


async def kpi_versions_summary(session: AsyncSession, kpi: str) -> dict[str, Any]:
    """What `GET /v1/kpis/{name}` adds to the definition: the version it shows (the latest
    applied), the one readers get (`active_version`), every version, and the recompute
    under way (None when there is none)."""
    history = await kpi_history(session, kpi)
    active = next((v for v in history if v.state is VersionState.active), None)
    running = next((v for v in history if v.state is VersionState.recomputing), None)
    return {
        "version": history[-1].version if history else None,
        "active_version": None if active is None else active.version,
        "versions": [v.as_json() for v in history],
        "recompute": None
        if running is None
        else running.as_json()["recompute"]
        or {"from": None, "to": None, "until": None, "progress": 0.0, "events": 0},
    }
