"""CRUD for kpis, goals, rules and channels through `shared.config.store`, the same path
`pacekeeper apply` takes, so the file and the API can never disagree on what is valid."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Response, status
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from services.alerts.api import errors
from services.alerts.api.deps import Reader, Session, Writer
from services.alerts.api.errors import Unprocessable
from shared.config.alerting import ChannelSpec, GoalSpec, RuleSpec
from shared.config.kpis import KpiSpec, referenced_kpis, undeclared_dimensions
from shared.config.store import delete_spec, kpi_versions_summary, load_section, upsert_spec


def public(spec: BaseModel) -> dict[str, Any]:
    """The API form: aliases (`for`, `in`) and secrets masked."""
    return spec.model_dump(mode="json", by_alias=True)


async def _check_references(session: AsyncSession, section: str, spec: Any) -> None:
    if section == "channels":
        return
    problems: list[tuple[str, str]] = []
    kpis = await load_section(session, "kpis")
    if section == "kpis":
        for ref in referenced_kpis(spec):
            if ref == spec.name:
                problems.append(("name", "a KPI cannot refer to itself"))
            elif ref not in kpis:
                problems.append(("(body)", f"refers to unknown KPI {ref!r}"))
    else:
        if spec.kpi not in kpis:
            problems.append(("kpi", f"unknown KPI {spec.kpi!r}"))
        if section == "rules" and spec.min_sample and spec.min_sample.kpi not in kpis:
            problems.append(("min_sample.kpi", f"unknown KPI {spec.min_sample.kpi!r}"))
        if spec.kpi in kpis:
            grouped = list(getattr(spec, "group_by", []))
            for i, name in enumerate(grouped):
                if undeclared_dimensions(spec.kpi, [name], kpis):
                    problems.append((f"group_by[{i}]", f"{spec.kpi} has no dimension {name!r}"))
            for name in spec.dims:
                if undeclared_dimensions(spec.kpi, [name], kpis):
                    problems.append((f"dims.{name}", f"{spec.kpi} has no dimension {name!r}"))
        channels = await load_section(session, "channels")
        for i, name in enumerate(spec.channels):
            if name not in channels:
                problems.append((f"channels[{i}]", f"unknown channel {name!r}"))
    if problems:
        raise Unprocessable(problems)


async def _users_of(session: AsyncSession, section: str, name: str) -> list[str]:
    """What still refers to a KPI or channel about to be deleted."""
    users: list[str] = []
    rules: dict[str, RuleSpec] = await load_section(session, "rules")
    goals: dict[str, GoalSpec] = await load_section(session, "goals")
    if section == "kpis":
        kpis = await load_section(session, "kpis")
        users += [f"kpis/{k}" for k, spec in kpis.items() if name in referenced_kpis(spec)]
        users += [
            f"rules/{r}"
            for r, spec in rules.items()
            if spec.kpi == name or (spec.min_sample and spec.min_sample.kpi == name)
        ]
        users += [f"goals/{g}" for g, spec in goals.items() if spec.kpi == name]
    elif section == "channels":
        users += [f"rules/{r}" for r, spec in rules.items() if name in spec.channels]
        users += [f"goals/{g}" for g, spec in goals.items() if name in spec.channels]
    return users


# Kept with each KPI version that a write through the API creates.
API_WRITER = "admin API"


def config_router(section: str, model: Any, label: str, *, reads: bool = True) -> APIRouter:
    """CRUD routes of one section; `reads=False` leaves the GETs to a richer router."""
    router = APIRouter(prefix=f"/v1/{section}", tags=[section])

    if reads:

        @router.get("", summary=f"List {section}", responses=errors.READ)
        async def list_specs(session: Session, _: Reader) -> list[dict[str, Any]]:
            return [public(spec) for spec in (await load_section(session, section)).values()]

        @router.get("/{name}", summary=f"Get one {label}", responses=errors.READ_ONE)
        async def get_spec(name: str, session: Session, _: Reader) -> dict[str, Any]:
            spec = (await load_section(session, section)).get(name)
            if spec is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {label} named {name!r}")
            if section == "kpis":
                return public(spec) | await kpi_versions_summary(session, name)
            return public(spec)

    @router.post(
        "",
        status_code=status.HTTP_201_CREATED,
        summary=f"Create a {label}",
        responses=errors.WRITE | errors.answers(409),
    )
    async def create_spec(
        spec: Annotated[model, Body()],
        session: Session,
        _: Writer,
    ) -> dict[str, Any]:
        if spec.name in await load_section(session, section):
            raise HTTPException(status.HTTP_409_CONFLICT, f"{label} {spec.name!r} exists")
        await _check_references(session, section, spec)
        await upsert_spec(session, section, spec, applied_by=API_WRITER)
        return public(spec)

    @router.put(
        "/{name}",
        summary=f"Create or replace a {label}",
        responses=errors.WRITE | {201: {"description": f"the {label} was created"}},
    )
    async def put_spec(
        name: str,
        spec: Annotated[model, Body()],
        session: Session,
        _: Writer,
        response: Response,
    ) -> dict[str, Any]:
        if spec.name != name:
            raise Unprocessable([("name", f"must equal the name in the path ({name!r})")])
        await _check_references(session, section, spec)
        outcome = await upsert_spec(session, section, spec, applied_by=API_WRITER)
        response.status_code = (
            status.HTTP_201_CREATED if outcome == "created" else status.HTTP_200_OK
        )
        return public(spec)

    @router.delete(
        "/{name}",
        status_code=status.HTTP_204_NO_CONTENT,
        summary=f"Delete a {label}",
        responses=errors.WRITE_ONE | errors.answers(409),
    )
    async def delete(name: str, session: Session, _: Writer) -> Response:
        users = await _users_of(session, section, name)
        if users:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"{label} {name!r} is used by {', '.join(users)}"
            )
        if not await delete_spec(session, section, name):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {label} named {name!r}")
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    return router


kpis = config_router("kpis", KpiSpec, "KPI")
rules = config_router("rules", RuleSpec, "rule")
channels = config_router("channels", ChannelSpec, "channel")
goals_config = config_router("goals", GoalSpec, "goal", reads=False)
