"""The local webhook receiver the demo runs: verifies `X-Pacekeeper-Signature` and prints.

It stands in for an on-call tool. Each delivery is checked against the channel's shared
secret (HMAC-SHA256 of the raw body), summarised from its Alertmanager-shaped payload and
handed to a callback, which the demo uses to print it next to the scorecard.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger("pacekeeper.demo.receiver")

SIGNATURE_HEADER = "X-Pacekeeper-Signature"
TIMESTAMP_HEADER = "X-Pacekeeper-Timestamp"
# The same on every retry of one notification: a receiver that remembers it acts once.
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, body: bytes) -> str:
    """The header value a sender computes: `sha256=<hex HMAC of the raw body>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str, body: bytes, header: str | None, timestamp: str | None = None
) -> bool:
    """True when the header is the HMAC-SHA256 of the body under `secret`.

    Accepts `sha256=<hex>` or bare hex; when the sender also stamps the request, the
    timestamp-bound form `HMAC("<timestamp>.<body>")` is accepted too (replay protection)."""
    if not header:
        return False
    given = header.strip()
    if given.lower().startswith("sha256="):
        given = given[7:]
    given = given.lower()
    candidates = [body]
    if timestamp:
        candidates.append(timestamp.encode() + b"." + body)
    return any(
        hmac.compare_digest(hmac.new(secret.encode(), c, hashlib.sha256).hexdigest(), given)
        for c in candidates
    )


@dataclass(frozen=True, slots=True)
class AlertNote:
    name: str
    status: str
    severity: str
    summary: str


@dataclass(frozen=True, slots=True)
class Delivery:
    received_at: datetime
    verified: bool
    status: str
    alerts: tuple[AlertNote, ...]
    payload: dict[str, Any]
    repeat: bool = False  # a retry of a notification already received

    def line(self) -> str:
        """One line per delivery, as the demo prints it."""
        check = "signature ok" if self.verified else "BAD SIGNATURE"
        if self.repeat:
            check += ", a repeat: ignored"
        names = "; ".join(
            f"{a.status.upper()} [{a.severity}] {a.name}" + (f" — {a.summary}" if a.summary else "")
            for a in self.alerts
        )
        return (
            f"{self.received_at:%H:%M:%S} webhook {self.status} ({check}): {names or 'no alerts'}"
        )


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def summarize(payload: Any) -> tuple[str, tuple[AlertNote, ...]]:
    """Group status and one note per alert from an Alertmanager-shaped webhook body."""
    if not isinstance(payload, dict):
        return "unknown", ()
    status = _text(payload.get("status")) or "unknown"
    notes: list[AlertNote] = []
    alerts = payload.get("alerts")
    for alert in alerts if isinstance(alerts, list) else []:
        if not isinstance(alert, dict):
            continue
        labels = alert.get("labels") if isinstance(alert.get("labels"), dict) else {}
        annotations = alert.get("annotations") if isinstance(alert.get("annotations"), dict) else {}
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        name = (
            _text(labels.get("alertname"))
            or _text(labels.get("goal"))
            or _text(labels.get("rule"))
            or _text(alert.get("name"))
            or "alert"
        )
        notes.append(
            AlertNote(
                name=name,
                status=_text(alert.get("status")) or status,
                severity=_text(labels.get("severity")) or "-",
                summary=_text(annotations.get("summary")),
            )
        )
    return status, tuple(notes)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The demo owns SIGINT/SIGTERM and stops the receiver itself.
        yield


class WebhookReceiver:
    """An HTTP server on loopback that accepts signed webhook deliveries."""

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 9977,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.on_delivery = on_delivery
        self.deliveries: list[Delivery] = []
        self._seen: set[str] = set()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def _handle(self, request: Request) -> JSONResponse:
        body = await request.body()
        verified = verify_signature(
            self.secret,
            body,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
        )
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            payload = None
        status, notes = summarize(payload)
        key = request.headers.get(IDEMPOTENCY_HEADER)
        repeat = verified and key is not None and key in self._seen
        if verified and key is not None:
            self._seen.add(key)
        delivery = Delivery(
            received_at=datetime.now(UTC),
            verified=verified,
            status=status,
            alerts=notes,
            payload=payload if isinstance(payload, dict) else {},
            repeat=repeat,
        )
        self.deliveries.append(delivery)
        if self.on_delivery:
            self.on_delivery(delivery)
        if not verified:
            return JSONResponse({"error": "signature mismatch"}, status_code=401)
        return JSONResponse({"received": len(notes)})

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="webhook-receiver")
        while not self._server.started:
            if self._task.done():
                # uvicorn exits (SystemExit) when it cannot bind; say which address.
                with contextlib.suppress(BaseException):
                    self._task.result()
                raise RuntimeError(f"webhook receiver could not listen on {self.url}")
            await asyncio.sleep(0.02)
        if self.port == 0:  # an OS-chosen port, for tests
            self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server and self._task:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = self._task = None
