"""The door of the API: a request with a body is authenticated before a byte of that body is
read, no body is read past a size limit, and a read nobody waits for any more is cancelled.

A hostile probe sent eight unauthenticated 100 MiB POSTs and took the service from 0.5 to
1.4 GB resident: FastAPI reads (and parses) a body before any dependency runs, the token
check included. This pure ASGI middleware answers first — 401 for a missing or unknown
token, 413 for a declared or streamed body over the limit — and closes the connection, so
the rest is never buffered.
"""

from __future__ import annotations

import asyncio
import contextlib

import orjson
from fastapi import HTTPException
from prometheus_client import Counter
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.alerts.api.deps import token_role
from services.alerts.settings import AlertsSettings
from services.alerts.web import session as web_session

_BODY_METHODS = {"POST", "PUT", "PATCH"}
# The scorecard's login and logout forms are posted before there is a session: a token
# and a path fit in far less than this.
_OPEN_FORMS = {"/login": 4096, "/logout": 0}

CANCELLED_READS = Counter(
    "pacekeeper_alerts_api_reads_cancelled_total",
    "API reads cancelled because the client went away before the answer",
)


async def _answer(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    def __init__(self, app: ASGIApp, settings: AlertsSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = _OPEN_FORMS.get(scope["path"])
        if limit is None:
            if not self._authenticated(headers):
                await _answer(
                    send,
                    401,
                    "missing or invalid bearer token",
                    [(b"www-authenticate", b"Bearer")],
                )
                return
            limit = self.settings.alerts_max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _answer(send, 413, f"the request body is over {limit} bytes", [])
            return

        received = 0

        async def counted() -> Message:
            # A body without a declared length is counted as it arrives; FastAPI turns the
            # exception into the 413 answer and the connection is closed, not drained.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(
                        413,
                        f"the request body is over {limit} bytes",
                        headers={"Connection": "close"},
                    )
            return message

        await self.app(scope, counted, send)

    def _authenticated(self, headers: dict[bytes, bytes]) -> bool:
        """A known bearer token (the API), or a scorecard session cookie (its forms)."""
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return token_role(self.settings, token.strip()) is not None
        cookies = cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
        return web_session.verify(self.settings, cookies.get(web_session.COOKIE)) is not None


def _disconnected(watcher: asyncio.Future[Message]) -> bool:
    if not watcher.done() or watcher.cancelled() or watcher.exception() is not None:
        return False
    return bool(watcher.result()["type"] == "http.disconnect")


class CancelOnDisconnect:
    """A read whose client has gone away is cancelled, and with it its database query.

    A probe's abandoned series request kept PostgreSQL busy for over a minute. Once a GET's
    (empty) body is read, the next `receive()` returns only when the client disconnects (or,
    in some servers, once the answer is sent): watching it beside the handler tells us when
    to cancel. psycopg sends PostgreSQL a cancel request when a query's task is cancelled.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in {"GET", "HEAD"}:
            await self.app(scope, receive, send)
            return
        # The (empty) request first, however the server splits it; a GET that carries a
        # body is handed over as it is, unwatched, rather than buffered here.
        received: list[Message] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received.append(message)
            if message.get("body") or not message.get("more_body", False):
                break
        watch = not received[-1].get("body")  # else the loop ended on the last, empty part
        answered = False

        async def replay() -> Message:
            return received.pop(0) if received else await receive()

        if not watch:
            await self.app(scope, replay, send)
            return

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered = True
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, replay, watched_send))
        watcher = asyncio.ensure_future(receive())
        try:
            await asyncio.wait({handler, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if _disconnected(watcher) and not handler.done() and not answered:
                handler.cancel()
                CANCELLED_READS.inc()
            with contextlib.suppress(asyncio.CancelledError):
                await handler
        finally:
            watcher.cancel()
            handler.cancel()
