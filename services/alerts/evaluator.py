"""One evaluation cycle: read KPIs, judge rules and goals, step lifecycles, dispatch groups.

The evaluator keeps every alert and notification group in memory (loaded from the database
when it becomes the leader) and returns a cycle's changes as a `CycleResult`: the caller
writes them in one transaction with the outbox rows they cause, and only after the commit
are they applied in memory. A failed transaction leaves memory as it was.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts import metrics, store
from services.alerts.config import Config, ConfigCache
from services.alerts.dispatch import (
    Flush,
    GroupAlert,
    GroupState,
    Status,
    Timing,
    group_of,
    plan,
    route,
)
from services.alerts.evaluation import anomaly, restatements
from services.alerts.evaluation import goals as pacing
from services.alerts.evaluation.annotations import anomaly_summary, band_context, render
from services.alerts.evaluation.lifecycle import AlertState, State, Transition, step
from services.alerts.evaluation.readings import GoalReading, goal_contributors, read_goals
from services.alerts.evaluation.restatements import ResultStatus, Standing
from services.alerts.evaluation.rules import (
    DimsKey,
    Instance,
    Query,
    ReadsCache,
    Verdict,
    dims_key,
    fingerprint,
    instances,
    judge,
)
from services.alerts.evaluation.windows import judgement_time, rule_window
from services.alerts.notify.payload import restatement_payload, webhook_payload
from services.alerts.reads import KpiReads
from services.alerts.silence import Acknowledger, Silencer
from services.alerts.store import results as result_store
from services.alerts.store.alerts import AlertRecord
from services.alerts.store.goals import GoalReadingRow, GoalStatusRecord, LastStatus
from services.alerts.store.results import RestatementRow, ResultRow
from shared.config.alerting import ChannelType, GoalSpec, RuleKind, RuleSpec
from shared.config.kpis import KpiKind

_NO_GROUP: dict[DimsKey, dict[str, str]] = {(): {}}
T = TypeVar("T")
log = logging.getLogger(__name__)

# Kinds whose value over a window only grows as the window's data arrives.
MONOTONE_KINDS = frozenset({KpiKind.count, KpiKind.count_distinct})
BAD_GOAL_STATUSES = (pacing.GoalStatus.at_risk, pacing.GoalStatus.off_track)


@dataclass
class CycleResult:
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    groups: dict[tuple[str, str], GroupState | None] = field(default_factory=dict)
    goal_statuses: dict[str, LastStatus] = field(default_factory=dict)
    forgotten: list[str] = field(default_factory=list)
    deliveries: int = 0
    instances: int = 0


class Evaluator:
    def __init__(
        self,
        *,
        default_timezone: str,
        external_url: str,
        events_topic: str,
        goal_history_retention: timedelta = timedelta(days=90),
        allowed_lateness: timedelta = timedelta(days=7),
        restate_threshold: float = 0.05,
    ) -> None:
        self.config_cache = ConfigCache(default_timezone)
        self.goal_history_retention = goal_history_retention
        self.allowed_lateness = allowed_lateness
        self.restate_threshold = restate_threshold
        self.events_topic = events_topic
        self.external_url = external_url.rstrip("/")
        self.alerts: dict[str, AlertRecord] = {}
        self.groups: dict[tuple[str, str], GroupState] = {}
        self.goal_statuses: dict[str, LastStatus] = {}
        self.reads = KpiReads()

    @property
    def config(self) -> Config:
        return self.config_cache.current

    async def load(self, session: AsyncSession, now: datetime) -> None:
        """Take over the state a previous leader left in the database."""
        await self.config_cache.refresh(session)
        self.alerts = {a.fingerprint: a for a in await store.alerts.load_alerts(session)}
        self.groups = {(g.channel, g.group_key): g for g in await store.groups.load_groups(session)}
        self.goal_statuses = await store.goals.last_goal_statuses(session)
        self._update_gauges()

    def apply(self, result: CycleResult) -> None:
        """After the commit: make the written changes the in-memory truth."""
        self.alerts.update(result.alerts)
        for key, group in result.groups.items():
            if group is None:
                self.groups.pop(key, None)
            else:
                self.groups[key] = group
        self.goal_statuses.update(result.goal_statuses)
        for fp in result.forgotten:
            self.alerts.pop(fp, None)
        self._update_gauges()

    def pending_due(self) -> tuple[datetime, set[str]] | None:
        """When the earliest pending rule alert has waited its `for`, and the KPIs of all
        pending rule alerts: a second look then fires it without waiting for a tick."""
        rules = self.config.rules
        due: datetime | None = None
        kpis: set[str] = set()
        for record in self.alerts.values():
            rule = rules.get(record.name) if record.origin == "rule" else None
            if rule is None or record.state.state is not State.pending:
                continue
            assert record.state.active_at is not None
            at = record.state.active_at + rule.for_
            due = at if due is None else min(due, at)
            kpis.add(rule.kpi)
        return None if due is None else (due, kpis)

    def _update_gauges(self) -> None:
        counts = dict.fromkeys(State, 0)
        for record in self.alerts.values():
            counts[record.state.state] += 1
        for state, count in counts.items():
            metrics.ALERTS.labels(state.value).set(count)

    # --- the cycle ---------------------------------------------------------------------

    async def cycle(
        self,
        session: AsyncSession,
        now: datetime,
        *,
        rules: bool | Iterable[str] = True,
        goals: bool = True,
        purge_before: datetime | None = None,
    ) -> CycleResult:
        """`rules=True` judges every rule, an iterable of KPI names only the rules reading
        them, False none (a dispatch-only pass). Writes nothing outside `session`."""
        config = await self.config_cache.refresh(session)
        result = CycleResult()
        if purge_before is not None:
            result.forgotten = await store.alerts.purge_resolved(session, purge_before)
        at, final = now, None
        if rules is not False or goals:
            mark = await store.kpis.watermark(session, self.events_topic)
            at = judgement_time(now, mark)
            final = anomaly.final_before(mark, self.allowed_lateness)
        if rules is True:
            await self._evaluate_rules(
                session, config, list(config.rules.values()), at, now, result, final
            )
            self._retire_orphans(config, now, result)
        elif rules is not False:
            selected = config.rules_reading(rules)
            await self._evaluate_rules(session, config, selected, at, now, result, final)
        if goals:
            await self._evaluate_goals(session, config, at, now, result)
        await self._dispatch(session, config, now, result)
        await store.alerts.save_alerts(session, result.alerts.values())
        return result

    # --- rules -------------------------------------------------------------------------

    async def _evaluate_rules(
        self,
        session: AsyncSession,
        config: Config,
        rules: Sequence[RuleSpec],
        at: datetime,
        now: datetime,
        result: CycleResult,
        final: datetime | None = None,
    ) -> None:
        """`final`: windows ending at or before it can no longer change (their answers may
        come from `reads`' caches)."""
        if not rules:
            return
        groups = await self._rule_groups(session, config, rules, now)
        planned: list[Instance] = []
        cache: ReadsCache = {}
        for rule in rules:
            if rule.kpi not in config.kpis:
                continue  # a rule whose KPI was deleted cannot be judged
            if rule.name in config.unreadable_rules:
                # kpi_value would refuse the read and fail the whole pass; the API refuses
                # such rules, but a file applied by hand may still carry one.
                continue
            monotone = config.kpis[rule.kpi].kind in MONOTONE_KINDS
            planned.extend(
                instances(
                    rule,
                    at,
                    config.zone,
                    groups.get(rule.name, _NO_GROUP),
                    now=now,
                    monotone=monotone,
                    cache=cache,
                )
            )
        wanted: set[Query] = set()
        for reads in cache.values():
            wanted.update(reads.queries())
        values = await self.reads.read(session, config.kpis, wanted, final)
        for inst in planned:
            verdict = judge(inst, values)
            self._step_rule(inst, verdict, now, result)
        result.instances += len(planned)
        metrics.RULES_EVALUATED.inc(len(planned))

    async def _rule_groups(
        self, session: AsyncSession, config: Config, rules: Sequence[RuleSpec], now: datetime
    ) -> dict[str, dict[DimsKey, dict[str, str]]]:
        """Per rule with `group_by`: the groups with data in its window, plus the groups that
        have an active alert (so a group whose data stopped can still resolve)."""
        wanted: dict[tuple[frozenset[str], datetime, datetime], list[RuleSpec]] = defaultdict(list)
        for rule in rules:
            if rule.group_by and rule.kpi in config.kpis:
                # Up to now, so groups whose only data is still in flight are found; an
                # absence rule looks back one more window for groups that went quiet.
                t_from, t_to = rule_window(rule.window, now, config.zone)
                if rule.kind is RuleKind.absence:
                    t_from -= t_to - t_from
                wanted[(config.bases(rule.kpi), t_from, t_to)].append(rule)
        if not wanted:
            return {}
        active: dict[str, list[Mapping[str, str]]] = defaultdict(list)
        for record in self.alerts.values():
            if record.origin == "rule" and record.state.is_active:
                active[record.name].append(record.dims)
        # One read per KPI set and window end, from the earliest start among its windows.
        earliest: dict[tuple[frozenset[str], datetime], datetime] = {}
        for bases, t_from, t_to in wanted:
            earliest[(bases, t_to)] = min(t_from, earliest.get((bases, t_to), t_from))
        seen = {
            (bases, t_to): await store.kpis.dimensions_last_seen(
                session, sorted(bases), t_from, t_to
            )
            for (bases, t_to), t_from in earliest.items()
        }
        out: dict[str, dict[DimsKey, dict[str, str]]] = {}
        for (bases, t_from, t_to), members in wanted.items():
            present = [dims for dims, last in seen[(bases, t_to)] if last >= t_from]
            # Rules sharing a KPI, window and group_by share their groups: project once.
            shared: dict[tuple[str, ...], dict[DimsKey, dict[str, str]]] = {}
            for rule in members:
                by = tuple(rule.group_by)
                if by not in shared:
                    shared[by] = _project(present, by)
                groups = shared[by]
                if rule.name in active:
                    groups = {**groups, **_project(active[rule.name], by)}
                out[rule.name] = groups
        return out

    def _step_rule(
        self, inst: Instance, verdict: Verdict, now: datetime, result: CycleResult
    ) -> None:
        rule = inst.rule
        previous = self.alerts.get(inst.fingerprint)
        if previous is None and verdict.breaching is not True:
            return  # the common case: no alert, no breach
        before = previous.state if previous else AlertState()
        after, transition = step(
            before, verdict.breaching, now, for_=rule.for_, keep_firing_for=rule.keep_firing_for
        )
        if previous is None and not after.is_active:
            return  # nothing happened to an alert that never existed
        changed = transition is not Transition.none or (
            after.is_active and previous is not None and previous.value != verdict.value
        )
        if not changed:
            return
        context = {
            "value": verdict.value,
            "threshold": rule.value,
            "previous": verdict.previous,
            "sample": verdict.sample,
            "labels": inst.labels,
            "dims": inst.dims,
            "kpi": rule.kpi,
            "window": rule.window,
        }
        stored: dict[str, Any] = {"kind": rule.kind.value, "previous": verdict.previous}
        default = f"{rule.kpi} over {rule.window} {rule.op.value} {rule.value:g}"
        if verdict.band is not None:
            band = band_context(
                verdict.band,
                (inst.complete.current.t_from, inst.complete.current.t_to),
                self.config.zone,
                rule.anomaly_settings.direction.value,
            )
            stored["band"] = band
            context.update(usual=band["usual"], band_low=band["low"], band_high=band["high"])
            default = anomaly_summary(rule.kpi, rule.window, verdict.value, band)
        annotations = {
            "summary": render(rule.annotations.summary, context) or default,
            "description": render(rule.annotations.description, context),
        }
        result.alerts[inst.fingerprint] = AlertRecord(
            fingerprint=inst.fingerprint,
            origin="rule",
            name=rule.name,
            labels=inst.labels,
            annotations={k: v for k, v in annotations.items() if v},
            dims=inst.dims,
            channels=tuple(rule.channels),
            state=after,
            value=verdict.value,
            context=stored,
        )

    def _retire_orphans(self, config: Config, now: datetime, result: CycleResult) -> None:
        """Alerts of deleted rules or goals resolve (pending ones just clear)."""
        for fp, record in self.alerts.items():
            if not record.state.is_active or fp in result.alerts:
                continue
            alive = (record.origin == "rule" and record.name in config.rules) or (
                record.origin == "goal" and record.name in config.goals
            )
            if alive:
                continue
            after, _ = step(record.state, False, now)
            result.alerts[fp] = replace(record, state=after)

    # --- goals -------------------------------------------------------------------------

    async def _evaluate_goals(
        self,
        session: AsyncSession,
        config: Config,
        at: datetime,
        now: datetime,
        result: CycleResult,
    ) -> None:
        readings = await read_goals(session, config, at)
        rows: dict[str, GoalStatusRecord] = {}
        dashboard_rows: list[GoalReadingRow] = []
        for name, reading in readings.items():
            goal, period, pace = reading.goal, reading.period, reading.pace
            contributors: list[dict[str, Any]] = []
            if pace.status in BAD_GOAL_STATUSES:
                contributors = await goal_contributors(session, config, goal, period, at)
            for status in BAD_GOAL_STATUSES:
                self._step_goal(reading, status, contributors, now, result)
            row = _dashboard_row(reading, contributors, now)
            dashboard_rows.append(row)
            latest = LastStatus(pace.status.value, period.start)
            if self.goal_statuses.get(name) != latest:
                rows[name] = row.status_record()
                result.goal_statuses[name] = latest
        await store.goals.insert_goal_status(session, rows)
        await self._store_readings(session, config, dashboard_rows, now)
        await self._record_results(session, config, at, now, result)
        counts = dict.fromkeys(pacing.GoalStatus, 0)
        for reading in readings.values():
            counts[reading.pace.status] += 1
        for status, count in counts.items():
            metrics.GOALS.labels(status.value).set(count)

    async def _store_readings(
        self, session: AsyncSession, config: Config, rows: list[GoalReadingRow], now: datetime
    ) -> None:
        """The readings for dashboards (migration 0012)."""
        await _aside(
            session,
            lambda: store.goals.store_readings(
                session, rows, declared=config.goals, keep=self.goal_history_retention, now=now
            ),
            metrics.GOAL_READINGS_FAILED,
            "goal readings not stored",
        )

    async def _record_results(
        self,
        session: AsyncSession,
        config: Config,
        at: datetime,
        now: datetime,
        result: CycleResult,
    ) -> None:
        """Closed periods' results, and their restatements by late events (migration 0014)."""
        deliveries = await _aside(
            session,
            lambda: self._restate(session, config, at, now),
            metrics.GOAL_RESULTS_FAILED,
            "goal results not recorded",
        )
        result.deliveries += deliveries or 0

    async def _restate(
        self, session: AsyncSession, config: Config, at: datetime, now: datetime
    ) -> int:
        """Record each goal period that closed by `at` once, as reported; re-read those that
        late events can still change, and record and notify what changed. Returns the
        number of notifications enqueued."""
        plans: dict[tuple[str, datetime], tuple[GoalSpec, pacing.GoalPeriod, Query, Query]] = {}
        for name, goal in config.goals.items():
            if goal.kpi not in config.kpis:
                continue
            for period in restatements.open_periods(goal, at, config.zone, self.allowed_lateness):
                dims = dims_key(goal.dims)
                plans[(name, period.start)] = (
                    goal,
                    period,
                    Query(goal.kpi, period.start, period.end, dims),
                    Query(goal.kpi, period.previous_start, period.previous_end, dims),
                )
        if not plans:
            return 0
        since = at - self.allowed_lateness - restatements.GRACE
        recorded = await result_store.open_results(session, {g for g, _ in plans}, since)
        values = await self.reads.read(
            session, config.kpis, {q for *_, v, p in plans.values() for q in (v, p)}
        )
        new: list[ResultRow] = []
        changed: list[ResultRow] = []
        changes: list[RestatementRow] = []
        deliveries = 0
        for key, (goal, period, value_query, previous_query) in plans.items():
            previous = values.get(previous_query)
            baseline = goal.baseline if goal.baseline is not None else previous
            target = pacing.resolve_target(goal, baseline)
            row = recorded.get(key)
            if row is None:
                now_standing = restatements.standing(
                    goal.direction, values.get(value_query), target
                )
                new.append(_reported(goal, period, now_standing, now))
                continue
            if not restatements.target_follows_data(goal):
                target = row.reported_target
            after = restatements.standing(goal.direction, values.get(value_query), target)
            before = _standing(row.value, row.target, row.status)
            if not restatements.differs(before, after):
                continue
            number = row.restatements + 1
            told = _standing(row.notified_value, None, row.notified_status)
            threshold = (
                goal.restate_threshold
                if goal.restate_threshold is not None
                else self.restate_threshold
            )
            notify = restatements.notify_due(told, after, threshold)
            restated = replace(
                row,
                value=after.value,
                target=after.target,
                status=_text(after.status),
                checked_at=now,
                restatements=number,
                restated_at=now,
                restated_delta=None
                if after.value is None or row.reported_value is None
                else after.value - row.reported_value,
                restated_relative=restatements.relative_change(row.reported_value, after.value),
            )
            if notify:
                restated = replace(
                    restated,
                    notified_value=after.value,
                    notified_status=_text(after.status),
                    notified_restatement=number,
                    notified_at=now,
                )
                deliveries += await self._notify_restatement(session, config, goal, restated, told)
            changed.append(restated)
            changes.append(
                RestatementRow(
                    goal=row.goal,
                    period_start=row.period_start,
                    number=number,
                    restated_at=now,
                    before_value=row.value,
                    value=after.value,
                    target=after.target,
                    status=_text(after.status),
                    delta=None
                    if after.value is None or row.value is None
                    else after.value - row.value,
                    relative=restatements.relative_change(row.value, after.value),
                    notified=notify,
                )
            )
            metrics.GOAL_RESTATEMENTS.labels("notified" if notify else "recorded").inc()
        await result_store.insert_results(session, new)
        await result_store.restate(session, changed, changes)
        return deliveries

    async def _notify_restatement(
        self,
        session: AsyncSession,
        config: Config,
        goal: GoalSpec,
        restated: ResultRow,
        told: Standing,
    ) -> int:
        """One notification per channel of the goal (and every channel whose `match` takes
        it), straight into the outbox: a restatement is an event, not a state, so it skips
        grouping and repeats. Written with the restatement it reports, under a key derived
        from (goal, period, restatement number, channel)."""
        labels = {
            **goal.labels,
            "alertname": goal.name,
            "goal": goal.name,
            "kpi": goal.kpi,
            "severity": goal.severity.value,
            "event": "restated",
        }
        sent = 0
        for channel in route(labels, goal.channels, config.channels):
            assert restated.notified_restatement is not None
            key = restatements.notice_key(
                goal.name, restated.period_start, restated.notified_restatement, channel
            )
            payload = restatement_payload(
                channel,
                labels,
                restated,
                key,
                self.external_url,
                previous={"value": told.value, "status": _text(told.status)},
            )
            await store.outbox.enqueue_delivery(
                session,
                channel=channel,
                group_key=f"restated:{goal.name}:{restated.period_start.isoformat()}",
                seq=restated.notified_restatement,
                idempotency_key=key,
                payload=payload,
            )
            sent += 1
        return sent

    def _step_goal(
        self,
        reading: GoalReading,
        status: pacing.GoalStatus,
        contributors: list[dict[str, Any]],
        now: datetime,
        result: CycleResult,
    ) -> None:
        # One alert per goal and bad status: moving from at_risk to off_track resolves the
        # one and fires the other, so the receiver hears about every worsening.
        goal, pace = reading.goal, reading.pace
        labels = {
            **goal.labels,
            "alertname": goal.name,
            "goal": goal.name,
            "kpi": goal.kpi,
            "severity": goal.severity.value,
            "status": status.value,
        }
        fp = fingerprint(labels)
        previous = self.alerts.get(fp)
        before = previous.state if previous else AlertState()
        # No target (a growth goal whose previous period was empty) is nothing to page about.
        after, transition = step(before, pace.target is not None and pace.status is status, now)
        if previous is None and not after.is_active:
            return
        goal_context = {
            "name": goal.name,
            "kpi": goal.kpi,
            "direction": goal.direction.value,
            **reading.standing(),
            "contributors": contributors,
        }
        refreshed = previous is None or (previous.context or {}).get("goal") != goal_context
        if transition is Transition.none and not (after.is_active and refreshed):
            return
        summary = (
            f"goal {goal.name} is {status.value.replace('_', ' ')}: {goal.kpi} at "
            f"{_fmt(pace.value)}, expected {_fmt(pace.expected)} by now, target "
            f"{_fmt(pace.target)}, projected {_fmt(pace.projection)}"
        )
        result.alerts[fp] = AlertRecord(
            fingerprint=fp,
            origin="goal",
            name=goal.name,
            labels=labels,
            annotations={"summary": summary, "description": goal.description}
            if goal.description
            else {"summary": summary},
            dims=dict(goal.dims),
            channels=tuple(goal.channels),
            state=after,
            value=pace.value,
            context={"goal": goal_context},
        )

    # --- dispatch ----------------------------------------------------------------------

    async def _dispatch(
        self, session: AsyncSession, config: Config, now: datetime, result: CycleResult
    ) -> None:
        view = {**self.alerts, **result.alerts}
        notified = {key for g in self.groups.values() for key in g.notified}
        notified_fps = {fp for fp, _ in notified}
        # Firing alerts, and whatever a group last showed firing (in any state now: an
        # episode that resolved and went pending again still owes its resolve).
        candidates = [
            r
            for r in view.values()
            if r.state.state is State.firing or r.fingerprint in notified_fps
        ]
        silencer = Silencer(tuple(await store.silences.active_silences(session, now)), now)
        acks = Acknowledger(await store.alerts.acked_fingerprints(session)) if candidates else None
        members: dict[tuple[str, str], list[GroupAlert]] = defaultdict(list)
        labels_of: dict[tuple[str, str], dict[str, str]] = {}
        for record in candidates:
            for name in route(record.labels, record.channels, config.channels):
                channel = config.channels[name]
                group_key, group_labels = group_of(record.labels, channel.group_by)
                labels_of[(name, group_key)] = group_labels
                # Alertmanager has silences of its own and resolves what we stop re-sending,
                # so acknowledgements do not stop repeats there.
                honours_acks = channel.type is not ChannelType.alertmanager
                members[(name, group_key)].append(
                    self._group_alert(
                        record,
                        silenced=silencer.mutes(record.labels),
                        acked=honours_acks and acks is not None and acks.mutes(record.labels),
                    )
                )
        for key in set(members) | set(self.groups):
            channel_name, group_key = key
            alerts = members.get(key, [])
            group = self.groups.get(key)
            spec = config.channels.get(channel_name)
            if spec is None:
                if group is not None:
                    await store.groups.delete_group(session, channel_name, group_key)
                    result.groups[key] = None
                continue
            has_firing = any(a.status is Status.firing for a in alerts)
            if group is None:
                if not has_firing:
                    continue
                group = GroupState(channel_name, group_key, labels_of[key], created_at=now)
                result.groups[key] = group
            flush = plan(group, alerts, now, Timing.of(spec))
            if flush is not None:
                group = await self._flush(session, channel_name, group, flush, now, result)
            if not group.notified and not has_firing:
                if key in self.groups:
                    await store.groups.delete_group(session, channel_name, group_key)
                result.groups[key] = None
            elif key in result.groups or group != self.groups.get(key):
                await store.groups.save_group(session, group)
                result.groups[key] = group

    async def _flush(
        self,
        session: AsyncSession,
        channel: str,
        group: GroupState,
        flush: Flush,
        now: datetime,
        result: CycleResult,
    ) -> GroupState:
        if not flush.send:
            return replace(group, notified=flush.notified)
        seq = group.seq + 1
        # Random, stored with the intent: stable across retries and restarts, never reused
        # by a later notification (a group deleted and created again restarts its seq).
        key = uuid.uuid4().hex
        payload = webhook_payload(channel, group, flush, key, self.external_url)
        await store.outbox.enqueue_delivery(
            session,
            channel=channel,
            group_key=group.group_key,
            seq=seq,
            idempotency_key=key,
            payload=payload,
        )
        result.deliveries += 1
        return replace(group, last_flush_at=now, notified=flush.notified, seq=seq)

    def _group_alert(self, record: AlertRecord, *, silenced: bool, acked: bool) -> GroupAlert:
        state = record.state
        return GroupAlert(
            fingerprint=record.fingerprint,
            episode=state.episode,
            status=Status.firing if state.state is State.firing else Status.resolved,
            labels=record.labels,
            annotations=record.annotations,
            starts_at=state.fired_at or state.active_at,
            ends_at=state.resolved_at if state.state is State.resolved else None,
            value=record.value,
            context={"origin": record.origin, "name": record.name, **(record.context or {})},
            silenced=silenced,
            acked=acked,
        )


def _project(
    dims_sets: Iterable[Mapping[str, str]], by: Sequence[str]
) -> dict[DimsKey, dict[str, str]]:
    """The distinct groups (values of the `by` dimensions) among dimension sets."""
    out: dict[DimsKey, dict[str, str]] = {}
    for dims in dims_sets:
        if all(f in dims for f in by):
            group = {f: dims[f] for f in by}
            out.setdefault(dims_key(group), group)
    return out


def _text(status: ResultStatus | None) -> str | None:
    return None if status is None else status.value


def _standing(value: float | None, target: float | None, status: str | None) -> Standing:
    return Standing(value, target, None if status is None else ResultStatus(status))


def _reported(
    goal: GoalSpec, period: pacing.GoalPeriod, standing: Standing, now: datetime
) -> ResultRow:
    """A period's result the first time it is seen closed: as reported, and as notified
    (the reference later restatements are measured against)."""
    status = _text(standing.status)
    return ResultRow(
        goal=goal.name,
        period_start=period.start,
        period_end=period.end,
        kpi=goal.kpi,
        direction=goal.direction.value,
        reported_value=standing.value,
        reported_target=standing.target,
        reported_status=status,
        reported_at=now,
        value=standing.value,
        target=standing.target,
        status=status,
        checked_at=now,
        notified_value=standing.value,
        notified_status=status,
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def _dashboard_row(
    reading: GoalReading, contributors: list[dict[str, Any]], now: datetime
) -> GoalReadingRow:
    goal, period, pace = reading.goal, reading.period, reading.pace
    return GoalReadingRow(
        goal=goal.name,
        kpi=goal.kpi,
        direction=goal.direction.value,
        period_start=period.start,
        period_end=period.end,
        elapsed=pace.elapsed,
        status=pace.status.value,
        value=pace.value,
        target=pace.target,
        expected=pace.expected,
        projection=pace.projection,
        gap=pace.gap,
        attainment=pacing.attainment(pace.value, pace.target, goal.direction),
        projected_attainment=pacing.attainment(pace.projection, pace.target, goal.direction),
        evaluated_at=now,
        contributors=contributors,
    )


async def _aside(
    session: AsyncSession,
    work: Callable[[], Awaitable[T]],
    failed: Counter,
    what: str,
) -> T | None:
    """`work` in a savepoint: the goals' bookkeeping for dashboards and restatements must
    never stop the cycle's alerts (a schema not yet migrated, say). None when it failed,
    counted in `failed` and logged."""
    try:
        async with session.begin_nested():
            return await work()
    except DBAPIError as exc:
        failed.inc()
        log.warning(what, extra={"error": str(exc.orig)})
        return None
