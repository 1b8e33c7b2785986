"""The simulator has the shape it promises, and the same seed gives the same events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from services.demo.simulator import (
    _HOURLY,
    _HOURLY_MEAN,
    SOURCES,
    EventStream,
    Incident,
    Profile,
    Scenario,
    SimConfig,
    SimEvent,
    Simulator,
    events_between,
    events_per_visit,
    visits_for_rate,
)
from shared.events import IncomingEvent, valid_source

pytestmark = pytest.mark.unit

MONDAY = datetime(2026, 11, 2, tzinfo=UTC)


def counts(events: Iterable[SimEvent]) -> Counter[str]:
    return Counter(e.type for e in events)


@pytest.fixture(scope="module")
def four_days() -> list[SimEvent]:
    """A large sample: four days of a 15,000-visit shop (~60,000 sessions)."""
    sim = Simulator(SimConfig(seed=11, profile=Profile(visits_per_day=15_000)))
    return list(events_between(sim, MONDAY, MONDAY + timedelta(days=4)))


def test_conversion_stays_within_the_configured_range(four_days: list[SimEvent]) -> None:
    low, high = Profile().conversion
    c = counts(four_days)
    assert c["session_started"] > 50_000
    assert low <= c["order_completed"] / c["session_started"] <= high


def test_each_day_converts_within_the_range_allowing_for_chance(four_days: list[SimEvent]) -> None:
    low, high = Profile().conversion
    by_day: dict[int, Counter[str]] = {}
    for event in four_days:
        by_day.setdefault(event.time.day, Counter())[event.type] += 1
    for day in by_day.values():
        sessions, orders = day["session_started"], day["order_completed"]
        # Four binomial standard deviations either side of the range.
        slack = 4 * (high * (1 - high) / sessions) ** 0.5
        assert low - slack <= orders / sessions <= high + slack


def test_signup_rate_and_order_values_are_plausible(four_days: list[SimEvent]) -> None:
    low, high = Profile().signup_rate
    new_visits = sum(
        1 for e in four_days if e.type == "session_started" and "user_id" not in e.body
    )
    c = counts(four_days)
    assert low * 0.9 <= c["signed_up"] / new_visits <= high * 1.1
    revenues = [e.body["properties"]["revenue"] for e in four_days if e.type == "order_completed"]
    assert 40 <= sum(revenues) / len(revenues) <= 70
    assert min(revenues) > 0


def test_traffic_follows_a_daily_rhythm(four_days: list[SimEvent]) -> None:
    by_hour = Counter(e.time.hour for e in four_days if e.type == "session_started")
    assert by_hour[20] > 4 * by_hour[4]  # evening peak against the night trough


def test_every_source_sends_and_every_event_is_valid(four_days: list[SimEvent]) -> None:
    assert {e.source for e in four_days} == set(SOURCES)
    for event in four_days[:: max(1, len(four_days) // 5000)]:
        assert valid_source(event.source)
        IncomingEvent.model_validate(event.body)
    assert len({(e.source, e.body["id"]) for e in four_days}) == len(four_days)


def test_returning_users_come_back(four_days: list[SimEvent]) -> None:
    signed_up = {e.body["user_id"] for e in four_days if e.type == "signed_up"}
    sessions_by = Counter(
        e.body["user_id"] for e in four_days if e.type == "session_started" and "user_id" in e.body
    )
    back = sum(1 for user in signed_up if sessions_by[user] >= 1)
    assert 0.2 < back / len(signed_up) < 0.9


def test_same_seed_same_events_and_another_seed_differs() -> None:
    start, end = MONDAY + timedelta(hours=9), MONDAY + timedelta(hours=10)
    a = [e.body for e in events_between(Simulator(SimConfig(seed=3)), start, end)]
    b = [e.body for e in events_between(Simulator(SimConfig(seed=3)), start, end)]
    c = [e.body for e in events_between(Simulator(SimConfig(seed=4)), start, end)]
    assert a == b
    assert a != c


def test_the_stream_gives_the_same_events_however_it_is_cut() -> None:
    sim = Simulator(SimConfig(seed=5))
    start, end = MONDAY + timedelta(hours=12), MONDAY + timedelta(hours=13)
    whole = [e.body["id"] for e in events_between(sim, start, end)]
    stream = EventStream(Simulator(SimConfig(seed=5)), start)
    cut: list[str] = []
    t = start
    for seconds in (0.3, 7, 59.9, 61, 1, 900, 1800, 3600):
        t = min(end, t + timedelta(seconds=seconds))
        cut += [e.body["id"] for e in stream.until(t)]
    assert cut == whole
    # A stream that starts later sees the same events from there on.
    later = [e.body["id"] for e in events_between(sim, start + timedelta(minutes=30), end)]
    assert whole[-len(later) :] == later


def test_events_come_out_in_time_order_within_the_window() -> None:
    start, end = MONDAY, MONDAY + timedelta(hours=2)
    times = [e.time for e in events_between(Simulator(SimConfig(seed=1)), start, end)]
    assert times == sorted(times)
    assert start <= times[0]
    assert times[-1] < end


def window(sim: Simulator, hours: tuple[int, int]) -> Counter[str]:
    day = MONDAY + timedelta(days=1)
    return counts(
        events_between(sim, day + timedelta(hours=hours[0]), day + timedelta(hours=hours[1]))
    )


def incident(scenario: Scenario | None, until: int = 14, visits: float = 45_000) -> Simulator:
    """A Tuesday with the scenario from noon until `until` o'clock."""
    day = MONDAY + timedelta(days=1)
    start, end = day + timedelta(hours=12), day + timedelta(hours=until)
    incidents = (Incident(scenario, start, end),) if scenario else ()
    return Simulator(SimConfig(seed=9, profile=Profile(visits_per_day=visits), incidents=incidents))


def test_checkout_collapse_stops_most_orders_and_recovers() -> None:
    sim = incident(Scenario.checkout_collapse)
    before, during, after = window(sim, (10, 12)), window(sim, (12, 14)), window(sim, (15, 17))
    assert during["order_completed"] < 0.25 * before["order_completed"]
    assert during["payment_failed"] > 5 * max(1, before["payment_failed"])
    assert after["order_completed"] > 0.6 * before["order_completed"]


def test_traffic_drop_hides_most_web_visits() -> None:
    day = MONDAY + timedelta(days=1)
    span = (day + timedelta(hours=12, minutes=10), day + timedelta(hours=14))
    normal = Simulator(SimConfig(seed=9))
    dropped = incident(Scenario.traffic_drop)

    def web_sessions(sim: Simulator) -> int:
        return sum(
            1
            for e in events_between(sim, *span)
            if e.type == "session_started" and e.source == "web-shop"
        )

    assert web_sessions(dropped) < 0.5 * web_sessions(normal)


def test_csat_slides_and_the_support_backlog_slows_first_replies() -> None:
    day = MONDAY + timedelta(days=1)

    def csat(sim: Simulator) -> float:
        # The slide reaches full strength after 90 minutes.
        span = (day + timedelta(hours=13, minutes=30), day + timedelta(hours=17))
        scores = [
            e.body["properties"]["score"]
            for e in events_between(sim, *span)
            if e.type == "survey_answered" and e.body["properties"]["survey"] == "csat"
        ]
        assert len(scores) > 100
        return sum(1 for s in scores if s >= 4) / len(scores)

    normal = csat(incident(None, visits=150_000))
    assert normal > 0.85
    assert csat(incident(Scenario.csat_slide, until=18, visits=150_000)) < normal - 0.2

    def p90_response(sim: Simulator) -> float:
        values = sorted(
            e.body["properties"]["response_seconds"]
            for e in events_between(sim, day + timedelta(hours=13), day + timedelta(hours=16))
            if e.type == "ticket_replied"
        )
        return values[int(0.9 * len(values))]

    slow = p90_response(incident(Scenario.support_backlog, until=18))
    assert slow > 3 * p90_response(incident(None))


def test_rate_sizes_the_shop() -> None:
    config = SimConfig(seed=2)
    per_visit = events_per_visit(config)
    assert 3 < per_visit < 8
    visits = visits_for_rate(config, events_per_second=100, speed=1)
    assert visits * per_visit / 86400 == pytest.approx(100)
    assert visits_for_rate(config, 100, speed=60) == pytest.approx(visits / 60)


def test_checkout_collapse_hits_payments_made_during_it_even_of_earlier_sessions() -> None:
    """The page the demo shows waits for 10 minutes of conversion under 1 %: the gateway must
    fail every payment made in the incident, not only those of sessions begun in it."""
    sim = incident(Scenario.checkout_collapse)
    day = MONDAY + timedelta(days=1)

    def orders(minutes: tuple[int, int]) -> int:
        span = [day + timedelta(hours=12, minutes=m) for m in minutes]
        return counts(events_between(sim, *span))["order_completed"]

    # Right after the 2-minute ramp, when earlier sessions still reach checkout.
    assert orders((2, 12)) < 0.2 * orders((-12, -2))


def test_growth_scales_every_rate_around_its_anchor() -> None:
    anchor = MONDAY + timedelta(days=28)
    profile = Profile(visits_per_day=2000, growth_per_week=0.05)
    sim = Simulator(SimConfig(seed=3, profile=profile, growth_anchor=anchor))
    assert sim.visits_per_day(anchor) == pytest.approx(2000)
    four_weeks_before = anchor - timedelta(weeks=4)
    assert sim.trend(four_weeks_before) == pytest.approx(1.05**-4)
    assert sim.visits_per_day(anchor + timedelta(weeks=1)) == pytest.approx(2100)
    # Without an anchor (or without growth) the shop keeps its size.
    assert Simulator(SimConfig(profile=profile)).trend(four_weeks_before) == 1.0

    def day_counts(start: datetime) -> Counter[str]:
        return counts(events_between(sim, start, start + timedelta(days=1)))

    early, late = day_counts(four_weeks_before), day_counts(anchor)
    for kind in ("session_started", "page_viewed"):
        assert late[kind] / early[kind] == pytest.approx(1.05**4, rel=0.08), kind


def test_ad_spend_reports_as_often_as_asked_for_the_same_spend() -> None:
    def spend(every: int) -> tuple[int, float]:
        profile = Profile(visits_per_day=1_000, ad_spend_every=every)
        sim = Simulator(SimConfig(seed=4, profile=profile))
        two_days = events_between(sim, MONDAY, MONDAY + timedelta(days=2))
        events = [e for e in two_days if e.type == "ad_spend"]
        return len(events), sum(e.body["properties"]["amount"] for e in events)

    (quarterly, quarter_spend), (hourly, hour_spend) = spend(15), spend(60)
    assert quarterly == 4 * hourly == 2 * 24 * 4 * 5  # five campaigns
    assert hour_spend == pytest.approx(quarter_spend, rel=0.05)


def test_rhythm_is_the_hourly_table_interpolated_in_the_business_time_zone() -> None:
    """The per-minute cache gives what the table says, for any second within the minute."""
    sim = Simulator(SimConfig(timezone="Asia/Shanghai"))  # UTC+8
    saturday_noon_local = datetime(2026, 11, 7, 4, 30, 42, tzinfo=UTC)  # 12:30:42 in Shanghai
    expected = (_HOURLY[12] + _HOURLY[13]) / 2 / _HOURLY_MEAN * 0.85
    assert sim.rhythm(saturday_noon_local) == pytest.approx(expected)
    assert sim.rhythm(saturday_noon_local.replace(second=0)) == sim.rhythm(saturday_noon_local)
    monday_3am = datetime(2026, 11, 8, 19, 0, tzinfo=UTC)  # Monday 03:00 in Shanghai
    assert sim.rhythm(monday_3am) == pytest.approx(_HOURLY[3] / _HOURLY_MEAN)
