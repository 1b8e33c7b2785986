"""Where notifications may go: never into the service's own network unless an operator says so.

A channel is a URL an admin typed; without a guard it reaches the database port, the
cloud metadata service (169.254.169.254, also spelled `http://2852039166/`) or another
internal API, and the delivery log shows what answered. Every request of the delivery
client resolves its host and refuses loopback, private, link-local, shared, multicast and
reserved addresses unless PACEKEEPER_ALERTS_ALLOW_PRIVATE_TARGETS is set (the local demo
and tests, whose receivers listen on 127.0.0.1). The check is made on the addresses the
host resolves to when the request is sent, so a name cannot hide an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

# Names that are internal whatever they resolve to here (cloud metadata services).
_INTERNAL_NAMES = frozenset({"metadata.google.internal", "metadata", "instance-data"})


class BlockedTarget(httpx.TransportError):
    """The target is in a network notifications may not reach: no retry can help."""


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


async def internal_addresses(host: str, port: int) -> list[str]:
    """The addresses of `host` that lie in an internal network (empty: it may be reached)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in _INTERNAL_NAMES or name == "localhost" or name.endswith(".localhost"):
        return [name]
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except OSError:
        return []  # unresolvable: the connection itself will fail, and say so
    return sorted({str(info[4][0]) for info in infos if _internal(str(info[4][0]))})


class GuardedTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, *, allow_private: bool) -> None:
        self._inner = inner
        self._allow_private = allow_private

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self._allow_private:
            port = request.url.port or (443 if request.url.scheme == "https" else 80)
            blocked = await internal_addresses(request.url.host, port)
            if blocked:
                raise BlockedTarget(
                    f"{request.url.host} is an internal address ({', '.join(blocked)}):"
                    " refused (PACEKEEPER_ALERTS_ALLOW_PRIVATE_TARGETS allows it)",
                    request=request,
                )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
