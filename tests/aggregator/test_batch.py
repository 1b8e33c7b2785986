"""Batch assembly, watermarks, the cardinality fold and changed ranges — pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import orjson
import pytest

from services.aggregator.batch import Policy, assemble
from services.aggregator.catalog import compile_catalog
from services.aggregator.records import US_PER_MINUTE, to_us
from services.aggregator.rollup import fold, rollup
from services.aggregator.updates import changed_ranges
from services.aggregator.watermark import Watermark
from tests.aggregator import oracle
from tests.aggregator.strategies import to_event

pytestmark = pytest.mark.unit
MINUTE = US_PER_MINUTE
POLICY = Policy(watermark_delay_us=MINUTE, allowed_lateness_us=60 * MINUTE)


@dataclass
class Rec:
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


def _value(event_id: str, minutes: float, received: float | None = None) -> bytes:
    t = oracle.BASE + timedelta(minutes=minutes)
    r = oracle.BASE + timedelta(minutes=received if received is not None else minutes)
    return orjson.dumps(
        {"id": event_id, "type": "order", "source": "web", "time": t, "received_at": r},
        option=orjson.OPT_UTC_Z,
    )


def test_assemble_judges_lateness_in_offset_order_and_drops_repeats() -> None:
    records = [
        Rec(0, 10, _value("a", 100)),
        Rec(0, 11, b"not json"),
        Rec(0, 12, _value("b", 98.5)),  # behind the watermark (99): late, applied
        Rec(0, 13, _value("c", 30)),  # 70 min behind: too late, refused
        Rec(1, 5, _value("a", 100)),  # same (source, id) again: dropped
        Rec(0, 14, _value("d", 101)),
    ]
    batch = assemble(records, {}, POLICY)
    assert [e.id for e in batch.events] == ["a", "b", "d"]
    assert batch.late == 1
    assert batch.too_late == 1
    assert batch.duplicates_in_batch == 1
    assert [(r.offset, r.reason.split(":")[0]) for r in batch.rejected] == [
        (11, "not JSON"),
        (13, "too late"),
    ]
    assert batch.next_offsets == {0: 15, 1: 6}
    base = to_us(oracle.BASE)
    assert batch.marks[0].complete_before(MINUTE) == base + 100 * MINUTE


def test_assemble_is_independent_of_batch_boundaries() -> None:
    records = [Rec(0, i, _value(f"e{i}", m)) for i, m in enumerate([5, 80, 10, 79, 200, 150, 141])]
    whole = assemble(records, {}, POLICY)
    first = assemble(records[:3], {}, POLICY)
    second = assemble(records[3:], first.marks, POLICY)
    assert [e.id for e in whole.events] == [e.id for e in first.events + second.events]
    assert whole.too_late == first.too_late + second.too_late == 1


def test_future_stamped_events_cannot_advance_the_watermark_past_the_clock() -> None:
    mark = Watermark().advance(to_event_at(24 * 60), received_us=to_us(oracle.BASE))
    assert mark.complete_before(MINUTE) == to_us(oracle.BASE) - MINUTE


def to_event_at(minutes: float):  # type: ignore[no-untyped-def]
    raw = oracle.Raw("web", "x", "order", oracle.BASE + timedelta(minutes=minutes), None, None, {})
    return to_event(raw)


def test_fold_sends_values_past_the_limit_to_other() -> None:
    catalog = compile_catalog(oracle.SPECS)
    events = [
        to_event(
            oracle.Raw(
                "web", f"e{i}", "order", oracle.BASE, f"u{i}", None, {"channel": ch, "revenue": 1}
            )
        )
        for i, ch in enumerate(["seo", "ads", "mail", "mail"])
    ]
    state = rollup(events, catalog)
    folded, folds = fold(state, lambda kpi, index, value: value != "mail")
    assert folds == {("orders", 1): 2}
    minute = to_us(oracle.BASE) // MINUTE
    assert folded.points[("orders", ("web", "__other__"), minute)].count == 2
    assert folded.points[("orders", ("web", "seo"), minute)].count == 1
    assert fold(state, lambda *_: True)[0] is state


def test_changed_ranges_cover_funnels_retention_and_derived_kpis() -> None:
    catalog = compile_catalog(oracle.SPECS)
    t = oracle.BASE + timedelta(hours=5, seconds=30)
    events = [
        to_event(oracle.Raw("web", "1", "order", t, "u1", None, {"revenue": 3})),
        to_event(oracle.Raw("web", "2", "view", t, "u1", None, {})),
    ]
    ranges = changed_ranges(rollup(events, catalog), catalog)
    start = to_us(oracle.BASE + timedelta(hours=5))
    assert ranges["orders"] == (start, start + MINUTE)
    assert ranges["conversion"] == (start, start + MINUTE)  # derived from orders and visitors
    assert (
        ranges["view_to_order"][0] == start - 60 * MINUTE
    )  # an order converts views up to 1 h back
    assert ranges["d1"][0] <= start - 24 * 60 * MINUTE  # a return on day D touches cohorts of D-1
