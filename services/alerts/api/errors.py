"""422 answers that name the offending field the way `pacekeeper apply` does (`window`,
`min_sample.kpi`, `channels[0]`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError

from shared.config import error_message, error_path
from shared.config.kpis import KpiKind


class Problem(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    field: str
    msg: str
    type: str


class Invalid(BaseModel):
    detail: list[FieldProblem]


_WHEN = {
    400: "the body is not JSON in UTF-8",
    401: "no bearer token, or an unknown one",
    403: "the read-only token asked to change something",
    404: "nothing by that name or id",
    409: "the name exists already, or the thing is still in use",
    413: "the request body is over PACEKEEPER_ALERTS_MAX_BODY_BYTES",
    422: "a field is invalid: each problem names its field",
    503: "the query ran over PACEKEEPER_ALERTS_API_STATEMENT_TIMEOUT_SECONDS (Retry-After)",
}


def answers(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route for its OpenAPI document, each with its body model."""
    return {
        code: {"model": Invalid if code == 422 else Problem, "description": _WHEN[code]}
        for code in codes
    }


READ = answers(401, 422, 503)
READ_ONE = answers(401, 404, 422, 503)
WRITE = answers(400, 401, 403, 413, 422, 503)
WRITE_ONE = answers(400, 401, 403, 404, 413, 422, 503)


class Unprocessable(Exception):
    """A body that is well-formed but refers to things that do not exist, and the like."""

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in problems))
        self.problems = list(problems)


def _field(loc: Sequence[Any]) -> str:
    parts = tuple(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    if len(parts) > 1 and parts[0] in set(KpiKind):  # a KPI body: the union member's tag
        parts = parts[1:]
    return error_path(parts) or "(body)"


def details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {"field": _field(e.get("loc", ())), "msg": error_message(e), "type": e.get("type", "")}
        for e in errors
    ]


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_encoder(details(exc.errors()))}, status_code=422)

    @app.exception_handler(ValidationError)
    async def _model(request: Request, exc: ValidationError) -> JSONResponse:
        errors = exc.errors(include_url=False)
        return JSONResponse({"detail": jsonable_encoder(details(errors))}, status_code=422)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        if isinstance(exc.orig, psycopg.errors.QueryCanceled):
            # PACEKEEPER_ALERTS_API_STATEMENT_TIMEOUT_SECONDS: the cost bound of one request.
            limit = request.app.state.settings.alerts_api_statement_timeout_seconds
            return JSONResponse(
                {
                    "detail": f"the query ran over {limit:g} s and was cancelled: ask for a"
                    " shorter window, a larger step or fewer dimensions"
                },
                status_code=503,
                headers={"Retry-After": "5"},
            )
        raise exc

    @app.exception_handler(Unprocessable)
    async def _refs(request: Request, exc: Unprocessable) -> JSONResponse:
        body = [{"field": f, "msg": m, "type": "reference"} for f, m in exc.problems]
        return JSONResponse({"detail": body}, status_code=422)
