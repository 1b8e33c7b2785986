"""From a rule to what must be read (queries) and from the values read to a verdict.

`instances` expands a rule into one instance per group (its `group_by` values), each with
its fingerprint and the `kpi_value` queries it needs; `judge` turns the values into a
verdict. Queries are plain hashable values so the evaluator reads each distinct one once,
however many of 10,000 rules share it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

import orjson

from services.alerts.evaluation import anomaly, conditions
from services.alerts.evaluation.anomaly import Band
from services.alerts.evaluation.windows import rule_window
from shared.config.alerting import Deviation, Op, RuleKind, RuleSpec

DimsKey = tuple[tuple[str, str], ...]
_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")


class Query(NamedTuple):
    """One `kpi_value(kpi, t_from, t_to, dims)` call. A tuple: 10,000 rules x groups make
    hundreds of thousands of dictionary look-ups per tick, and tuples hash in C."""

    kpi: str
    t_from: datetime
    t_to: datetime
    dims: DimsKey = ()


# Reads, Instance and Verdict are tuples, like Query: a tick makes one of each per rule
# and group (50,000 for the benchmark), and tuples are built in C, several times faster
# than frozen dataclasses.


class Reads(NamedTuple):
    """The queries one judgement needs: the KPI over the window, the same window `offset`
    earlier (change rules), the sample KPI over the window (min_sample) and the same window
    1..N weeks earlier (anomaly rules), read in the same round trip as the rest."""

    current: Query
    previous: Query | None = None
    sample: Query | None = None
    baseline: tuple[Query, ...] = ()

    def queries(self) -> list[Query]:
        found = [q for q in (self.current, self.previous, self.sample) if q is not None]
        found.extend(self.baseline)
        return found


class Instance(NamedTuple):
    """One rule x group. `complete` reads the window ending at the watermark; `live`, when
    the watermark lags, the window ending now, whose verdict counts only if data still to
    come cannot overturn it (see `final`)."""

    rule: RuleSpec
    fingerprint: str
    labels: dict[str, str]
    dims: dict[str, str]
    complete: Reads
    live: Reads | None = None
    monotone: bool = False

    def queries(self) -> list[Query]:
        return [*self.complete.queries(), *(self.live.queries() if self.live else [])]


class Verdict(NamedTuple):
    breaching: bool | None
    value: float | None
    previous: float | None = None
    sample: float | None = None
    reason: str = ""
    band: Band | None = None  # anomaly rules: the usual value and its band


def dims_key(dims: Mapping[str, str]) -> DimsKey:
    return tuple(sorted(dims.items()))


def label_name(field: str) -> str:
    """A dimension path as a label name: `properties.channel` → `properties_channel`."""
    return _LABEL_CHARS.sub("_", field)


def fingerprint(labels: Mapping[str, str]) -> str:
    """Stable identity of an alert: a hash of its sorted labels, as Alertmanager's."""
    digest = hashlib.sha256(orjson.dumps(dict(sorted(labels.items())))).hexdigest()
    return digest[:16]


def rule_labels_of(
    name: str, severity: str, kpi: str, extra: Mapping[str, str], dims: Mapping[str, str]
) -> dict[str, str]:
    labels = {label_name(k): v for k, v in dims.items()}
    labels.update(extra)
    labels.update({"alertname": name, "severity": severity, "kpi": kpi})
    return labels


ReadsCache = dict[tuple[object, ...], Reads]


def _reads(
    rule: RuleSpec,
    window: tuple[datetime, datetime],
    key: DimsKey,
    cache: ReadsCache,
    zone: ZoneInfo,
) -> Reads:
    """The rule's reads for one group; rules reading the same thing share one object."""
    sample_kpi = rule.min_sample.kpi if rule.min_sample else None
    signature = (
        rule.kpi,
        window,
        key,
        rule.offset if rule.kind is RuleKind.change else None,
        sample_kpi,
        rule.anomaly_settings.weeks if rule.kind is RuleKind.anomaly else 0,
    )
    found = cache.get(signature)
    if found is None:
        found = cache[signature] = _new_reads(rule, window, key, zone)
    return found


def _new_reads(
    rule: RuleSpec, window: tuple[datetime, datetime], key: DimsKey, zone: ZoneInfo
) -> Reads:
    t_from, t_to = window
    previous = sample = None
    baseline: tuple[Query, ...] = ()
    if rule.kind is RuleKind.change:
        assert rule.offset is not None
        previous = Query(rule.kpi, t_from - rule.offset, t_to - rule.offset, key)
    if rule.kind is RuleKind.anomaly:
        # Phase per KPI, group and window length: rules sharing those share their reads.
        start, end = anomaly.baseline_anchor(
            t_from,
            t_to,
            f"{rule.kpi}|{key}|{t_to - t_from}",
            align=not rule.window.startswith("ptd:"),
        )
        baseline = _baseline(rule.kpi, key, start, end, rule.anomaly_settings.weeks, zone)
    if rule.min_sample is not None:
        sample = Query(rule.min_sample.kpi, t_from, t_to, key)
    return Reads(Query(rule.kpi, t_from, t_to, key), previous, sample, baseline)


# The anchor stays put for up to 5 minutes (10 ticks) while the windows move: the queries
# of the past weeks are made once, not per tick (1,000 rules x 5 groups x 2 windows x 8
# weeks would be 80,000 new tuples a tick). Roughly 1 KB an entry.
@lru_cache(maxsize=16384)
def _baseline(
    kpi: str, key: DimsKey, start: datetime, end: datetime, weeks: int, zone: ZoneInfo
) -> tuple[Query, ...]:
    return tuple(Query(kpi, a, b, key) for a, b in anomaly.past_windows(start, end, weeks, zone))


def instances(
    rule: RuleSpec,
    at: datetime,
    zone: ZoneInfo,
    groups: Iterable[Mapping[str, str]] | Mapping[DimsKey, Mapping[str, str]] = ({},),
    *,
    now: datetime | None = None,
    monotone: bool = False,
    cache: ReadsCache | None = None,
) -> list[Instance]:
    """One instance per group (a rule without `group_by` has the single group `{}`);
    groups may come keyed by their `dims_key` already, as the evaluator passes them.

    `at` is where complete data ends (the watermark), `now` the wall clock. Absence rules
    always judge up to now: silence stalls the watermark, so a window clamped to it would
    never see the silence. Monotone KPIs (counts) also read the live window."""
    now = at if now is None else now
    live_window = rule_window(rule.window, now, zone)
    absence = rule.kind is RuleKind.absence
    complete_window = live_window if absence else rule_window(rule.window, at, zone)
    use_live = monotone and now > at and not absence
    keyed = groups.items() if isinstance(groups, Mapping) else ((None, g) for g in groups)
    cache = {} if cache is None else cache
    extra = tuple(sorted(rule.labels.items()))
    severity = rule.severity.value
    out: list[Instance] = []
    for group_key, group in keyed:
        if rule.dims or group_key is None:
            dims = {**rule.dims, **group}
            key = dims_key(dims)
        else:  # the common case, and the hot one: the group's key is the key
            dims, key = dict(group), group_key
        labels, fp = _identity(rule.name, severity, rule.kpi, extra, key)
        complete = _reads(rule, complete_window, key, cache, zone)
        live = _reads(rule, live_window, key, cache, zone) if use_live else None
        out.append(Instance(rule, fp, labels, dims, complete, live, monotone))
    return out


@lru_cache(maxsize=262_144)
def _identity(
    name: str, severity: str, kpi: str, extra: tuple[tuple[str, str], ...], key: DimsKey
) -> tuple[dict[str, str], str]:
    labels = rule_labels_of(name, severity, kpi, dict(extra), dict(key))
    return labels, fingerprint(labels)


def identity(rule: RuleSpec, key: DimsKey) -> tuple[dict[str, str], str]:
    """Labels and fingerprint of one group of a rule, hashed once rather than every tick
    (the returned labels are shared: read them, never change them)."""
    return _identity(
        rule.name, rule.severity.value, rule.kpi, tuple(sorted(rule.labels.items())), key
    )


def final(rule: RuleSpec, breaching: bool) -> bool:
    """Whether a verdict on a window whose newest minutes may still grow (a count) stands:
    a count above a limit stays above it; one at or above a floor stays there."""
    if rule.kind is RuleKind.absence:
        return not breaching
    if rule.kind is RuleKind.anomaly:
        # Above the band stays above it; inside or above the floor stays there. `both` may
        # still cross either edge, so it waits for complete data.
        direction = rule.anomaly_settings.direction
        if direction is Deviation.above:
            return breaching
        return not breaching if direction is Deviation.below else False
    if rule.op in (Op.gt, Op.ge):
        return breaching
    if rule.op in (Op.lt, Op.le):
        return not breaching
    return False


def _judge(
    rule: RuleSpec, reads: Reads, values: Mapping[Query, float | None], counts: bool = False
) -> Verdict:
    value = values.get(reads.current)
    sample = values.get(reads.sample) if reads.sample else None
    if rule.min_sample is not None and not conditions.enough_sample(sample, rule.min_sample.value):
        return Verdict(None, value, sample=sample, reason="min_sample")
    if rule.kind is RuleKind.absence:
        return Verdict(conditions.absence(value), value, sample=sample)
    if rule.kind is RuleKind.anomaly:
        spec = rule.anomaly_settings
        usual = anomaly.band([values.get(q) for q in reads.baseline], spec, counts=counts)
        verdict = anomaly.outside(value, usual, spec.direction)
        reason = "" if verdict is not None else ("no_baseline" if usual is None else "no_value")
        return Verdict(verdict, value, sample=sample, reason=reason, band=usual)
    if rule.kind is RuleKind.change:
        previous = values.get(reads.previous) if reads.previous else None
        verdict = conditions.change(value, previous, rule.op, rule.value)
        return Verdict(
            verdict, value, previous, sample, "" if verdict is not None else "no_baseline"
        )
    verdict = conditions.threshold(value, rule.op, rule.value)
    return Verdict(verdict, value, sample=sample, reason="" if verdict is not None else "no_value")


def judge(instance: Instance, values: Mapping[Query, float | None]) -> Verdict:
    rule = instance.rule
    if instance.live is not None:
        early = _judge(rule, instance.live, values, instance.monotone)
        if early.breaching is not None and final(rule, early.breaching):
            return early
    return _judge(rule, instance.complete, values, instance.monotone)
