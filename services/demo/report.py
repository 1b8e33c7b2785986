"""`pacekeeper report`: the periodic performance review a team lead sends after the meeting.

Goal attainment, each KPI against the previous period and its target, charts of every goal
with its target line and pacing path, and the alerts of the period with their time to
resolve. This module holds the report's content and gathers it: `build_report` asks the
repository (the shared `kpi_value` / `kpi_series` functions) and the alerts API for
numbers; everything after that is a pure function of those numbers — targets and pacing
here, `formatting` for numbers, `charts` for the pictures, `report_render` for HTML,
Markdown, PDF and JSON.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.alerts.store.results import ResultRow, goal_result
from services.demo.api import AlertsApi, AlertState, ApiError
from services.demo.charts import ChartData, Points, png_base64, render_chart
from services.demo.formatting import (
    day_span,
    display_unit,
    format_moment,
    format_value,
    period_title,
    signed_percent,
)
from services.demo.pacing import (
    CUMULATIVE_KINDS,
    GoalPeriod,
    ReviewStatus,
    attainment,
    goal_period,
    pace,
    review_status,
)
from services.demo.periods import Period, PeriodKind, periods_overlapping
from services.demo.repository import ReportRepository
from shared.config.alerting import Direction, GoalSpec
from shared.config.kpis import KpiKind, KpiSpec, referenced_kpis
from shared.i18n import Locale, translations


class ReportFormat(StrEnum):
    html = "html"
    md = "md"
    pdf = "pdf"
    json = "json"


# -- the report's content -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoalRow:
    goal: str
    kpi: str
    description: str
    window: str  # "November 2026", or "1 Jan 2027 - 31 Mar 2027" for a one-off goal (localized)
    direction: Direction
    unit: str
    target: float | None
    target_note: str  # how a growth target was derived
    value: float | None
    expected: float | None
    projection: float | None
    attainment: float | None
    status: ReviewStatus
    in_progress: bool
    dims: dict[str, str] = field(default_factory=dict)
    chart: str | None = None  # base64 PNG
    # Set when late events restated the closed window after it was reported (`value` is
    # the result as restated).
    reported_value: float | None = None
    restated_at: datetime | None = None

    @property
    def restated(self) -> bool:
        return self.restated_at is not None


# A goal's recorded result for the window starting at a moment (the alerts service records
# closed windows and their restatements), or None.
GoalResults = Callable[[str, datetime], Awaitable[ResultRow | None]]


def stored_results(sessions: async_sessionmaker[AsyncSession]) -> GoalResults:
    """Results as the alerts service recorded them in `goal_results`."""

    async def read(goal: str, start: datetime) -> ResultRow | None:
        async with sessions() as session:
            return await goal_result(session, goal, start)

    return read


@dataclass(frozen=True, slots=True)
class KpiRow:
    name: str
    description: str
    unit: str
    value: float | None
    previous: float | None
    target: float | None = None
    direction: Direction | None = None  # known when a goal names this KPI

    @property
    def change(self) -> float | None:
        if self.value is None or self.previous is None or self.previous == 0:
            return None
        return (self.value - self.previous) / abs(self.previous)

    @property
    def vs_target(self) -> float | None:
        if self.value is None or self.target is None or self.target == 0:
            return None
        return (self.value - self.target) / abs(self.target)

    def tone(self, delta: float | None) -> str:
        """good | bad | neutral for a change, once the better direction is known."""
        if delta is None or self.direction is None or abs(delta) < 0.005:
            return "neutral"
        up_is_good = self.direction is Direction.at_least
        return "good" if (delta > 0) == up_is_good else "bad"


@dataclass(frozen=True, slots=True)
class AlertRow:
    name: str
    severity: str
    state: str
    started_at: datetime | None
    resolved_at: datetime | None
    summary: str

    @property
    def time_to_resolve(self) -> timedelta | None:
        if self.started_at and self.resolved_at and self.resolved_at >= self.started_at:
            return self.resolved_at - self.started_at
        return None


@dataclass(frozen=True, slots=True)
class ReportData:
    title: str
    period: Period
    previous: Period
    timezone: str
    generated_at: datetime
    data_until: datetime
    in_progress: bool
    goals: list[GoalRow]
    kpis: list[KpiRow]
    alerts: list[AlertRow] | None  # None: the alerts service could not be asked
    notes: list[str] = field(default_factory=list)
    locale: Locale = Locale.en  # the language of every text above and of the rendering

    def count(self, *statuses: ReviewStatus) -> int:
        return sum(1 for g in self.goals if g.status in statuses)

    @property
    def median_time_to_resolve(self) -> timedelta | None:
        times = [a.time_to_resolve for a in self.alerts or [] if a.time_to_resolve]
        return (
            timedelta(seconds=statistics.median(t.total_seconds() for t in times))
            if times
            else None
        )

    @property
    def alerts_open(self) -> int:
        return sum(1 for a in self.alerts or [] if a.resolved_at is None)


# -- goal windows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoalWindow:
    """One window in which a goal is judged: the alerts service's `GoalPeriod`, named."""

    label: str
    previous_label: str
    span: GoalPeriod

    @property
    def start(self) -> datetime:
        return self.span.start

    @property
    def end(self) -> datetime:
        return self.span.end


def goal_windows(
    goal: GoalSpec, period: Period, zone: ZoneInfo, locale: Locale = Locale.en
) -> list[GoalWindow]:
    """The windows in which `goal` is judged that share a day with the report's period:
    each month of a quarter for a monthly goal, or the one window of a one-off goal."""
    report_start, report_end = period.bounds(zone)
    if goal.period is not None:
        return [
            GoalWindow(
                period_title(p, locale),
                period_title(p.previous(), locale),
                goal_period(goal, p.bounds(zone)[0], zone),
            )
            for p in periods_overlapping(PeriodKind(goal.period.value), period.start, period.end)
        ]
    span = goal_period(goal, report_start, zone)  # a one-off goal has one window, any `at`
    if span.end <= report_start or span.start >= report_end:
        return []
    assert goal.start is not None  # GoalSpec: a goal without a period has start and deadline
    assert goal.deadline is not None
    previous = translations(locale).gettext("the period before")
    return [GoalWindow(day_span(goal.start, goal.deadline, locale), previous, span)]


def chart_step(length: timedelta) -> timedelta:
    """About 24-92 points a chart: hourly for a day, daily for a month or a quarter."""
    if length <= timedelta(days=2):
        return timedelta(hours=1)
    if length <= timedelta(days=10):
        return timedelta(hours=6)
    if length <= timedelta(days=100):
        return timedelta(days=1)
    return timedelta(days=7)


# -- gathering ------------------------------------------------------------------------------


async def _goal_row(
    repo: ReportRepository,
    goal: GoalSpec,
    spec: KpiSpec | None,
    window: GoalWindow,
    *,
    now: datetime,
    zone: ZoneInfo,
    with_chart: bool,
    locale: Locale,
) -> GoalRow:
    """The same reading `GET /v1/goals` makes, at `now` or at the window's end."""
    unit = display_unit(spec) if spec else ""
    cumulative = spec is not None and spec.kind in CUMULATIVE_KINDS
    dims = dict(goal.dims) or None
    span = window.span
    at = min(span.end, now)
    elapsed = span.elapsed(at)
    value = await repo.kpi_value(goal.kpi, span.start, at, dims)
    previous_total = await repo.kpi_value(goal.kpi, span.previous_start, span.previous_end, dims)
    previous_to_date = None
    if cumulative:
        previous_to_date = await repo.kpi_value(
            goal.kpi, span.previous_start, span.previous_at(elapsed), dims
        )
    baseline = goal.baseline if goal.baseline is not None else previous_total
    note = ""
    _ = translations(locale).gettext
    if goal.growth is not None:
        growth = _("%(growth)s vs %(previous)s") % {
            "growth": signed_percent(goal.growth, locale, decimals=0),
            "previous": window.previous_label,
        }
        if baseline:
            note = _("%(growth)s (%(baseline)s)") % {
                "growth": growth,
                "baseline": format_value(baseline, unit, locale),
            }
        else:
            note = _("%(growth)s: no data") % {"growth": growth}
    if spec is None:
        result = None
        status = ReviewStatus.no_data
    else:
        result = pace(
            goal,
            kind=spec.kind,
            value=value,
            elapsed=elapsed,
            previous_total=previous_total,
            previous_to_date=previous_to_date,
        )
        status = review_status(result)
        if goal.growth is not None and not baseline:
            # Growth on nothing is no target: say so rather than call it achieved.
            result, status = None, ReviewStatus.no_data
    target = result.target if result else None
    projection = result.projection if result else None
    chart = None
    if with_chart and spec is not None:
        data = await _chart_data(
            repo, goal, spec, window, at=at, unit=unit, target=target, baseline=baseline,
            previous_total=previous_total, projection=projection,
        )  # fmt: skip
        chart = png_base64(render_chart(data, zone, locale))
    in_progress = elapsed < 1.0
    return GoalRow(
        goal=goal.name,
        kpi=goal.kpi,
        description=goal.description,
        window=window.label,
        direction=goal.direction,
        unit=unit,
        target=target,
        target_note=note,
        value=value,
        expected=result.expected if result else None,
        projection=projection,
        attainment=attainment(projection if in_progress else value, target, goal.direction),
        status=status,
        in_progress=in_progress,
        dims=dict(goal.dims),
        chart=chart,
    )


async def _prefix_values(
    repo: ReportRepository,
    spec: KpiSpec,
    start: datetime,
    ends: Sequence[datetime],
    step: timedelta,
    dims: dict[str, str] | None,
) -> Points:
    """The KPI over [start, t) for each t: a running sum of the series for counts and sums
    (exact, one query), one `kpi_value` per point for everything that does not add up."""
    if not ends:
        return []
    if spec.kind in {KpiKind.count, KpiKind.sum}:
        series = await repo.kpi_series(spec.name, start, ends[-1], step, dims)
        out: Points = []
        running, i = 0.0, 0
        for t in ends:
            while i < len(series) and series[i][0] < t:
                running += series[i][1] or 0.0
                i += 1
            out.append((t, running))
        return out
    points: Points = []
    for t in ends:
        v = await repo.kpi_value(spec.name, start, t, dims)
        if v is not None:
            points.append((t, v))
    return points


async def _chart_data(
    repo: ReportRepository,
    goal: GoalSpec,
    spec: KpiSpec,
    window: GoalWindow,
    *,
    at: datetime,
    unit: str,
    target: float | None,
    baseline: float | None,
    previous_total: float | None,
    projection: float | None,
) -> ChartData:
    dims = dict(goal.dims) or None
    span = window.span
    length = span.end - span.start
    step = chart_step(length)
    cumulative = spec.kind in CUMULATIVE_KINDS
    grid = [span.start + step * i for i in range(1, int(length / step) + 1)]
    if not grid or grid[-1] < span.end:
        grid.append(span.end)
    done = [t for t in grid if t < at] + ([at] if at > span.start else [])
    actual = await _prefix_values(repo, spec, span.start, done, step, dims)
    steps: Points = []
    if not cumulative:
        series = await repo.kpi_series(goal.kpi, span.start, at, step, dims)
        steps = [(t + step / 2, v) for t, v in series if v is not None and t >= span.start]
    pacing: Points = []
    if target is not None:
        if cumulative:
            # Along last period's shape, as the alerts service paces: the share of last
            # period's total it had reached at the same fraction of its length.
            fractions = [(t - span.start) / length for t in grid]
            ends = [span.previous_at(f) for f in fractions]
            shape = await _prefix_values(repo, spec, span.previous_start, ends, step, dims)
            share = dict(shape)
            pacing = [(span.start, 0.0)]
            for t, f, end in zip(grid, fractions, ends, strict=True):
                prev = share.get(end)
                done_share = min(1.0, prev / previous_total) if prev and previous_total else f
                pacing.append((t, target * done_share))
        elif baseline is not None:
            pacing = [(span.start, baseline), (span.end, target)]
    return ChartData(
        title=f"{goal.name} · {goal.kpi} · {window.label}",
        unit=unit,
        start=span.start,
        end=span.end,
        actual=actual,
        pacing=pacing,
        target=target,
        steps=steps,
        projection=(span.end, projection) if at < span.end and projection is not None else None,
        cumulative=cumulative,
    )


def _alert_rows(alerts: list[AlertState], start: datetime, end: datetime) -> list[AlertRow]:
    rows = [
        AlertRow(a.name, a.severity, a.state, a.started_at, a.resolved_at, a.summary)
        for a in alerts
        if a.started_at is not None
        and a.started_at < end
        and (a.resolved_at is None or a.resolved_at >= start)
    ]
    return sorted(rows, key=lambda r: r.started_at or start)


async def build_report(
    repo: ReportRepository,
    period: Period,
    *,
    now: datetime | None = None,
    alerts_api: AlertsApi | None = None,
    timezone: str | None = None,
    charts: bool = True,
    title: str | None = None,
    locale: Locale = Locale.en,
    results: GoalResults | None = None,
) -> ReportData:
    """Ask for every number the review needs and put the report together, in `locale`;
    with `results`, closed windows restated by late events show as reported and as
    restated."""
    _ = translations(locale).gettext
    now = now or datetime.now(UTC)
    tz_name = timezone or await repo.timezone() or "UTC"
    zone = ZoneInfo(tz_name)
    start, end = period.bounds(zone)
    previous = period.previous()
    prev_start, prev_end = previous.bounds(zone)
    data_until = min(end, now)
    in_progress = now < end
    notes: list[str] = []
    period_name = period_title(period, locale)
    if now <= start:
        notes.append(
            _("%(period)s has not started yet; every number is empty.") % {"period": period_name}
        )
        data_until = start
    kpis = await repo.kpis()
    goals = await repo.goals()

    goal_rows: list[GoalRow] = []
    for goal in sorted(goals.values(), key=lambda g: g.name):
        windows = [w for w in goal_windows(goal, period, zone, locale) if w.start < now]
        for i, window in enumerate(windows):
            row = await _goal_row(
                repo, goal, kpis.get(goal.kpi), window, now=now, zone=zone,
                with_chart=charts and i == len(windows) - 1, locale=locale,
            )  # fmt: skip
            recorded = None if results is None else await results(goal.name, window.start)
            if recorded is not None and recorded.restated_at is not None:
                row = replace(
                    row, reported_value=recorded.reported_value, restated_at=recorded.restated_at
                )
            goal_rows.append(row)

    # Targets for the KPI table: levels compare with any goal's target; totals only with a
    # goal judged over exactly this period.
    targets: dict[str, tuple[float | None, Direction]] = {}
    for row in goal_rows:
        spec = kpis.get(row.kpi)
        if row.dims or spec is None:
            continue
        # A running total is compared with a target only once its period has closed (the
        # goal table shows its pace meanwhile).
        same_window = row.window == period_name and not row.in_progress
        if spec.kind not in CUMULATIVE_KINDS or same_window:
            targets.setdefault(row.kpi, (row.target, row.direction))
        else:
            targets.setdefault(row.kpi, (None, row.direction))
    # Like for like: a period still running is compared with as much of the previous one.
    compare_end = prev_end if not in_progress else min(prev_end, prev_start + (data_until - start))
    kpi_rows: list[KpiRow] = []
    goal_kpis = [r.kpi for r in goal_rows]
    # KPIs with goals first, in the goals' order, then the rest by name. Building blocks
    # (inputs of a ratio or formula that carry no description) stay out of a review.
    inputs = {ref for spec in kpis.values() for ref in referenced_kpis(spec)}
    shown = [n for n, k in kpis.items() if n not in inputs or k.description or n in goal_kpis]
    order = sorted(
        shown, key=lambda n: (n not in goal_kpis, goal_kpis.index(n) if n in goal_kpis else 0, n)
    )
    for name in order:
        spec = kpis[name]
        target, direction = targets.get(name, (None, None))
        kpi_rows.append(
            KpiRow(
                name=name,
                description=spec.description,
                unit=display_unit(spec),
                value=await repo.kpi_value(name, start, data_until),
                previous=await repo.kpi_value(name, prev_start, compare_end),
                target=target,
                direction=direction,
            )
        )
    if in_progress and now > start:
        notes.append(
            _(
                "%(period)s is still running: numbers run to %(until)s and are compared"
                " with the same stretch of %(previous)s."
            )
            % {
                "period": period_name,
                "until": format_moment(data_until, zone, locale),
                "previous": period_title(previous, locale),
            }
        )

    for kpi, at in sorted((await repo.definitions_changed(start, end)).items()):
        notes.append(
            _(
                "The definition of %(kpi)s changed on %(when)s; its history is recomputed"
                " with the new definition, and the numbers here are those of the version"
                " that was active when this review was made."
            )
            % {"kpi": kpi, "when": format_moment(at, zone, locale)}
        )

    alert_rows: list[AlertRow] | None = None
    if alerts_api is not None:
        try:
            alert_rows = _alert_rows(await alerts_api.alerts(), start, end)
        except ApiError as exc:
            notes.append(
                _("Alerts are missing: the alerts service did not answer (%(error)s).")
                % {"error": exc}
            )
    return ReportData(
        title=title or _("Performance review — %(period)s") % {"period": period_name},
        period=period,
        previous=previous,
        timezone=tz_name,
        generated_at=now,
        data_until=data_until,
        in_progress=in_progress,
        goals=goal_rows,
        kpis=kpi_rows,
        alerts=alert_rows,
        notes=notes,
        locale=locale,
    )
