"""The demo's one shop: its size, growth and incidents, and how far back its history goes.

History and live traffic come from this one simulator, so a week of history and a week of
live traffic count the same kind of shop: every "compared with last week" is like for like.
Its size is what this machine aggregates in time (settings.demo_visits_per_minute).
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from services.demo.periods import PeriodKind, period_containing
from services.demo.settings import DemoSettings
from services.demo.simulator import Incident, Profile, SimConfig, Simulator

# The hour the past incident begins, business time: a broken release goes out in the morning.
PAST_INCIDENT_HOUR = 9


def history_start(settings: DemoSettings, now: datetime, zone: ZoneInfo) -> datetime:
    """`demo_history` before now, moved back to the first day of a month (business time) if
    one lies within `demo_history_month_slack` before that: the month it starts in is then
    whole. With 8 weeks and 2 weeks of slack the previous month is always whole (this month
    compares with it like for like), and in the first week or so of a month the month before
    last is whole too (a last-month review compares with it)."""
    earliest = now - settings.demo_history
    month = period_containing(PeriodKind.month, earliest.astimezone(zone).date())
    month_start = month.bounds(zone)[0].astimezone(UTC)
    if month_start >= earliest - settings.demo_history_month_slack:
        return month_start
    return earliest


def incidents(settings: DemoSettings, now: datetime, zone: ZoneInfo) -> tuple[Incident, ...]:
    """The past incident (a working day, `demo_past_incident_ago` back) and the live one."""
    out: list[Incident] = []
    if settings.demo_past_incident is not None:
        day = (now - settings.demo_past_incident_ago).astimezone(zone).date()
        begin = datetime.combine(day, time(PAST_INCIDENT_HOUR), tzinfo=zone).astimezone(UTC)
        out.append(
            Incident(settings.demo_past_incident, begin, begin + settings.demo_past_incident_for)
        )
    if settings.demo_scenario is not None:
        start = now - settings.demo_incident_lead
        out.append(Incident(settings.demo_scenario, start, start + settings.demo_incident_for))
    return tuple(out)


def demo_shop(settings: DemoSettings, timezone: str, now: datetime) -> Simulator:
    """`demo_visits_per_minute` on average today, `demo_growth_per_week` smaller each week
    before, with the daily and weekly rhythm of the simulator and both incidents."""
    profile = Profile(
        visits_per_day=settings.demo_visits_per_minute * 1440,
        growth_per_week=settings.demo_growth_per_week,
        pages_per_session=settings.demo_pages_per_session,
        # Hourly spend reports: 120 events a day instead of 480, the same spend.
        ad_spend_every=60,
    )
    return Simulator(
        SimConfig(
            seed=settings.demo_seed,
            profile=profile,
            incidents=incidents(settings, now, ZoneInfo(timezone)),
            timezone=timezone,
            growth_anchor=now,
        )
    )
