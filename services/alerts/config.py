"""The definitions the evaluator works from, reloaded when the config tables change."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import store
from shared.config.alerting import ChannelSpec, GoalSpec, RuleSpec
from shared.config.kpis import KpiSpec, base_kpis, undeclared_dimensions
from shared.config.store import get_setting, load_section


@dataclass(frozen=True)
class Config:
    kpis: Mapping[str, KpiSpec] = field(default_factory=dict)
    rules: Mapping[str, RuleSpec] = field(default_factory=dict)
    goals: Mapping[str, GoalSpec] = field(default_factory=dict)
    channels: Mapping[str, ChannelSpec] = field(default_factory=dict)
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    digest: tuple[Any, ...] = ()

    def bases(self, kpi: str) -> frozenset[str]:
        return base_kpis(kpi, self.kpis)

    @cached_property
    def unreadable_rules(self) -> frozenset[str]:
        """Rules that filter or group by a dimension their KPI does not declare (on every
        KPI it is computed from): `kpi_value` refuses those reads."""
        return frozenset(
            rule.name
            for rule in self.rules.values()
            if undeclared_dimensions(rule.kpi, [*rule.group_by, *rule.dims], self.kpis)
        )

    @cached_property
    def _rules_by_kpi(self) -> dict[str, set[str]]:
        index: dict[str, set[str]] = defaultdict(set)
        for rule in self.rules.values():
            names = {rule.kpi} | ({rule.min_sample.kpi} if rule.min_sample else set())
            for name in names:
                for base in self.bases(name) | {name}:
                    index[base].add(rule.name)
        return index

    def rules_reading(self, changed: Iterable[str]) -> list[RuleSpec]:
        """Rules whose KPI (or sample KPI) is computed from any of the changed KPIs."""
        hit: set[str] = set()
        for kpi in changed:
            hit |= self._rules_by_kpi.get(kpi, set())
        return [self.rules[name] for name in sorted(hit)]


class ConfigCache:
    """Reloads every section when the cheap digest of the config tables changes."""

    def __init__(self, default_timezone: str) -> None:
        self._default_timezone = default_timezone
        self.current = Config()

    async def refresh(self, session: AsyncSession) -> Config:
        digest = await store.config.config_digest(session)
        if digest == self.current.digest:
            return self.current
        timezone = await get_setting(session, "timezone") or self._default_timezone
        self.current = Config(
            kpis=await load_section(session, "kpis"),
            rules=await load_section(session, "rules"),
            goals=await load_section(session, "goals"),
            channels=await load_section(session, "channels"),
            zone=ZoneInfo(timezone),
            digest=digest,
        )
        return self.current
