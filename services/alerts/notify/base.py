"""What every notifier shares: the error type, HTTP posting and the retryable classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import orjson

from services.alerts.notify.targets import BlockedTarget
from shared.config.alerting import ChannelSpec

IDEMPOTENCY_HEADER = "Idempotency-Key"


class NotifyError(Exception):
    def __init__(self, message: str, *, retryable: bool, http_status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.http_status = http_status


class Notifier(Protocol):
    channel: ChannelSpec

    async def notify(self, payload: Mapping[str, Any], *, key: str) -> None:
        """Deliver one notification; raise NotifyError on failure."""


def retryable_status(status: int) -> bool:
    """Server errors, throttling and request timeouts may pass later; other 4xx never will."""
    return status >= 500 or status in (408, 425, 429)


def check_response(response: httpx.Response) -> None:
    if response.is_success:
        return
    # The status, never the body: what a target answers is not ours to show to readers.
    raise NotifyError(
        f"HTTP {response.status_code} {response.reason_phrase}".rstrip(),
        retryable=retryable_status(response.status_code),
        http_status=response.status_code,
    )


async def post(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST JSON; transport failures (refused, reset, timeout) are retryable."""
    try:
        response = await http.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            params=params,
        )
    except BlockedTarget as exc:
        raise NotifyError(str(exc), retryable=False) from exc
    except httpx.TransportError as exc:
        raise NotifyError(f"{type(exc).__name__}: {exc}", retryable=True) from exc
    check_response(response)
    return response


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def channel_url(channel: ChannelSpec) -> str:
    assert channel.url is not None  # the ChannelSpec validator requires it for HTTP channels
    return str(channel.url)


def bot_errcode(
    response: httpx.Response, *, code_keys: tuple[str, ...], throttled: set[int]
) -> None:
    """Chat bots answer HTTP 200 with an error code in the body; 0 is success."""
    try:
        body = response.json()
    except ValueError:
        return
    if not isinstance(body, dict):
        return
    for key in code_keys:
        code = body.get(key)
        if isinstance(code, int) and code != 0:
            message = body.get("msg") or body.get("errmsg") or body.get("StatusMessage") or ""
            message = str(message)[:120]
            raise NotifyError(
                f"{key} {code}: {message}", retryable=code in throttled, http_status=200
            )
