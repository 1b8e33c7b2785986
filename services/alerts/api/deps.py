"""Request dependencies: the transaction and the two bearer tokens (admin, read-only)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.settings import AlertsSettings
from shared.db import transaction

_bearer = HTTPBearer(auto_error=False, description="PACEKEEPER_ADMIN_TOKEN or the read token")


class Role(StrEnum):
    admin = "admin"
    read = "read"


def get_settings(request: Request) -> AlertsSettings:
    settings: AlertsSettings = request.app.state.settings
    return settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request owns the transaction: committed when the handler returns normally,
    before the answer is sent (the `Session` alias scopes it to the handler), so a 2xx
    means the change is durable and visible to the client's next request."""
    async with transaction(request.app.state.sessions) as session:
        yield session


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def token_role(settings: AlertsSettings, token: str) -> Role | None:
    """What a bearer token may do; None for an unknown one (compared in constant time)."""
    if _same(token, settings.admin_token.get_secret_value()):
        return Role.admin
    read = settings.alerts_read_token
    if read is not None and _same(token, read.get_secret_value()):
        return Role.read
    return None


async def reader(
    settings: Annotated[AlertsSettings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Role:
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    role = token_role(settings, credentials.credentials)
    if role is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"}
        )
    return role


async def writer(role: Annotated[Role, Depends(reader)]) -> Role:
    if role is not Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the read-only token cannot change anything")
    return role


Session = Annotated[AsyncSession, Depends(get_session, scope="function")]
Reader = Annotated[Role, Depends(reader)]
Writer = Annotated[Role, Depends(writer)]
Settings = Annotated[AlertsSettings, Depends(get_settings)]
