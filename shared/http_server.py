"""The HTTP server both services run: uvicorn's httptools protocol with the limits a server
facing untrusted clients needs and uvicorn does not have.

- **Request head size.** httptools buffers a header however long it is (a probe sent 16 MiB
  headers and both ports read them whole). Past `max_header_bytes` the client gets 431.
- **Slow clients.** uvicorn waits forever for a head sent byte by byte or a body sent at 10
  bytes/s. The head must arrive within `header_timeout`, the body within `body_timeout`;
  otherwise 408 and the connection is closed (a connection costs memory, never a worker, so
  others are served meanwhile).
- **Lingering close.** An answer sent before the body was read (413, 401) used to close the
  socket with the body still arriving: Linux then resets the connection, and a client that
  writes its whole body before reading (urllib, requests) sees a broken pipe instead of the
  413 and retries. Like nginx's `lingering_close`, the server half-closes after the answer
  and reads and discards the rest, bounded in time and bytes, before closing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from prometheus_client import Counter
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.settings import BaseServiceSettings

CONNECTIONS_CUT = Counter(
    "pacekeeper_http_connections_cut_total",
    "Connections the server closed to protect itself",
    ["reason"],  # head_too_large | head_timeout | body_timeout
)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    linger_timeout: float = 5.0
    linger_bytes: int = 64 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> HttpLimits:
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            header_timeout=settings.http_header_timeout_seconds,
            body_timeout=settings.http_body_timeout_seconds,
            linger_timeout=settings.http_linger_timeout_seconds,
            linger_bytes=settings.http_linger_bytes,
        )


def _answer(status: int, reason: str, detail: str) -> bytes:
    body = orjson.dumps({"detail": detail})
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    limits = HttpLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # from a message's first byte to the end of its headers
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._lingered = 0
        self._linger_until = 0.0

    # --- timers ---------------------------------------------------------------------------

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out, reason)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self, reason: str) -> None:
        self._timer = None
        if self._lingering:
            self.transport.close()
            return
        self._cut(408, "Request Timeout", reason, "the request was not received in time")

    def _cut(self, status: int, phrase: str, reason: str, detail: str) -> None:
        if self.transport.is_closing():
            return
        CONNECTIONS_CUT.labels(reason).inc()
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_answer(status, phrase, detail))
        self.transport.close()

    # --- protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, "head_timeout")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > self.limits.linger_bytes or self.loop.time() > self._linger_until:
                self.transport.close()
            else:
                self._arm(self.limits.linger_timeout, "linger")
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # The whole chunk was head: the parser has not reached the end of the headers.
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                limit = self.limits.max_header_bytes
                self._cut(
                    431,
                    "Request Header Fields Too Large",
                    "head_too_large",
                    f"the request line and headers are over {limit} bytes",
                )

    def eof_received(self) -> None:
        if self._lingering:
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._arm(self.limits.header_timeout, "head_timeout")

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, "body_timeout")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The cycle closes its transport after an answer with `connection: close`;
            # route that close through `_close_after_answer` to linger if the body is unread.
            cycle.transport = _LingeringClose(self.transport, self)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._disarm()  # uvicorn's keep-alive timer guards the connection after the answer
        super().on_message_complete()

    # --- lingering close --------------------------------------------------------------------

    def _close_after_answer(self) -> None:
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or not cycle.more_body:
            self.transport.close()
            return
        self._lingering = True
        # A drip-feeding client is closed at the body deadline however often it sends.
        self._linger_until = self.loop.time() + self.limits.body_timeout
        self._arm(self.limits.linger_timeout, "linger")
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()


class _LingeringClose:
    """The transport as a request cycle sees it: `close()` lingers while a body arrives."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        self._protocol._close_after_answer()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def server_config(
    app: Any, *, host: str, port: int, limits: HttpLimits, **options: Any
) -> uvicorn.Config:
    """A uvicorn config on uvloop and the guarded httptools protocol; `options` as uvicorn's."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=guarded_protocol(limits),
        log_config=None,  # keep configure_logging's handlers
        access_log=False,
        **options,
    )
