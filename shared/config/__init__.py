"""Config as code: one YAML file of KPIs, goals, rules and channels, validated as a whole.

`load_config_text` returns a `PacekeeperConfig` or raises `ConfigError`, whose messages each
carry the path of the offending value (`kpis[3].field: ...`), like a compiler would.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from shared.config.alerting import ChannelSpec, GoalSpec, RuleSpec
from shared.config.kpis import KpiKind, KpiSpec, referenced_kpis, undeclared_dimensions

MAX_CONFIG_BYTES = 2 * 1024 * 1024
# `${NAME}`, or `${NAME:-default}` as in the shell and docker compose (the default also
# stands in for an empty value), so a shipped example validates before anything is set.
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_KIND_TAGS = {kind.value for kind in KpiKind}


class ConfigError(ValueError):
    """Every problem found in a config file, each as `path: reason`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class PacekeeperConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str | None = None
    kpis: list[KpiSpec] = Field(default_factory=list)
    goals: list[GoalSpec] = Field(default_factory=list)
    rules: list[RuleSpec] = Field(default_factory=list)
    channels: list[ChannelSpec] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


def error_message(error: Mapping[str, Any]) -> str:
    """pydantic's message without the "Value error, " our own validators' messages get."""
    return str(error.get("msg", "")).removeprefix("Value error, ")


def error_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's loc → `kpis[3].field` (dropping the discriminator tag of union members)."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif (
            i > 0 and isinstance(loc[i - 1], int) and part in _KIND_TAGS and out.startswith("kpis")
        ):
            continue
        else:
            out += f".{part}" if out else part
    return out


def _expand_env(node: Any, path: str, problems: list[str], env: dict[str, str]) -> Any:
    """Replace `${NAME}` in strings with the environment's value; unset names are errors
    unless a default is given (`${NAME:-default}`)."""
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if default is not None:
                return env.get(name) or default
            if name not in env:
                problems.append(f"{path}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(substitute, node)
    if isinstance(node, list):
        return [_expand_env(v, f"{path}[{i}]", problems, env) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {
            k: _expand_env(v, f"{path}.{k}" if path else str(k), problems, env)
            for k, v in node.items()
        }
    return node


def _cross_check(config: PacekeeperConfig) -> list[str]:
    problems: list[str] = []
    for section in ("kpis", "goals", "rules", "channels"):
        seen: dict[str, int] = {}
        for i, item in enumerate(getattr(config, section)):
            if item.name in seen:
                problems.append(
                    f"{section}[{i}].name: {item.name!r} is already defined at "
                    f"{section}[{seen[item.name]}]"
                )
            seen.setdefault(item.name, i)
    kpis = {k.name: k for k in config.kpis}
    channels = {c.name for c in config.channels}
    for i, kpi in enumerate(config.kpis):
        for ref in referenced_kpis(kpi):
            if ref not in kpis:
                problems.append(f"kpis[{i}]: refers to unknown KPI {ref!r}")
            elif ref == kpi.name:
                problems.append(f"kpis[{i}]: refers to itself")
    for section in ("goals", "rules"):
        for i, item in enumerate(getattr(config, section)):
            if item.kpi not in kpis:
                problems.append(f"{section}[{i}].kpi: unknown KPI {item.kpi!r}")
            for j, channel in enumerate(item.channels):
                if channel not in channels:
                    problems.append(f"{section}[{i}].channels[{j}]: unknown channel {channel!r}")
    for i, rule in enumerate(config.rules):
        if rule.min_sample and rule.min_sample.kpi not in kpis:
            problems.append(f"rules[{i}].min_sample.kpi: unknown KPI {rule.min_sample.kpi!r}")
    # kpi_value can only filter or group by dimensions the KPI (and every KPI it is computed
    # from) declares; say so now rather than at evaluation time.
    for section in ("rules", "goals"):
        for i, item in enumerate(getattr(config, section)):
            if item.kpi not in kpis:
                continue
            uses = [(f"dims.{d}", d) for d in item.dims]
            uses += [(f"group_by[{j}]", g) for j, g in enumerate(getattr(item, "group_by", []))]
            for where, dimension in uses:
                if undeclared_dimensions(item.kpi, [dimension], kpis):
                    problems.append(
                        f"{section}[{i}].{where}: KPI {item.kpi!r} does not declare"
                        f" dimension {dimension!r}"
                    )
    return problems


def parse_config(data: Any, *, env: dict[str, str] | None = None) -> PacekeeperConfig:
    """Validate an already-decoded config document."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(top): the config must be a mapping with kpis, goals, rules, channels"])
    problems: list[str] = []
    data = _expand_env(data, "", problems, dict(os.environ) if env is None else env)
    try:
        config = PacekeeperConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            problems.append(f"{error_path(tuple(err['loc'])) or '(top)'}: {error_message(err)}")
        raise ConfigError(problems) from None
    problems.extend(_cross_check(config))
    if problems:
        raise ConfigError(problems)
    return config


def load_config_text(text: str, *, env: dict[str, str] | None = None) -> PacekeeperConfig:
    if len(text.encode()) > MAX_CONFIG_BYTES:
        raise ConfigError([f"(top): file is larger than {MAX_CONFIG_BYTES} bytes"])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(top)"
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data, env=env)


def load_config_file(path: Path) -> PacekeeperConfig:
    return load_config_text(path.read_text(encoding="utf-8"))


kpi_adapter: TypeAdapter[KpiSpec] = TypeAdapter(KpiSpec)

__all__ = [
    "ChannelSpec",
    "ConfigError",
    "GoalSpec",
    "KpiSpec",
    "PacekeeperConfig",
    "RuleSpec",
    "kpi_adapter",
    "load_config_file",
    "load_config_text",
    "parse_config",
]
