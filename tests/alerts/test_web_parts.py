"""The web scorecard's pure parts: the signed session cookie, the shared reading and the
charts."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from services.alerts.api.deps import Role
from services.alerts.evaluation.readings import PathPoint
from services.alerts.settings import AlertsSettings
from services.alerts.web import charts, session
from services.alerts.web.routes import _safe_next
from services.alerts.web.scorecard import Freshness, Scorecard, SnapshotCache
from shared.config.alerting import Period

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0


def settings(admin: str = "admin-token", read: str | None = "read-token") -> AlertsSettings:
    return AlertsSettings(
        admin_token=SecretStr(admin),
        alerts_read_token=SecretStr(read) if read else None,
        alerts_web_session_hours=2,
    )


def test_a_session_proves_its_role_until_it_expires() -> None:
    s = settings()
    cookie = session.issue(s, Role.read, now=NOW)
    found = session.verify(s, cookie, now=NOW + 3600)
    assert found is not None
    assert found.role is Role.read
    assert not found.admin
    assert session.verify(s, cookie, now=NOW + 2 * 3600 + 1) is None
    assert "read-token" not in cookie


def test_a_forged_or_altered_cookie_proves_nothing() -> None:
    s = settings()
    payload, signature = session.issue(s, Role.read, now=NOW).split(".")
    admin_payload = session.issue(s, Role.admin, now=NOW).split(".")[0]
    for cookie in (
        f"{admin_payload}.{signature}",  # a read signature on an admin body
        f"{payload}.{signature[:-2]}AA",
        f"{payload}.",
        payload,
        "",
        None,
        "x" * 600,
    ):
        assert session.verify(s, cookie, now=NOW) is None


def test_rotating_either_token_logs_every_session_out() -> None:
    cookie = session.issue(settings(), Role.admin, now=NOW)
    assert session.verify(settings(), cookie, now=NOW) is not None
    assert session.verify(settings(admin="new-admin"), cookie, now=NOW) is None
    assert session.verify(settings(read="new-read"), cookie, now=NOW) is None
    reader = session.issue(settings(), Role.read, now=NOW)
    assert session.verify(settings(read=None), reader, now=NOW) is None


def test_the_form_token_belongs_to_one_session() -> None:
    s = settings()
    one = session.verify(s, session.issue(s, Role.admin, now=NOW), now=NOW)
    two = session.verify(s, session.issue(s, Role.admin, now=NOW), now=NOW)
    assert one is not None
    assert two is not None
    token = session.csrf_token(s, one)
    assert session.csrf_valid(s, one, token)
    assert not session.csrf_valid(s, two, token)
    assert not session.csrf_valid(s, one, "")
    assert not session.csrf_valid(s, one, None)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/goals/x?y=1", "/goals/x?y=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_after_a_login_only_a_path_of_this_site(target: str | None, expected: str) -> None:
    assert _safe_next(target) == expected


def _card(n: int) -> Scorecard:
    at = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
    return Scorecard(at, at, Period.day, at, Freshness(at, timedelta(0)))


async def test_concurrent_viewers_share_one_reading() -> None:
    cache = SnapshotCache(ttl=60)
    reads = 0

    async def read() -> Scorecard:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)  # a slow database: everyone arrives while it reads
        return _card(reads)

    cards = await asyncio.gather(*(cache.get("day", read) for _ in range(50)))
    assert reads == 1
    assert {c.taken_at for c in cards} == {cards[0].taken_at}
    await cache.get("week", read)
    assert reads == 2  # another key is another reading
    cache.clear()
    await cache.get("day", read)
    assert reads == 3


async def test_a_zero_ttl_reads_every_time() -> None:
    cache = SnapshotCache(ttl=0)
    reads = []

    async def read() -> Scorecard:
        reads.append(1)
        return _card(len(reads))

    for _ in range(3):
        await cache.get("day", read)
    assert len(reads) == 3


def _drawn(svg: str) -> list[list[tuple[float, float]]]:
    (d,) = re.findall(r'class="line" d="([^"]*)"', svg)
    runs = []
    for part in d.split("M")[1:]:
        runs.append([tuple(map(float, p.split(","))) for p in part.replace("L", " ").split()])
    return runs  # type: ignore[return-value]


@given(
    st.lists(st.one_of(st.none(), st.floats(-1e9, 1e9, allow_nan=False)), min_size=2, max_size=60)
)
def test_a_sparkline_draws_every_known_point_inside_its_box_and_breaks_at_gaps(
    values: list[float | None],
) -> None:
    svg = str(charts.sparkline(values, width=140, height=32))
    known = [v for v in values if v is not None]
    if not known:
        assert "<path" not in svg
        return
    runs = _drawn(svg) if 'class="line" d="M' in svg else []
    # Runs of two or more known points are lines; a lone point between gaps is not a line.
    expected_runs = [
        len(r) for r in "".join("x" if v is not None else " " for v in values).split() if r
    ]
    assert [len(r) for r in runs] == [n for n in expected_runs if n > 1]
    for run in runs:
        for x, y in run:
            assert 0 <= x <= 140
            assert 0 <= y <= 32
    # Each point sits at its index's x, and a higher value is never drawn lower.
    step = (140 - 4) / (len(values) - 1)
    drawn = {round((x - 2) / step): y for run in runs for x, y in run}
    for i, y in drawn.items():
        assert values[i] is not None
        for j, other in drawn.items():
            if values[i] > values[j]:  # type: ignore[operator]
                assert y <= other + 0.1


def test_a_pacing_chart_shows_target_path_value_and_projection() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    path = [
        PathPoint(start + timedelta(days=i), float(i) if i <= 3 else None, 10.0 * i)
        for i in range(11)
    ]
    svg = str(charts.pacing_chart(path, target=100, projection=30, label="<goal>"))
    for part in ('class="target"', 'class="expected"', 'class="value"', 'class="projection"'):
        assert part in svg
    assert "&lt;goal&gt;" in svg  # labels are escaped
    assert charts.pacing_chart(path[:1], target=1, projection=1) == ""
