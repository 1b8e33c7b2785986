"""The one retry policy: backoff until success, other errors at once, Abandoned on shutdown."""

from __future__ import annotations

import asyncio
import logging

import pytest

from shared.retry import Abandoned, backoff, until_stopped

pytestmark = pytest.mark.unit
log = logging.getLogger("test.retry")


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, base=1, cap=10) for n in range(1, 6)] == [1, 2, 4, 8, 10]


async def test_retries_until_the_action_works(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    failures: list[str] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("database restarting\nsecond line")
        return "done"

    result = await until_stopped(
        flaky,
        what="load offsets failed",
        stopping=asyncio.Event(),
        log=log,
        base=0.001,
        on_failure=lambda exc: failures.append(str(exc)),
    )
    assert result == "done"
    assert len(calls) == 3
    assert len(failures) == 2
    assert [r.getMessage() for r in caplog.records] == ["load offsets failed, retrying"] * 2
    assert caplog.records[0].error == "database restarting"  # type: ignore[attr-defined]


async def test_an_error_that_is_not_retried_propagates_at_once() -> None:
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad data")

    with pytest.raises(ValueError, match="bad data"):
        await until_stopped(
            refused,
            what="x",
            stopping=asyncio.Event(),
            log=log,
            retry_if=lambda exc: isinstance(exc, OSError),
        )
    assert calls == 1


async def test_shutdown_ends_the_wait_at_once_with_abandoned() -> None:
    stopping = asyncio.Event()

    async def down() -> None:
        raise OSError("down")

    task = asyncio.create_task(
        until_stopped(down, what="x", stopping=stopping, log=log, base=3600, cap=3600)
    )
    await asyncio.sleep(0.05)  # failed once, now waiting an hour
    stopping.set()
    with pytest.raises(Abandoned):
        await asyncio.wait_for(task, timeout=5)
