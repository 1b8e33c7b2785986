"""The scorecard's login session: a signed, expiring cookie naming the role (admin or
read), never the token itself. The signing key is derived from both tokens, so rotating
either one logs every session out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import orjson

from services.alerts.api.deps import Role
from services.alerts.settings import AlertsSettings

COOKIE = "pacekeeper_session"
_CONTEXT = b"pacekeeper web session v1"


@dataclass(frozen=True, slots=True)
class WebSession:
    role: Role
    expires: int  # Unix seconds
    nonce: str

    @property
    def admin(self) -> bool:
        return self.role is Role.admin


def _key(settings: AlertsSettings) -> bytes:
    read = settings.alerts_read_token
    material = b"\0".join(
        [
            settings.admin_token.get_secret_value().encode(),
            read.get_secret_value().encode() if read is not None else b"",
        ]
    )
    return hmac.new(material, _CONTEXT, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())


def issue(settings: AlertsSettings, role: Role, *, now: float | None = None) -> str:
    """A cookie value for a session of `role` that ends after the configured hours."""
    expires = int((now or time.time()) + settings.alerts_web_session_hours * 3600)
    body = {"r": role.value, "e": expires, "n": secrets.token_urlsafe(12)}
    payload = _b64(orjson.dumps(body))
    return f"{payload}.{_sign(_key(settings), payload)}"


def verify(
    settings: AlertsSettings, cookie: str | None, *, now: float | None = None
) -> WebSession | None:
    """The session a cookie proves, or None when it is missing, forged, or expired."""
    if not cookie or len(cookie) > 512 or cookie.count(".") != 1:
        return None
    payload, signature = cookie.split(".")
    if not hmac.compare_digest(signature, _sign(_key(settings), payload)):
        return None
    try:
        body = orjson.loads(_unb64(payload))
        session = WebSession(Role(body["r"]), int(body["e"]), str(body["n"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.role is Role.read and settings.alerts_read_token is None:
        return None
    return session if session.expires > (now or time.time()) else None


def csrf_token(settings: AlertsSettings, session: WebSession) -> str:
    """The token every form of this session posts back: a page of another site cannot
    read it, so it cannot make a logged-in admin's browser acknowledge or silence."""
    return _sign(_key(settings), f"csrf:{session.nonce}")


def csrf_valid(settings: AlertsSettings, session: WebSession, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(str(token), csrf_token(settings, session))
