"""Hypothesis strategies: event streams (with duplicates, in any order) and questions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from services.aggregator.kpimath import Step
from services.aggregator.records import Event, make_event
from tests.aggregator.oracle import BASE, DIM_CHOICES, SPECS, Raw

SPAN = timedelta(days=3)
ZONES = [ZoneInfo("UTC"), ZoneInfo("Asia/Shanghai"), ZoneInfo("Asia/Kolkata")]
STEPS = [
    Step(micros=60_000_000),
    Step(micros=15 * 60_000_000),
    Step(micros=3_600_000_000),
    Step(micros=7 * 3_600_000_000),
    Step(days=1),
    Step(days=7),
    Step(months=1),
]

revenue = st.one_of(
    st.integers(0, 200),
    st.integers(-20, 400).map(lambda k: k / 2),  # halves add up exactly in binary floats
    st.integers(1, 99).map(lambda k: f"{k}.5"),  # numbers sent as strings still count
    st.just("n/a"),  # not a number: ignored by value KPIs
)


@st.composite
def raw_event(draw: st.DrawFn, index: int) -> Raw:
    kind = draw(st.sampled_from(["order", "order", "view", "view", "signup", "survey", "other"]))
    props: dict[str, Any] = {}
    if draw(st.booleans()):
        props["channel"] = draw(st.sampled_from(["seo", "ads", "mail"]))
    if kind == "order" and draw(st.integers(0, 5)) > 0:
        props["revenue"] = draw(revenue)
    if kind == "survey":
        props["score"] = draw(st.integers(0, 5))
    # Millisecond times over three days, with clusters so that windows and funnels bite.
    offset_ms = draw(
        st.one_of(st.integers(0, int(SPAN.total_seconds() * 1000)), st.integers(0, 600_000))
    )
    user = draw(st.one_of(st.none(), st.sampled_from([f"u{i}" for i in range(6)])))
    anonymous = draw(st.one_of(st.none(), st.sampled_from(["a0", "a1", "a2"])))
    return Raw(
        source=draw(st.sampled_from(["web", "app"])),
        id=f"e{index}",
        type=kind,
        time=BASE + timedelta(milliseconds=offset_ms),
        user_id=user,
        anonymous_id=anonymous,
        properties=props,
    )


@st.composite
def streams(draw: st.DrawFn, max_events: int = 60) -> tuple[list[Raw], list[Raw]]:
    """(the distinct events, the stream as delivered: shuffled, some sent more than once)."""
    n = draw(st.integers(0, max_events))
    events = [draw(raw_event(i)) for i in range(n)]
    delivered = list(events)
    if events:
        delivered += draw(st.lists(st.sampled_from(events), max_size=n // 2 + 1))
    delivered = draw(st.permutations(delivered))
    return events, delivered


@st.composite
def windows(draw: st.DrawFn) -> tuple[datetime, datetime]:
    start = BASE + timedelta(seconds=draw(st.integers(-3600, int(SPAN.total_seconds()))))
    if draw(st.booleans()):
        start = start.replace(second=0)  # minute-aligned, as dashboards ask
    length = timedelta(seconds=draw(st.integers(0, int(SPAN.total_seconds()))))
    return start, start + length


@st.composite
def questions(draw: st.DrawFn) -> tuple[str, dict[str, str] | None]:
    name = draw(st.sampled_from(sorted(SPECS)))
    dims = draw(st.sampled_from(DIM_CHOICES.get(name, [None])))
    return name, dims


def to_event(raw: Raw) -> Event:
    return make_event(
        source=raw.source,
        id=raw.id,
        type=raw.type,
        time=raw.time,
        received_at=raw.time,
        user_id=raw.user_id,
        anonymous_id=raw.anonymous_id,
        properties=raw.properties,
    )
