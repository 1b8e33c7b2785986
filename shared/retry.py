"""One way to retry: exponential backoff (tenacity) until the action works or shutdown
begins. The wait between attempts ends the moment `stopping` is set, and then `Abandoned`
is raised, so a service stops the same way wherever it was retrying."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

T = TypeVar("T")


class Abandoned(Exception):
    """Shutdown began before the action succeeded; whatever it was doing did not happen."""


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base, 2·base, 4·base…
    up to `cap` — what `until_stopped` waits, for callers that schedule retries themselves."""
    return float(min(cap, base * 2 ** (attempt - 1)))


def _first_line(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else ""
    return text.splitlines()[0] if text else repr(exc)


async def until_stopped(
    action: Callable[[], Awaitable[T]],
    *,
    what: str,
    stopping: asyncio.Event,
    log: logging.Logger,
    retry_if: Callable[[BaseException], bool] = lambda _: True,
    base: float = 0.1,
    cap: float = 5.0,
    on_failure: Callable[[BaseException], None] = lambda _: None,
) -> T:
    """`action()`, retried while its error passes `retry_if` (others propagate at once);
    each retry is logged as "`what`, retrying" with the error's first line and the wait."""

    async def sleep(seconds: float) -> None:
        if stopping.is_set():
            raise Abandoned
        try:
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise Abandoned

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if error is not None:
            on_failure(error)
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            f"{what}, retrying", extra={"error": _first_line(error), "retry_in": round(wait, 2)}
        )

    async for attempt in AsyncRetrying(
        retry=retry_if_exception(retry_if),
        wait=wait_exponential(multiplier=base, max=cap),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            return await action()
    raise AssertionError("unreachable: tenacity retries without a stop")  # pragma: no cover
