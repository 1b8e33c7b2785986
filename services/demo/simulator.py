"""A deterministic simulator of the products that feed Pacekeeper.

Five sources — a web shop, a mobile app, a support desk, a content/social account and an
ad platform — produce the events an operations team measures: sessions and page views with
a daily rhythm, signups, carts and orders with revenue and channel, ad spend, support
tickets with response and resolution times, CSAT and NPS answers, content and followers.
Incidents (`Scenario`) bend that picture the way real ones do.

Pure and deterministic: everything an event depends on is drawn from a random stream seeded
by `(seed, stream, minute)`, so the events of a minute are the same whichever way a run is
cut into chunks, and the same seed always gives the same events. No I/O happens here; the
sender ships what `EventStream` releases.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

SOURCES = ("web-shop", "mobile-app", "support-desk", "content", "ads")
MINUTE = 60.0
WEEK_SECONDS = 7 * 86400.0


class Scenario(StrEnum):
    checkout_collapse = "checkout-collapse"
    traffic_drop = "traffic-drop"
    csat_slide = "csat-slide"
    support_backlog = "support-backlog"


# How long each incident takes to reach full strength: a payment gateway fails at once,
# satisfaction erodes over hours.
_RAMP = {
    Scenario.checkout_collapse: timedelta(minutes=2),
    Scenario.traffic_drop: timedelta(minutes=5),
    Scenario.csat_slide: timedelta(minutes=90),
    Scenario.support_backlog: timedelta(minutes=60),
}


@dataclass(frozen=True, slots=True)
class Incident:
    """One scenario between `start` and `end` (open-ended when `end` is None)."""

    scenario: Scenario
    start: datetime
    end: datetime | None = None

    def strength(self, t: datetime) -> float:
        """0 outside the incident, ramping up to 1 over the scenario's ramp time."""
        if t < self.start or (self.end is not None and t >= self.end):
            return 0.0
        ramp = _RAMP[self.scenario].total_seconds()
        return min(1.0, (t - self.start).total_seconds() / ramp) if ramp else 1.0


# Share of the day's traffic per local hour, from a typical European web shop: a night
# trough, a lunch bump and an evening peak. No hour falls by more than a third on the
# next, so a "-50% vs an hour ago" rule does not fire on the rhythm alone.
_HOURLY = (
    0.65, 0.45, 0.32, 0.25, 0.22, 0.25, 0.38, 0.60, 0.85, 1.00, 1.10, 1.20,
    1.30, 1.25, 1.18, 1.12, 1.12, 1.20, 1.32, 1.45, 1.55, 1.45, 1.20, 0.90,
)  # fmt: skip
_HOURLY_MEAN = sum(_HOURLY) / len(_HOURLY)
# Support desks staff office hours; tickets follow people's working day.
_SUPPORT_HOURLY = (
    0.20, 0.15, 0.10, 0.10, 0.10, 0.15, 0.40, 0.90, 1.60, 1.90, 1.90, 1.80,
    1.50, 1.70, 1.80, 1.70, 1.50, 1.30, 1.00, 0.80, 0.70, 0.60, 0.45, 0.30,
)  # fmt: skip
_SUPPORT_MEAN = sum(_SUPPORT_HOURLY) / len(_SUPPORT_HOURLY)

WEB_CHANNELS = (
    ("seo", 0.32),
    ("direct", 0.20),
    ("search", 0.18),
    ("social", 0.12),
    ("email", 0.08),
    ("display", 0.05),
    ("referral", 0.05),
)
APP_CHANNELS = (("app", 0.72), ("push", 0.18), ("email", 0.10))
CAMPAIGNS = {
    "search": ("brand", "generic"),
    "social": ("winter-sale", "retargeting"),
    "display": ("awareness",),
    "email": ("newsletter",),
    "push": ("weekly-picks",),
}
# Daily ad budget per paid channel, in dollars per visit of the whole shop. A channel's
# revenue per shop visit is its visit share x conversion x order value (search: 0.18 x
# 0.032 x $54 = $0.31), so these make search pay back well (ROI ≈ +150%), social
# moderately (≈ +70%) and display barely (≈ +15%).
AD_BUDGET_PER_VISIT = {"search": 0.124, "social": 0.12, "display": 0.075}
PAGES = ("/", "/category/shoes", "/category/jackets", "/product", "/search", "/cart", "/help")
SCREENS = ("home", "feed", "product", "search", "cart", "profile")
CONTENT_CHANNELS = (("blog", "article"), ("youtube", "video"), ("instagram", "post"))
FOLLOWER_PLATFORMS = {"instagram": 48_000.0, "youtube": 21_000.0, "linkedin": 9_500.0}


@dataclass(frozen=True, slots=True)
class Profile:
    """The size and habits of the simulated business. Ranges are (low, high): each day
    draws its own value inside, so a long run averages inside the range too."""

    visits_per_day: float = 45_000.0
    app_share: float = 0.35
    returning_share: float = 0.35
    signup_rate: tuple[float, float] = (0.05, 0.07)  # of new visitors
    conversion: tuple[float, float] = (0.028, 0.036)  # orders per session
    cart_rate: float = 0.12  # sessions that add to cart
    checkout_rate: float = 0.45  # carts that reach checkout
    order_value_median: float = 48.0
    order_value_sigma: float = 0.55
    pages_per_session: float = 4.2
    tickets_per_visit: float = 0.012
    csat_survey_rate: float = 0.45  # resolved tickets whose customer answers the survey
    csat_happy: tuple[float, float] = (0.89, 0.94)  # answers scoring 4 or 5
    first_response_median_s: float = 480.0  # p90 ≈ 25 min with the spread below
    resolution_median_s: float = 3.0 * 3600
    nps_answers_per_visit: float = 0.01  # in-app NPS prompts: ~20 answers an hour by day
    nps_mix: tuple[float, float, float] = (0.50, 0.30, 0.20)  # promoters, passives, detractors
    content_per_week: float = 12.0
    follower_growth_per_day: float = 0.0015
    # Day-N return probability ∝ N^-0.4 (D1 ≈ 35%, D7 ≈ 16%, D30 ≈ 9%), up to 90 days.
    retention_decay: float = 0.4
    retention_days: int = 90
    # Compound traffic growth a week: `visits_per_day` holds at SimConfig.growth_anchor and
    # the shop was that much smaller each week before (0.03: +27% over eight weeks).
    growth_per_week: float = 0.0
    # Each paid campaign reports its spend this often (minutes; a divisor of 60).
    ad_spend_every: int = 15

    def scaled(self, visits_per_day: float) -> Profile:
        return replace(self, visits_per_day=visits_per_day)


@dataclass(frozen=True, slots=True)
class SimConfig:
    seed: int = 42
    profile: Profile = field(default_factory=Profile)
    incidents: tuple[Incident, ...] = ()
    timezone: str = "UTC"
    # Where the profile's size holds when it grows (None: no growth, whatever the profile).
    growth_anchor: datetime | None = None


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One event as a product would send it; `source` picks the API key to send it with."""

    source: str
    time: datetime
    body: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.body["type"])


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def minute_of(t: datetime) -> int:
    return math.floor(t.timestamp() / MINUTE)


def minute_start(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * MINUTE, tz=UTC)


def poisson(rng: random.Random, lam: float) -> int:
    """Poisson draw: Knuth's product method for small means, a rounded normal beyond 30
    (where the two differ by less than the sampling noise of any window we look at)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


T = TypeVar("T")


def _pick(rng: random.Random, weighted: tuple[tuple[T, float], ...]) -> T:
    x = rng.random() * sum(w for _, w in weighted)
    for value, weight in weighted:
        x -= weight
        if x < 0:
            return value
    return weighted[-1][0]


def _interp(table: tuple[float, ...], hour: float) -> float:
    low = int(hour) % 24
    frac = hour - int(hour)
    return table[low] * (1 - frac) + table[(low + 1) % 24] * frac


class Simulator:
    """Generates the events of one minute at a time; see the module docstring."""

    # How far after its generating minute an event may be timestamped (sessions run for a
    # while; a ticket's survey comes after resolution). EventStream looks back this far.
    SESSION_LOOKBACK = 25  # pages within 15 min, then cart, checkout and payment
    SUPPORT_LOOKBACK = 31 * 60  # resolved within a day, surveyed within 6 h of that

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.profile = config.profile
        self.seed = config.seed
        self.zone = ZoneInfo(config.timezone)
        days = range(1, self.profile.retention_days + 1)
        self._ages = tuple(days)
        weights = [d**-self.profile.retention_decay for d in days]
        self._age_cum_weights = tuple(sum(weights[: i + 1]) for i in range(len(weights)))
        self._signups = lru_cache(maxsize=8192)(self._signup_count)
        self._day_values = lru_cache(maxsize=512)(self._draw_day_values)
        # Rhythm and day depend on the local minute alone: computed once a minute instead of
        # for every event (at a small shop's few events a minute, a fifth of the cost).
        self._clock = lru_cache(maxsize=4096)(self._local_clock)

    # -- the shape of time ------------------------------------------------------------------

    def _local(self, t: datetime) -> datetime:
        return t.astimezone(self.zone)

    def _local_clock(self, minute: int) -> tuple[float, float, int]:
        """(traffic rhythm, support rhythm, local day ordinal) of an epoch minute."""
        local = self._local(minute_start(minute))
        hour = local.hour + local.minute / 60
        weekend = local.weekday() >= 5
        return (
            _interp(_HOURLY, hour) / _HOURLY_MEAN * (0.85 if weekend else 1.0),
            _interp(_SUPPORT_HOURLY, hour) / _SUPPORT_MEAN * (0.6 if weekend else 1.0),
            local.date().toordinal(),
        )

    def rhythm(self, t: datetime) -> float:
        return self._clock(minute_of(t))[0]

    def support_rhythm(self, t: datetime) -> float:
        return self._clock(minute_of(t))[1]

    def trend(self, t: datetime) -> float:
        """The growth trend: 1 at the anchor, (1 + growth)^weeks around it."""
        anchor = self.config.growth_anchor
        if anchor is None or not self.profile.growth_per_week:
            return 1.0
        weeks = (t - anchor).total_seconds() / WEEK_SECONDS
        return math.pow(1 + self.profile.growth_per_week, weeks)

    def visits_per_day(self, t: datetime) -> float:
        """The shop's size at `t`: what every rate of visits, tickets and spend scales with."""
        return self.profile.visits_per_day * self.trend(t)

    def strength(self, scenario: Scenario, t: datetime) -> float:
        return max(
            (i.strength(t) for i in self.config.incidents if i.scenario is scenario), default=0.0
        )

    def _draw_day_values(self, day_ordinal: int) -> tuple[float, float, float, float]:
        """This day's conversion, signup rate, CSAT and NPS drift, each inside its range."""
        rng = random.Random(f"{self.seed}:day:{day_ordinal}")
        p = self.profile
        return (
            rng.uniform(*p.conversion),
            rng.uniform(*p.signup_rate),
            rng.uniform(*p.csat_happy),
            rng.uniform(-0.04, 0.04),
        )

    def day_values(self, t: datetime) -> tuple[float, float, float, float]:
        return self._day_values(self._clock(minute_of(t))[2])

    def web_traffic_factor(self, t: datetime) -> float:
        # A broken tag manager or a search-ranking loss takes away about two thirds of web.
        return 1.0 - 0.65 * self.strength(Scenario.traffic_drop, t)

    def new_visits_per_minute(self, t: datetime, *, app: bool) -> float:
        p = self.profile
        share = p.app_share if app else (1 - p.app_share) * self.web_traffic_factor(t)
        return self.visits_per_day(t) / 1440 * (1 - p.returning_share) * share * self.rhythm(t)

    # -- signed-up users, addressable without state ----------------------------------------

    def _signup_count(self, hour: int) -> int:
        """How many new visitors sign up in an epoch hour, from a stream of its own.

        Users are addressed as (hour, index), so a visit days later can name one of them (a
        returning visit) by drawing a count and an index: no list of users is ever built,
        whatever the size of the shop."""
        rng = random.Random(f"{self.seed}:signups:{hour}")
        t = datetime.fromtimestamp(hour * 3600 + 1800, tz=UTC)
        rate = self.day_values(t)[1]
        lam = sum(self.new_visits_per_minute(t, app=app) for app in (False, True)) * 60 * rate
        return poisson(rng, lam)

    def _signup_platform(self, hour: int, index: int) -> str:
        """Where user (hour, index) signed up: app or web, in proportion to new visits."""
        t = datetime.fromtimestamp(hour * 3600 + 1800, tz=UTC)
        app = self.new_visits_per_minute(t, app=True)
        web = self.new_visits_per_minute(t, app=False)
        draw = random.Random(f"{self.seed}:user:{hour}:{index}").random()
        return "app" if draw * (app + web) < app else "web"

    def user_id(self, hour: int, index: int) -> str:
        return f"u{self.seed}-{hour}-{index}"

    def _returning_user(self, rng: random.Random, t: datetime) -> tuple[str, str] | None:
        """A user who signed up N days ago, N drawn by the retention curve; None if the
        draws keep landing on empty hours (then the visit counts as a new visitor)."""
        now_hour = math.floor(t.timestamp() / 3600)
        for _ in range(6):
            age = rng.choices(self._ages, cum_weights=self._age_cum_weights)[0]
            hour = now_hour - age * 24 + rng.randrange(-12, 12)
            count = self._signups(hour)
            if count:
                index = rng.randrange(count)
                return self.user_id(hour, index), self._signup_platform(hour, index)
        return None

    # -- one minute of events ---------------------------------------------------------------

    def minute(self, minute: int) -> list[SimEvent]:
        """Every event generated in this minute (timestamped at or after its start)."""
        return [
            *self.session_events(minute),
            *self.support_events(minute),
            *self.periodic_events(minute),
        ]

    def session_events(self, minute: int) -> list[SimEvent]:
        t0 = minute_start(minute)
        rng = random.Random(f"{self.seed}:sessions:{minute}")
        out = _Emitter(f"{self.seed}-s{minute}")
        p = self.profile
        hour, in_hour = divmod(minute, 60)
        # The hour's signups in index order, spread evenly over its minutes: this minute's
        # share are new visitors who sign up on this visit.
        count = self._signups(hour)
        for index in range(math.ceil(in_hour * count / 60), math.ceil((in_hour + 1) * count / 60)):
            app = self._signup_platform(hour, index) == "app"
            self._session(
                rng, out, t0 + timedelta(seconds=rng.random() * MINUTE), app=app,
                channel=_pick(rng, APP_CHANNELS if app else WEB_CHANNELS), user=None,
                signup_user=self.user_id(hour, index),
            )  # fmt: skip
        rate = self.day_values(t0)[1]
        for app in (False, True):
            for _ in range(poisson(rng, self.new_visits_per_minute(t0, app=app) * (1 - rate))):
                start = t0 + timedelta(seconds=rng.random() * MINUTE)
                channel = _pick(rng, APP_CHANNELS if app else WEB_CHANNELS)
                self._session(rng, out, start, app=app, channel=channel, user=None)
        returning = self.visits_per_day(t0) / 1440 * p.returning_share * self.rhythm(t0)
        for _ in range(poisson(rng, returning)):
            start = t0 + timedelta(seconds=rng.random() * MINUTE)
            found = self._returning_user(rng, start)
            app = found[1] == "app" if found else rng.random() < p.app_share
            if not app and rng.random() > self.web_traffic_factor(start):
                continue  # the same outage hides returning web visitors
            channel = _pick(rng, APP_CHANNELS if app else WEB_CHANNELS)
            user = found[0] if found else None
            self._session(rng, out, start, app=app, channel=channel, user=user)
        return out.events

    def _session(
        self,
        rng: random.Random,
        out: _Emitter,
        start: datetime,
        *,
        app: bool,
        channel: str,
        user: str | None,
        signup_user: str | None = None,
    ) -> None:
        p = self.profile
        source = "mobile-app" if app else "web-shop"
        anonymous = None if user else f"a{out.prefix}-{out.count}"
        campaign = rng.choice(CAMPAIGNS[channel]) if channel in CAMPAIGNS else None
        props: dict[str, Any] = {"channel": channel, "platform": _platform(rng, app)}
        if campaign:
            props["campaign"] = campaign
        t = start
        out.add(source, "session_started", t, user, anonymous, props)
        pages = 1 + min(40, int(rng.expovariate(1 / (p.pages_per_session - 1))))
        signup_at = rng.randrange(pages) if signup_user else -1
        last_page = start + SESSION_PAGES_MAX
        for i in range(pages):
            t = min(last_page, t + timedelta(seconds=rng.expovariate(1 / 35)))
            where = {"screen": rng.choice(SCREENS)} if app else {"path": rng.choice(PAGES)}
            out.add(source, "page_viewed", t, user, anonymous, {**where, "channel": channel})
            if i == signup_at and signup_user:
                user = signup_user
                t += timedelta(seconds=rng.uniform(20, 90))
                signup = {"channel": channel, "plan": "free"}
                out.add(source, "signed_up", t, user, anonymous, signup)
        conversion = self.day_values(start)[0]
        if rng.random() >= p.cart_rate:
            return
        price = round(rng.lognormvariate(math.log(p.order_value_median * 0.7), 0.5), 2)
        t += timedelta(seconds=rng.uniform(10, 120))
        out.add(source, "cart_added", t, user, anonymous, {"price": price, "channel": channel})
        if rng.random() >= p.checkout_rate:
            return
        t += timedelta(seconds=rng.uniform(20, 180))
        out.add(source, "checkout_started", t, user, anonymous, {"channel": channel})
        paid = conversion / (p.cart_rate * p.checkout_rate)
        draw = rng.random()
        if draw >= paid:
            return
        t += timedelta(seconds=rng.uniform(15, 120))
        # The payment gateway times out for nine payments in ten during a checkout collapse,
        # judged when the payment is made: a session begun before the incident pays into it.
        if rng.random() < 0.92 * self.strength(Scenario.checkout_collapse, t):
            out.add(
                source, "payment_failed", t, user, anonymous,
                {"reason": "gateway_timeout", "channel": channel},
            )  # fmt: skip
            return
        revenue = round(rng.lognormvariate(math.log(p.order_value_median), p.order_value_sigma), 2)
        order: dict[str, Any] = {
            "order_id": f"o{out.prefix}-{out.count}",
            "revenue": revenue,
            "currency": "USD",
            "items": 1 + min(9, int(rng.expovariate(0.8))),
            "channel": channel,
            # New visitors buy for the first time; about a third of returning buyers do too.
            "first_order": user is None or user == signup_user or rng.random() < 0.35,
        }
        if campaign:
            order["campaign"] = campaign
        out.add(source, "order_completed", t, user, anonymous, order)

    def support_events(self, minute: int) -> list[SimEvent]:
        t0 = minute_start(minute)
        rng = random.Random(f"{self.seed}:support:{minute}")
        out = _Emitter(f"{self.seed}-t{minute}")
        p = self.profile
        backlog = self.strength(Scenario.support_backlog, t0)
        lam = self.visits_per_day(t0) * p.tickets_per_visit / 1440 * self.support_rhythm(t0)
        for _ in range(poisson(rng, lam * (1 + 1.5 * backlog))):
            created = t0 + timedelta(seconds=rng.random() * MINUTE)
            found = self._returning_user(rng, created)
            user = found[0] if found else None
            anonymous = None if user else f"a{out.prefix}-{out.count}"
            ticket = f"T{out.prefix}-{out.count}"
            channel = _pick(rng, (("email", 0.5), ("chat", 0.35), ("phone", 0.15)))
            priority = _pick(rng, (("normal", 0.75), ("high", 0.2), ("urgent", 0.05)))
            base = {"ticket_id": ticket, "channel": channel, "priority": priority}
            out.add("support-desk", "ticket_created", created, user, anonymous, base)
            # Queues grow when agents are swamped: first replies up to 10x slower.
            response = rng.lognormvariate(math.log(p.first_response_median_s), 0.9)
            response = min(response * (1 + 9 * backlog), 2 * 86400.0)
            replied = created + timedelta(seconds=response)
            out.add(
                "support-desk", "ticket_replied", replied, user, anonymous,
                {**base, "response_seconds": round(response, 1), "first_response": True},
            )  # fmt: skip
            resolution = response + rng.lognormvariate(math.log(p.resolution_median_s), 1.0)
            resolution = min(resolution, 86400.0)
            resolved = created + timedelta(seconds=resolution)
            out.add(
                "support-desk", "ticket_resolved", resolved, user, anonymous,
                {**base, "resolution_seconds": round(resolution, 1)},
            )  # fmt: skip
            if rng.random() < p.csat_survey_rate:
                # Capped at 6 h so every event lands within SUPPORT_LOOKBACK of its ticket.
                delay = min(rng.expovariate(1 / 1800), 6 * 3600.0)
                answered = resolved + timedelta(seconds=delay)
                score = self._csat_score(rng, answered, backlog)
                out.add(
                    "support-desk", "survey_answered", answered, user, anonymous,
                    {"survey": "csat", "score": score, "ticket_id": ticket, "channel": channel},
                )  # fmt: skip
        return out.events

    def _csat_score(self, rng: random.Random, t: datetime, backlog: float) -> int:
        happy = self.day_values(t)[2]
        slide = self.strength(Scenario.csat_slide, t)
        happy -= (happy - 0.55) * slide  # a bad release: down to 55% happy
        happy *= 1 - 0.25 * backlog  # slow answers make unhappy customers
        if rng.random() < happy:
            return 5 if rng.random() < 0.6 else 4
        return _pick(rng, ((3, 0.5), (2, 0.3), (1, 0.2)))

    def periodic_events(self, minute: int) -> list[SimEvent]:
        """NPS answers, content, follower counts and ad spend."""
        t0 = minute_start(minute)
        rng = random.Random(f"{self.seed}:periodic:{minute}")
        out = _Emitter(f"{self.seed}-p{minute}")
        p = self.profile
        drift = self.day_values(t0)[3]
        nps_lam = self.visits_per_day(t0) * p.nps_answers_per_visit / 1440 * self.rhythm(t0)
        for _ in range(poisson(rng, nps_lam)):
            t = t0 + timedelta(seconds=rng.random() * MINUTE)
            found = self._returning_user(rng, t)
            promoters, passives, _ = p.nps_mix
            x = rng.random()
            if x < promoters + drift:
                score = rng.choice((9, 10))
            elif x < promoters + drift + passives:
                score = rng.choice((7, 8))
            else:
                score = rng.randrange(0, 7)
            source = "mobile-app" if found and found[1] == "app" else "web-shop"
            user = found[0] if found else None
            anonymous = None if found else f"a{out.prefix}-{out.count}"
            out.add(
                source, "survey_answered", t, user, anonymous, {"survey": "nps", "score": score}
            )
        # Content goes out in office hours, Monday to Friday.
        content_lam = p.content_per_week / 5 / 1440 * self.support_rhythm(t0)
        for _ in range(poisson(rng, content_lam)):
            channel, kind = rng.choice(CONTENT_CHANNELS)
            out.add(
                "content", "content_published", t0 + timedelta(seconds=rng.random() * MINUTE),
                None, None, {"channel": channel, "kind": kind, "title": f"{kind} #{out.count}"},
            )  # fmt: skip
        if minute % 60 == 0:
            for platform in FOLLOWER_PLATFORMS:
                now, before = self.followers(platform, t0), self.followers(platform, t0 - HOUR)
                out.add(
                    "content", "followers_counted", t0, None, None,
                    {"platform": platform, "followers": now, "gained": now - before},
                )  # fmt: skip
        if minute % p.ad_spend_every == 0:
            for channel, per_visit in AD_BUDGET_PER_VISIT.items():
                for campaign in CAMPAIGNS[channel]:
                    share = per_visit / len(CAMPAIGNS[channel])
                    reports_a_day = 1440 / p.ad_spend_every
                    amount = self.visits_per_day(t0) * share / reports_a_day * self.rhythm(t0)
                    amount *= rng.lognormvariate(0, 0.15)
                    cpc = {"search": 0.9, "social": 0.55, "display": 0.3}[channel]
                    clicks = round(amount / cpc)
                    out.add(
                        "ads", "ad_spend", t0, None, None,
                        {
                            "channel": channel, "campaign": campaign, "amount": round(amount, 2),
                            "currency": "USD", "clicks": clicks,
                            "impressions": round(clicks / rng.uniform(0.01, 0.03)),
                        },
                    )  # fmt: skip
        return out.events

    def followers(self, platform: str, t: datetime) -> int:
        """A gauge that grows steadily with a slow wobble: a pure function of time."""
        days = t.timestamp() / 86400 - 20_454  # days since 2026-01-01, a fixed origin
        base = FOLLOWER_PLATFORMS[platform]
        wobble = 1 + 0.002 * math.sin(days * 2 * math.pi / 7)
        growth = math.pow(1 + self.profile.follower_growth_per_day, days)
        return round(base * growth * wobble)


HOUR = timedelta(hours=1)
# Bounded so a stream only looks back minutes for sessions still under way.
SESSION_PAGES_MAX = timedelta(minutes=15)


def _platform(rng: random.Random, app: bool) -> str:
    if app:
        return "ios" if rng.random() < 0.55 else "android"
    return "mobile-web" if rng.random() < 0.6 else "desktop"


class _Emitter:
    """Builds event bodies with ids unique per (seed, stream, minute, position)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.count = 0
        self.events: list[SimEvent] = []

    def add(
        self,
        source: str,
        type_: str,
        t: datetime,
        user: str | None,
        anonymous: str | None,
        properties: dict[str, Any],
    ) -> None:
        body: dict[str, Any] = {"id": f"{self.prefix}-{self.count}", "type": type_, "time": iso(t)}
        if user:
            body["user_id"] = user
        if anonymous:
            body["anonymous_id"] = anonymous
        body["properties"] = properties
        self.events.append(SimEvent(source, t, body))
        self.count += 1


class EventStream:
    """Releases the simulator's events in time order as a clock moves forward.

    Everything with a time in [start, t) comes out of `until(t)`, exactly once, however
    the calls are spaced; events generated earlier but timestamped later wait in a heap.
    """

    def __init__(self, simulator: Simulator, start: datetime, *, warmup: bool = True) -> None:
        self.sim = simulator
        self.position = start
        self._heap: list[tuple[float, str, SimEvent]] = []
        first = minute_of(start)
        # Sessions and tickets that began before `start` still have events after it. Without
        # the warm-up (a load generator at thousands of events a second, where it would
        # take minutes) the stream starts as if the business had just opened.
        if warmup:
            for minute in range(first - Simulator.SUPPORT_LOOKBACK, first):
                self._push(simulator.support_events(minute), start)
            for minute in range(first - Simulator.SESSION_LOOKBACK, first):
                self._push(simulator.session_events(minute), start)
        self._next_minute = first

    def _push(self, events: Iterable[SimEvent], not_before: datetime) -> None:
        for event in events:
            if event.time >= not_before:
                heapq.heappush(self._heap, (event.time.timestamp(), event.body["id"], event))

    def until(self, t: datetime) -> list[SimEvent]:
        if t <= self.position:
            return []
        while minute_start(self._next_minute) < t:
            self._push(self.sim.minute(self._next_minute), self.position)
            self._next_minute += 1
        out: list[SimEvent] = []
        limit = t.timestamp()
        while self._heap and self._heap[0][0] < limit:
            out.append(heapq.heappop(self._heap)[2])
        self.position = t
        return out

    @property
    def pending(self) -> int:
        return len(self._heap)


def events_between(simulator: Simulator, start: datetime, end: datetime) -> Iterator[SimEvent]:
    """All events with a time in [start, end), in time order, a minute at a time."""
    stream = EventStream(simulator, start)
    t = start
    while t < end:
        t = min(end, t + timedelta(minutes=1))
        yield from stream.until(t)


def events_per_visit(config: SimConfig) -> float:
    """Measured, not guessed: events per visit over a simulated day of this profile."""
    small = replace(config, profile=config.profile.scaled(4000.0), incidents=())
    sim = Simulator(small)
    start = datetime(2026, 11, 2, tzinfo=UTC)  # an ordinary Monday
    count = sum(1 for _ in events_between(sim, start, start + timedelta(days=1)))
    return count / small.profile.visits_per_day


def visits_for_rate(config: SimConfig, events_per_second: float, speed: float) -> float:
    """The shop size (visits per day) whose events, at `speed`, average `events_per_second`."""
    per_sim_second = events_per_second / max(speed, 1e-9)
    return per_sim_second * 86400 / events_per_visit(config)
