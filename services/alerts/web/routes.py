"""The scorecard's pages: login, the front page, a goal's and a KPI's drill-down, and the
admin's acknowledge and silence buttons.

Server-rendered HTML that reads fine without JavaScript; with it, each page swaps in a
fresh copy of its numbers every `alerts_web_refresh_seconds` (`?fragment=1`). Reading
needs a session from the login form (either token); acknowledging and silencing need an
admin session and the session's form token."""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import jinja2
from fastapi import APIRouter, Form, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import DBAPIError

from services.alerts import store
from services.alerts.api.deps import Role, Session, Settings, token_role
from services.alerts.config import Config, ConfigCache
from services.alerts.evaluation.windows import judgement_time
from services.alerts.silence import Matcher
from services.alerts.web import charts
from services.alerts.web.scorecard import (
    Scorecard,
    SnapshotCache,
    freshness,
    goal_cards,
    kpi_detail,
    read_scorecard,
)
from services.alerts.web.session import COOKIE, WebSession, csrf_token, csrf_valid, issue, verify
from shared.config.alerting import Period
from shared.durations import format_duration, parse_duration
from shared.i18n import Locale, format_datetime, install
from shared.kpi_format import format_change, format_value

router = APIRouter(include_in_schema=False)
TEMPLATES = Path(__file__).parent / "templates"
LANG_COOKIE = "pacekeeper_lang"
PERIODS = (Period.day, Period.week, Period.month, Period.quarter)
WINDOWS = ("24h", "7d", "28d", "90d")
STEPS = ("5m", "1h", "1d", "7d")
MAX_POINTS = 2_000  # one chart; the JSON API serves longer series
SILENCE_HOURS = (1, 4, 24)
DIMENSION_PREFIX = "dim."
UTC_ZONE = ZoneInfo("UTC")


@cache
def _environment(locale: Locale) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    install(env, locale)
    env.filters["kpi"] = lambda value, unit: format_value(value, unit, locale)
    env.filters["change"] = lambda value: format_change(value, locale)
    env.globals.update(
        sparkline=charts.sparkline,
        pacing_chart=charts.pacing_chart,
        series_chart=charts.series_chart,
        duration=format_duration,
    )
    return env


def _locale(request: Request, settings: Any) -> Locale:
    chosen = request.query_params.get("lang") or request.cookies.get(LANG_COOKIE)
    if chosen:
        try:
            return Locale(chosen)
        except ValueError:
            pass
    locale: Locale = settings.locale
    return locale


def _session(request: Request, settings: Any) -> WebSession | None:
    return verify(settings, request.cookies.get(COOKIE))


def _safe_next(target: str | None) -> str:
    """Only a path of this site: `//evil.example` and absolute URLs go to the front page."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(here)}", status.HTTP_303_SEE_OTHER)


def _render(
    request: Request,
    settings: Any,
    template: str,
    *,
    session: WebSession | None,
    status_code: int = 200,
    zone: ZoneInfo = UTC_ZONE,
    **context: Any,
) -> HTMLResponse:
    locale = _locale(request, settings)
    fragment = request.query_params.get("fragment") == "1"
    nonce = secrets.token_urlsafe(12)
    html = (
        _environment(locale)
        .get_template(template)
        .render(
            request=request,
            session=session,
            csrf=csrf_token(settings, session) if session else "",
            fragment=fragment,
            nonce=nonce,
            refresh=settings.alerts_web_refresh_seconds,
            languages=list(Locale),
            when=lambda t: format_datetime(t, locale, "MMMd Hm", zone=zone),
            **context,
        )
    )
    response = HTMLResponse(html, status_code=status_code)
    response.headers.update(
        {
            "Cache-Control": "no-store",
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'"
                f" 'nonce-{nonce}'; img-src 'self' data:; connect-src 'self'; form-action 'self';"
                " frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Frame-Options": "DENY",  # the admin's buttons never sit in another site's frame
            "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff",
        }
    )
    if request.query_params.get("lang") == locale.value:
        response.set_cookie(LANG_COOKIE, locale.value, max_age=365 * 86400, samesite="lax")
    return response


async def _config(request: Request, session: Session) -> Config:
    cache: ConfigCache = request.app.state.config_cache
    return await cache.refresh(session)


def _require(section: Mapping[str, object], name: str, what: str) -> None:
    if name not in section:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no {what} named {name!r}")


# --- login ------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, settings: Settings, next: str = "/") -> Response:
    return _render(
        request, settings, "login.html.j2", session=None, next=_safe_next(next), error=None
    )


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    settings: Settings,
    token: Annotated[str, Form(max_length=512)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    role = token_role(settings, token.strip())
    if role is None:
        return _render(
            request,
            settings,
            "login.html.j2",
            session=None,
            status_code=status.HTTP_401_UNAUTHORIZED,
            next=_safe_next(next),
            error="invalid",
        )
    response = RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        COOKIE,
        issue(settings, role),
        max_age=int(settings.alerts_web_session_hours * 3600),
        httponly=True,
        secure=settings.alerts_web_secure_cookie,
        samesite="lax",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(COOKIE)
    return response


# --- pages ------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def front_page(
    request: Request, settings: Settings, session: Session, period: str = "day"
) -> Response:
    viewer = _session(request, settings)
    if viewer is None:
        return _to_login(request)
    chosen = Period(period) if period in {p.value for p in PERIODS} else Period.day
    config = await _config(request, session)
    snapshots: SnapshotCache = request.app.state.web_snapshots

    async def read() -> Scorecard:
        return await read_scorecard(session, config, settings.events_topic, chosen)

    card = await snapshots.get((chosen, config.digest), read)
    return _render(
        request,
        settings,
        "scorecard.html.j2",
        session=viewer,
        zone=config.zone,
        card=card,
        periods=PERIODS,
        silence_hours=SILENCE_HOURS,
    )


@router.get("/goals/{name}", response_class=HTMLResponse)
async def goal_page(request: Request, settings: Settings, session: Session, name: str) -> Response:
    viewer = _session(request, settings)
    if viewer is None:
        return _to_login(request)
    config = await _config(request, session)
    _require(config.goals, name, "goal")
    now = datetime.now(UTC)
    fresh = await freshness(session, settings.events_topic, now)
    at = judgement_time(now, fresh.watermark)
    cards = await goal_cards(session, config, at, [name])
    history = await store.goals.goal_history(session, name, 50)
    return _render(
        request,
        settings,
        "goal.html.j2",
        session=viewer,
        zone=config.zone,
        goal=config.goals[name],
        card=cards[0] if cards else None,
        history=history,
        freshness=fresh,
    )


@router.get("/kpis/{name}", response_class=HTMLResponse)
async def kpi_page(
    request: Request,
    settings: Settings,
    session: Session,
    name: str,
    window: str = "7d",
    step: str = "1h",
) -> Response:
    viewer = _session(request, settings)
    if viewer is None:
        return _to_login(request)
    config = await _config(request, session)
    _require(config.kpis, name, "KPI")
    problems = []
    try:
        window_delta = parse_duration(window)
    except ValueError as exc:
        problems.append(f"window: {exc}")
        window, window_delta = "7d", timedelta(days=7)
    try:
        step_delta = parse_duration(step)
    except ValueError as exc:
        problems.append(f"step: {exc}")
        step, step_delta = "1h", timedelta(hours=1)
    if step_delta < timedelta(minutes=1):
        problems.append("step: at least 1m (KPIs are kept per minute)")
        step, step_delta = "1m", timedelta(minutes=1)
    if window_delta / step_delta > MAX_POINTS:
        step_delta = timedelta(minutes=math.ceil(window_delta / MAX_POINTS / timedelta(minutes=1)))
        problems.append(
            f"step: more than {MAX_POINTS} points; shown at {format_duration(step_delta)}"
        )
        step = format_duration(step_delta)
    declared = [str(d) for d in getattr(config.kpis[name], "dimensions", []) or []]
    dims = {
        key.removeprefix(DIMENSION_PREFIX): value
        for key, value in request.query_params.items()
        if key.startswith(DIMENSION_PREFIX)
        and key.removeprefix(DIMENSION_PREFIX) in declared
        and value
        and len(value) <= 500
        and "\x00" not in value
    }
    now = datetime.now(UTC)
    fresh = await freshness(session, settings.events_topic, now)
    t_to = judgement_time(now, fresh.watermark).replace(second=0, microsecond=0)
    detail = None
    try:
        detail = await kpi_detail(
            session, config, name, t_to - window_delta, t_to, step_delta, dims
        )
    except DBAPIError as exc:
        problems.append(str(exc.orig or exc)[:300])
    return _render(
        request,
        settings,
        "kpi.html.j2",
        session=viewer,
        zone=config.zone,
        name=name,
        spec=config.kpis[name],
        detail=detail,
        window=window,
        step=step,
        dims=dims,
        windows=WINDOWS,
        steps=STEPS,
        problems=problems,
        freshness=fresh,
        query=lambda **changes: urlencode(
            {
                "window": window,
                "step": step,
                **{DIMENSION_PREFIX + k: v for k, v in dims.items()},
                **changes,
            }
        ),
    )


# --- admin actions ----------------------------------------------------------------------


def _admin(request: Request, settings: Any, csrf: str) -> WebSession:
    viewer = _session(request, settings)
    if viewer is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in first")
    if viewer.role is not Role.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the read-only login cannot change anything")
    if not csrf_valid(settings, viewer, csrf):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form is stale; reload the page")
    return viewer


def _back(request: Request, snapshots: SnapshotCache) -> RedirectResponse:
    snapshots.clear()
    return RedirectResponse("/", status.HTTP_303_SEE_OTHER)


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(
    request: Request,
    settings: Settings,
    session: Session,
    alert_id: int,
    csrf: Annotated[str, Form(max_length=200)],
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _admin(request, settings, csrf)
    found = await store.alerts.alert_episode(session, alert_id)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alert {alert_id}")
    if found.state in ("pending", "firing"):
        await store.alerts.acknowledge(
            session, found.fingerprint, found.episode, "web scorecard (admin)", comment
        )
    return _back(request, request.app.state.web_snapshots)


@router.post("/alerts/{alert_id}/silence")
async def silence(
    request: Request,
    settings: Settings,
    session: Session,
    alert_id: int,
    csrf: Annotated[str, Form(max_length=200)],
    hours: Annotated[int, Form(ge=1, le=24 * 7)] = 4,
    comment: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    _admin(request, settings, csrf)
    alerts = await store.alerts.list_alerts(session, states=["pending", "firing"], limit=10_000)
    alert = next((a for a in alerts if a.id == alert_id), None)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no open alert {alert_id}")
    # Exactly this alert's labels: the silence covers this alert and nothing broader.
    matchers = [Matcher(name=k, value=v) for k, v in sorted(alert.labels.items())][:20]
    now = datetime.now(UTC)
    await store.silences.create_silence(
        session, matchers, now, now + timedelta(hours=hours), "web scorecard (admin)", comment
    )
    return _back(request, request.app.state.web_snapshots)
