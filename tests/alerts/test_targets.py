"""Notifications never reach the service's own network unless an operator allows it."""

from __future__ import annotations

import httpx
import pytest

from services.alerts.notify.base import NotifyError, post
from services.alerts.notify.targets import BlockedTarget, GuardedTransport, internal_addresses
from tests.alerts.conftest import Receiver

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "[::1]",
        "localhost",
        "169.254.169.254",
        "2852039166",  # 169.254.169.254 as one decimal number
        "metadata.google.internal",
        "10.0.0.7",
        "172.16.5.4",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "[::ffff:127.0.0.1]",
        "224.0.0.1",
    ],
)
async def test_internal_targets_are_recognised(host: str) -> None:
    assert await internal_addresses(host, 80)


async def test_a_public_address_is_not() -> None:
    assert await internal_addresses("93.184.216.34", 443) == []


async def test_a_delivery_to_an_internal_address_is_refused_before_it_connects(
    receiver: Receiver,
) -> None:
    guarded = httpx.AsyncClient(
        transport=GuardedTransport(httpx.AsyncHTTPTransport(), allow_private=False)
    )
    async with guarded:
        with pytest.raises(NotifyError) as refused:
            await post(guarded, receiver.url, b"{}")
    assert not refused.value.retryable
    assert isinstance(refused.value.__cause__, BlockedTarget)
    assert "127.0.0.1" in str(refused.value)
    assert receiver.requests == []  # nothing reached the internal port

    allowed = httpx.AsyncClient(
        transport=GuardedTransport(httpx.AsyncHTTPTransport(), allow_private=True)
    )
    async with allowed:
        await post(allowed, receiver.url, b"{}")
    assert len(receiver.requests) == 1


async def test_a_failed_delivery_never_shows_what_the_target_answered(
    receiver: Receiver,
) -> None:
    receiver.statuses = [503]
    async with httpx.AsyncClient() as client:
        with pytest.raises(NotifyError) as failed:
            await post(client, receiver.url, b"{}")
    assert str(failed.value) == "HTTP 503 Service Unavailable"
    assert failed.value.retryable
