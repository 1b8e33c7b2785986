"""The demo's shop over its whole history: eight weeks and more, a daily and a weekly rhythm,
a growth trend, the past incident, the live one, and live traffic on the history's scale —
each checked against what the simulator's own parameters predict."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.demo.settings import REPO_ROOT, DemoSettings
from services.demo.shop import demo_shop, history_start
from services.demo.simulator import EventStream, Scenario, SimEvent, Simulator, events_between
from shared.config import load_config_text
from shared.durations import parse_duration

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 20, 30, tzinfo=UTC)  # a Tuesday evening
ZONE = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Seen:
    """What the tests need of an event (the whole history would take ~1 GB as SimEvents)."""

    type: str
    time: datetime
    source: str
    actor: str


def seen(events: Iterable[SimEvent]) -> list[Seen]:
    return [
        Seen(e.type, e.time, e.source, e.body.get("user_id") or e.body.get("anonymous_id") or "")
        for e in events
        if e.type in {"session_started", "page_viewed", "order_completed"}
    ]


@pytest.fixture(scope="module")
def settings() -> DemoSettings:
    return DemoSettings()


@pytest.fixture(scope="module")
def shop(settings: DemoSettings) -> Simulator:
    return demo_shop(settings, "UTC", NOW)


@pytest.fixture(scope="module")
def history(settings: DemoSettings, shop: Simulator) -> list[Seen]:
    """The demo's whole history, as the demo writes it (~220,000 events, ~10 s)."""
    return seen(events_between(shop, history_start(settings, NOW, ZONE), NOW))


def sessions_by_day(history: list[Seen]) -> Counter[date]:
    return Counter(e.time.date() for e in history if e.type == "session_started")


def test_the_history_covers_eight_weeks_and_whole_months(settings: DemoSettings) -> None:
    assert settings.demo_history >= timedelta(weeks=8)
    # 1 Dec: 8 weeks reach 6 Oct; 1 Oct is within the slack, so October is whole and a
    # last-month review (November against October) compares whole months.
    assert history_start(settings, NOW, ZONE) == datetime(2026, 10, 1, tzinfo=UTC)
    # 20 Dec: 8 weeks reach 25 Oct, no month starts in the two weeks before: November (the
    # month this one compares with) is whole anyway.
    mid = datetime(2026, 12, 20, 12, tzinfo=UTC)
    assert history_start(settings, mid, ZONE) == mid - timedelta(weeks=8)
    # 31 Dec: 8 weeks reach 5 Nov; November is made whole.
    late = datetime(2026, 12, 31, 12, tzinfo=UTC)
    assert history_start(settings, late, ZONE) == datetime(2026, 11, 1, tzinfo=UTC)
    # Months start at midnight in the business time zone.
    berlin = ZoneInfo("Europe/Berlin")
    assert history_start(settings, late, berlin) == datetime(2026, 11, 1, tzinfo=berlin)
    # Whatever the day, at least 8 weeks and the whole previous month.
    for day in range(0, 365, 3):
        now = datetime(2026, 1, 1, 7, tzinfo=UTC) + timedelta(days=day)
        start = history_start(settings, now, ZONE)
        assert now - timedelta(weeks=10) <= start <= now - timedelta(weeks=8)
        previous_month = (now.replace(day=1) - timedelta(days=1)).replace(day=1, hour=0)
        assert start <= previous_month


def test_the_shop_grows_week_on_week_as_configured(
    settings: DemoSettings, history: list[Seen]
) -> None:
    by_day = sessions_by_day(history)
    first_monday = min(by_day) + timedelta(days=(7 - min(by_day).weekday()) % 7)
    weeks = [
        sum(by_day[first_monday + timedelta(days=7 * w + d)] for d in range(7))
        for w in range(8)
        if first_monday + timedelta(days=7 * w + 7) <= NOW.date()
    ]
    assert len(weeks) >= 7
    # Least-squares slope of log(weekly sessions) against the week number.
    xs, ys = range(len(weeks)), [math.log(w) for w in weeks]
    mx, my = sum(xs) / len(weeks), sum(ys) / len(weeks)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    assert math.exp(slope) - 1 == pytest.approx(settings.demo_growth_per_week, abs=0.015)
    assert weeks[-1] > 1.3 * weeks[0]


def test_weekends_are_quieter_than_weekdays(shop: Simulator, history: list[Seen]) -> None:
    by_day = sessions_by_day(history)
    days = sorted(by_day)[1:-1]  # whole days only
    # Detrended by the growth the simulator applies, so only the weekly rhythm is left.
    level = {
        d: by_day[d] / shop.trend(datetime(d.year, d.month, d.day, 12, tzinfo=UTC)) for d in days
    }
    weekend = [v for d, v in level.items() if d.weekday() >= 5]
    weekday = [v for d, v in level.items() if d.weekday() < 5 and d.weekday() != 2]
    ratio = (sum(weekend) / len(weekend)) / (sum(weekday) / len(weekday))
    assert ratio == pytest.approx(0.85, abs=0.04)  # Simulator.rhythm: weekends at 85 %


def test_traffic_follows_the_daily_rhythm(shop: Simulator, history: list[Seen]) -> None:
    by_hour = Counter(e.time.hour for e in history if e.type == "session_started")
    monday = datetime(2026, 11, 2, tzinfo=UTC)
    expected = {
        h: sum(shop.rhythm(monday + timedelta(hours=h, minutes=m)) for m in range(60))
        for h in range(24)
    }
    scale = sum(by_hour.values()) / sum(expected.values())
    for hour in range(24):
        assert by_hour[hour] == pytest.approx(expected[hour] * scale, rel=0.12), hour
    assert by_hour[19] > 4 * by_hour[4]


def test_the_past_incident_hides_web_traffic_for_a_working_day(
    shop: Simulator, history: list[Seen]
) -> None:
    past = shop.config.incidents[0]
    assert past.scenario is Scenario.traffic_drop
    assert past.end is not None
    assert past.start.hour == 9
    assert past.end - past.start == timedelta(hours=10)
    week = timedelta(days=7)

    def views(source: str, shift: timedelta) -> int:
        lo, hi = past.start + timedelta(minutes=10) + shift, past.end + shift
        return sum(
            1
            for e in history
            if e.type == "page_viewed" and e.source == source and lo <= e.time < hi
        )

    web_around = (views("web-shop", -week) + views("web-shop", week)) / 2
    assert views("web-shop", timedelta(0)) < 0.5 * web_around  # two thirds hidden
    app_around = (views("mobile-app", -week) + views("mobile-app", week)) / 2
    assert views("mobile-app", timedelta(0)) == pytest.approx(app_around, rel=0.3)


def test_the_live_incident_is_under_way_when_the_demo_starts(
    settings: DemoSettings, shop: Simulator, history: list[Seen]
) -> None:
    live = shop.config.incidents[-1]
    assert live.scenario is Scenario.checkout_collapse
    assert live.start == NOW - settings.demo_incident_lead
    window = [e for e in history if e.time >= NOW - timedelta(hours=4)]
    sessions = sum(1 for e in window if e.type == "session_started")
    orders = sum(1 for e in window if e.type == "order_completed")
    assert sessions > 250
    assert orders / sessions < 0.008  # ~0.25 % against ~3 % normally


def test_live_traffic_is_on_the_scale_of_the_history(
    settings: DemoSettings, shop: Simulator, history: list[Seen]
) -> None:
    """No jump where the history ends: the day after the demo starts has the sessions of the
    same stretch one and two weeks before, grown by the weekly growth. (A live part at a
    different scale from the history would be off by that factor; day-to-day noise is ~5 %.)"""
    live = seen(EventStream(shop, NOW).until(NOW + timedelta(days=1)))

    def sessions(events: Iterable[Seen], lo: datetime | None = None) -> int:
        hi = lo + timedelta(days=1) if lo else None
        return sum(
            1
            for e in events
            if e.type == "session_started" and (lo is None or (hi and lo <= e.time < hi))
        )

    for weeks in (1, 2):
        before = sessions(history, NOW - timedelta(weeks=weeks))
        growth = (1 + settings.demo_growth_per_week) ** weeks
        assert sessions(live) / before == pytest.approx(growth, abs=0.12), weeks


def test_the_example_rules_are_sized_for_the_demo_shop(history: list[Seen]) -> None:
    """The conversion rule pages on the live incident and, on ordinary days of the last two
    weeks, on no more than a few windows by chance; no-orders stays quiet on ordinary days."""
    config = load_config_text(
        (REPO_ROOT / "examples" / "pacekeeper.yaml").read_text(encoding="utf-8"), env={}
    )
    rules = {r.name: r for r in config.rules}
    collapse, absence = rules["checkout-conversion-collapse"], rules["no-orders"]
    assert collapse.min_sample is not None
    window, absence_window = parse_duration(collapse.window), parse_duration(absence.window)

    times = [e.time for e in history]  # in time order, as events_between gives them

    def judge(end: datetime, window: timedelta) -> tuple[int, int]:
        inside = history[bisect_left(times, end - window) : bisect_left(times, end)]
        visitors = len({e.actor for e in inside if e.type == "session_started"})
        return visitors, sum(1 for e in inside if e.type == "order_completed")

    visitors, orders = judge(NOW, window)
    assert visitors >= collapse.min_sample.value
    assert orders / visitors < collapse.value  # the page of the demo

    ordinary_end = NOW - timedelta(hours=5)  # before the live incident
    ends = [ordinary_end - timedelta(hours=h) for h in range(0, 14 * 24, 3)]
    judged = fired = quiet = 0
    for end in ends:
        visitors, orders = judge(end, window)
        if visitors >= collapse.min_sample.value:
            judged += 1
            fired += orders / visitors < collapse.value
        quiet += judge(end, absence_window)[1] == 0
    assert judged >= len(ends) / 3  # busy hours have the sample
    assert fired <= max(1, judged // 20)
    assert quiet <= max(1, len(ends) // 20)
