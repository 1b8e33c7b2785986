"""The aligned past windows of anomaly rules and the cache of their final values: the
windows stay put from tick to tick and move by one step, staggered; a cached value is
only ever a final window's, and a changed definition reads afresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.alerts.evaluation import anomaly
from services.alerts.evaluation.anomaly import MISS, FinalValues
from services.alerts.evaluation.rules import instances
from shared.config.alerting import RuleSpec

pytestmark = pytest.mark.unit

ZONE = ZoneInfo("Europe/Berlin")
MINUTE = timedelta(minutes=1)
# Hypothesis takes naive bounds and attaches the zone itself.
moments = st.datetimes(
    min_value=datetime(2026, 1, 1),  # noqa: DTZ001
    max_value=datetime(2028, 12, 31),  # noqa: DTZ001
    timezones=st.just(UTC),
)
lengths = st.integers(min_value=1, max_value=7 * 24 * 60).map(lambda m: m * MINUTE)
keys = st.text(min_size=1, max_size=20)


@given(moments, lengths, keys)
def test_the_aligned_end_lags_by_less_than_a_step_on_a_whole_minute(
    t_to: datetime, length: timedelta, key: str
) -> None:
    step = anomaly.baseline_step(length)
    assert MINUTE <= step <= anomaly.BASELINE_STEP
    assert step <= max(MINUTE, length / 2)
    offset = anomaly.phase(key, step)
    assert timedelta(0) <= offset < step
    end = anomaly.aligned_end(t_to, step, offset)
    assert t_to - step < end <= t_to
    assert end.second == end.microsecond == 0
    # Constant until the next step, then exactly one step later.
    assert anomaly.aligned_end(end + step - timedelta(microseconds=1), step, offset) == end
    assert anomaly.aligned_end(end + step, step, offset) == end + step


@given(moments, lengths, keys, st.integers(min_value=1, max_value=12))
def test_baseline_anchors_keep_the_length_weekday_and_time_of_the_aligned_window(
    t_to: datetime, length: timedelta, key: str, weeks: int
) -> None:
    past = anomaly.past_windows(*anomaly.baseline_anchor(t_to - length, t_to, key), weeks, ZONE)
    assert len(past) == weeks
    step = anomaly.baseline_step(length)
    end = anomaly.aligned_end(t_to, step, anomaly.phase(key, step))
    assert past == anomaly.past_windows(end - length, end, weeks, ZONE)
    assert all(b - a == length for a, b in past)
    # Period-to-date windows are not aligned: their length grows with the end.
    assert anomaly.baseline_anchor(t_to - length, t_to, key, align=False) == (t_to - length, t_to)


def test_consecutive_ticks_read_the_same_past_windows_and_groups_move_apart() -> None:
    rule = RuleSpec.model_validate(
        {"name": "r", "kind": "anomaly", "kpi": "orders", "window": "1h", "group_by": ["source"]}
    )
    groups = [{"source": f"s{i}"} for i in range(200)]
    at = datetime(2027, 3, 9, 11, 0, 10, tzinfo=UTC)

    def baselines(when: datetime) -> list[tuple[object, ...]]:
        return [i.complete.baseline for i in instances(rule, when, ZONE, groups)]

    first = baselines(at)
    # Two ticks 30 s apart: most groups read what they read before.
    second = baselines(at + timedelta(seconds=30))
    moved = sum(a != b for a, b in zip(first, second, strict=True))
    assert moved < len(groups) / 3
    # Over a whole step every group moved once, and not all in the same minute.
    minutes = [baselines(at + n * MINUTE) for n in range(6)]
    moves = [sum(a != b for a, b in zip(minutes[n], minutes[n + 1], strict=True)) for n in range(5)]
    assert all(0 < m < len(groups) for m in moves)
    assert all(a != b for a, b in zip(minutes[0], minutes[5], strict=True))


def test_only_windows_past_the_allowed_lateness_and_the_margin_are_final() -> None:
    mark = datetime(2027, 3, 9, 11, 0, tzinfo=UTC)
    lateness = timedelta(days=7)
    assert anomaly.final_before(None, lateness) is None
    final = anomaly.final_before(mark, lateness)
    assert final == mark - lateness - anomaly.FINAL_MARGIN
    rule = RuleSpec.model_validate({"name": "r", "kind": "anomaly", "kpi": "orders"})
    (inst,) = instances(rule, mark, ZONE)
    # Week 1 ended within the lateness of the watermark: never final, read every tick.
    assert [q.t_to <= final for q in inst.complete.baseline] == [False] + [True] * 7
    assert inst.complete.current.t_to > final


def test_the_cache_is_a_bounded_lru_that_keeps_none() -> None:
    cache = FinalValues(2)
    assert cache.get("a") is MISS
    cache.put("a", None)
    cache.put("b", 2.0)
    assert cache.get("a") is None  # NULL is an answer, and "a" is now the newest
    cache.put("c", 3.0)
    assert cache.get("b") is MISS
    assert (cache.get("a"), cache.get("c"), len(cache)) == (None, 3.0, 2)
    assert (cache.hits, cache.misses) == (3, 2)
