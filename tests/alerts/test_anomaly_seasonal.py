"""Anomaly rules on the demo's simulated shop: a daily and weekly rhythm, growth, and injected
incidents. The rule must catch every incident and stay quiet through the normal weeks; the
best fixed threshold on the same data is measured alongside.

    .venv/bin/pytest -q -p no:cacheprovider tests/alerts/test_anomaly_seasonal.py -s

prints both rules' precision and recall (docs/alerts.md quotes them).

The KPI is sessions over the last two hours, counted from the simulator's own events (17
weeks: 8 of history for the first baseline, then 9 judged every hour), and judged through
the rule path the evaluator runs (`instances`, `judge`), with `kpi_value` replaced by sums
of the per-minute counts (the past weeks' windows are aligned to 5-minute steps).
tests/alerts/test_anomaly_evaluator.py runs anomaly rules through the evaluator on
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest

from services.alerts.evaluation.rules import Query, instances, judge
from services.demo.simulator import (
    Incident,
    Profile,
    Scenario,
    SimConfig,
    Simulator,
    minute_of,
)
from shared.config.alerting import RuleSpec

pytestmark = pytest.mark.unit

ZONE = "Europe/Berlin"  # crosses the March daylight-saving change
START = datetime(2026, 1, 5, tzinfo=ZoneInfo(ZONE)).astimezone(UTC)  # a Monday
WEEKS = 17
HISTORY_WEEKS = 8
HOUR = timedelta(hours=1)
WINDOW = timedelta(hours=2)
KPI = "sessions"


def _local(day: int, hour: int) -> datetime:
    """`day` days after START at `hour` o'clock, business time."""
    local = START.astimezone(ZoneInfo(ZONE)) + timedelta(days=day)
    return local.replace(hour=hour).astimezone(UTC)


# Broken tag managers hiding two thirds of the web traffic (~42% of all sessions: a third
# are the app's), on working days and weekends, mornings, afternoons and evenings; two of
# them in the history the baselines are read from.
INCIDENTS = (
    Incident(Scenario.traffic_drop, _local(9, 10), _local(9, 14)),  # history, a Wednesday
    Incident(Scenario.traffic_drop, _local(33, 15), _local(33, 19)),  # history, a Saturday
    Incident(Scenario.traffic_drop, _local(57, 9), _local(57, 13)),  # Tuesday morning
    Incident(Scenario.traffic_drop, _local(67, 18), _local(67, 21)),  # Friday evening
    Incident(Scenario.traffic_drop, _local(76, 13), _local(76, 19)),  # Sunday afternoon
    Incident(Scenario.traffic_drop, _local(86, 8), _local(86, 12)),  # Wednesday morning
    Incident(Scenario.traffic_drop, _local(95, 19), _local(95, 23)),  # Friday evening
    Incident(Scenario.traffic_drop, _local(101, 11), _local(101, 13)),  # Thursday, 2 hours
    Incident(Scenario.traffic_drop, _local(110, 10), _local(110, 16)),  # Saturday
)


@cache
def per_minute() -> list[int]:
    """Sessions per minute (by event time) from START, as running totals (index n: the
    sessions before minute n) of a shop of 3,000 visits a day, growing 3% a week, with the
    incidents above. Minutes, not hours: the past weeks' windows are aligned to 5-minute
    steps with a phase of their own, not to the hour."""
    sim = Simulator(
        SimConfig(
            seed=7,
            profile=Profile(visits_per_day=3000, growth_per_week=0.03),
            incidents=INCIDENTS,
            timezone=ZONE,
            growth_anchor=START + timedelta(weeks=WEEKS),
        )
    )
    totals, total = [0], 0
    first = minute_of(START)
    for minute in range(first, first + WEEKS * 7 * 1440):
        total += sum(e.type == "session_started" for e in sim.session_events(minute))
        totals.append(total)
    return totals


def value(t_from: datetime, t_to: datetime) -> float:
    """`kpi_value` of the counts over a window of whole minutes (0 outside the history)."""
    totals = per_minute()

    def at(t: datetime) -> int:
        return totals[max(0, min(len(totals) - 1, (t - START) // timedelta(minutes=1)))]

    return float(at(t_to) - at(t_from))


def judged_hours() -> Iterator[datetime]:
    """Every hour after the history, as the end of the window judged there."""
    t = START + timedelta(weeks=HISTORY_WEEKS) + WINDOW
    while t <= START + timedelta(weeks=WEEKS):
        yield t
        t += HOUR


def incident_of(t_from: datetime, t_to: datetime) -> Incident | None:
    """The incident a window overlaps, if any."""
    for incident in INCIDENTS:
        assert incident.end is not None
        if t_from < incident.end and incident.start < t_to:
            return incident
    return None


@dataclass(frozen=True)
class Score:
    fired: int  # windows judged breaching
    true: int  # of them, overlapping an incident
    caught: int  # incidents with at least one breaching window
    incidents: int
    false_hours: list[datetime]

    @property
    def precision(self) -> float:
        return self.true / self.fired if self.fired else 1.0

    @property
    def recall(self) -> float:
        return self.caught / self.incidents


def score(breaching: dict[datetime, bool]) -> Score:
    judged = [i for i in INCIDENTS if i.start >= START + timedelta(weeks=HISTORY_WEEKS)]
    caught: set[Incident] = set()
    fired = true = 0
    false_hours = []
    for t_to, breach in breaching.items():
        if not breach:
            continue
        fired += 1
        incident = incident_of(t_to - WINDOW, t_to)
        if incident is None:
            false_hours.append(t_to)
        else:
            true += 1
            caught.add(incident)
    return Score(fired, true, len(caught), len(judged), false_hours)


def anomaly_verdicts(rule: RuleSpec) -> dict[datetime, bool]:
    zone = ZoneInfo(ZONE)
    out = {}
    for t in judged_hours():
        (inst,) = instances(rule, t, zone, monotone=True)  # a count, as the evaluator says
        values = {q: value(q.t_from, q.t_to) for q in inst.queries() if isinstance(q, Query)}
        out[t] = judge(inst, values).breaching is True
    return out


def best_thresholds() -> tuple[tuple[float, Score], tuple[float, Score] | None]:
    """Fixed rules `sessions over 2h < c` on the same hours: the one with the best F1, and
    the highest that never fires outside an incident (None: every one that fires at all
    fires on a normal night first)."""
    values = {t: value(t - WINDOW, t) for t in judged_hours()}
    best: tuple[float, float, Score] | None = None
    quiet: tuple[float, Score] | None = None
    for c in sorted(set(values.values())):
        s = score({t: v < c for t, v in values.items()})
        if not s.fired:
            continue
        if not s.false_hours:
            quiet = (c, s)
        f1 = 2 * s.precision * s.recall / (s.precision + s.recall) if s.true else 0.0
        if best is None or f1 > best[0]:
            best = (f1, c, s)
    assert best is not None
    return (best[1], best[2]), quiet


ANOMALY = RuleSpec.model_validate(
    {
        "name": "page-views-unusually-low",
        "kind": "anomaly",
        "kpi": KPI,
        "window": "2h",
        "anomaly": {"direction": "below", "k": 3, "weeks": 8, "min_spread": 0.05},
    }
)


def test_the_anomaly_rule_catches_every_incident_and_never_fires_in_normal_weeks() -> None:
    found = score(anomaly_verdicts(ANOMALY))
    (limit, fixed), quiet = best_thresholds()
    print(
        f"\nanomaly (k=3, 8 weeks, below): precision {found.precision:.3f}"
        f" ({found.true}/{found.fired} windows), recall {found.recall:.3f}"
        f" ({found.caught}/{found.incidents} incidents)"
        f"\nbest fixed threshold (< {limit:g}): precision {fixed.precision:.3f}"
        f" ({fixed.true}/{fixed.fired} windows), recall {fixed.recall:.3f}"
        f" ({fixed.caught}/{fixed.incidents} incidents)"
        + (
            "\nno fixed threshold catches anything without firing in a normal week"
            if quiet is None
            else f"\nhighest quiet fixed threshold (< {quiet[0]:g}): recall {quiet[1].recall:.3f}"
        )
    )
    assert found.recall == 1.0
    assert found.false_hours == []
    # What the issue is about: no fixed line does both on a daily rhythm.
    assert fixed.precision < 0.5 or fixed.recall < 1.0
