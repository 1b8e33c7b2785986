"""The ingest OpenAPI document. FastAPI documents the routes it serves (health, readiness,
metrics); the ingest POSTs, served as plain ASGI in front of FastAPI, are described here
from `routes.INGEST_ROUTES`, the same table that serves them."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from services.ingest.routes import INGEST_ROUTES, IngestRoute
from services.ingest.schemas import (
    ANSWER_SCHEMAS,
    INGEST_RESPONSES,
    SECURITY,
    SECURITY_SCHEMES,
)


def _operation(route: IngestRoute) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "requestBody": route.body,
        "responses": INGEST_RESPONSES,
        "security": SECURITY,
    }
    if route.tags:
        operation["tags"] = list(route.tags)
    return operation


def document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    schema["paths"] = {
        **{path: {"post": _operation(route)} for path, route in INGEST_ROUTES.items()},
        **schema.get("paths", {}),
    }
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(ANSWER_SCHEMAS)
    components["securitySchemes"] = SECURITY_SCHEMES
    return schema
