"""Annotation templates of rules (`{{ value }}`, `{{ labels.source }}`, and for anomaly rules
`{{ usual }}`, `{{ band_low }}`, `{{ band_high }}`), rendered in a sandbox: a user's template
can read its context and nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from services.alerts.evaluation.anomaly import Band

NDASH = "\u2013"  # ranges: usually 95\u2013130
_templates = SandboxedEnvironment(autoescape=False, undefined=jinja2.ChainableUndefined)


@lru_cache(maxsize=4096)
def _template(source: str) -> jinja2.Template:
    return _templates.from_string(source)


def render(source: str, context: Mapping[str, Any]) -> str:
    """The rendered template; a broken one shows as is, with the error."""
    if "{" not in source:
        return source
    try:
        return _template(source).render(**context)
    except jinja2.TemplateError as exc:
        return f"{source} (template error: {exc})"


def band_context(
    band: Band, window: tuple[datetime, datetime], zone: ZoneInfo, direction: str
) -> dict[str, Any]:
    """An anomaly alert's band as its context stores it (and notifications, the scorecard
    and the report show it): the usual value, the band, and the window in business time,
    whose weekday and time of day the past weeks share."""
    t_from, t_to = (t.astimezone(zone) for t in window)
    return {
        "usual": band.usual,
        "low": band.low,
        "high": band.high,
        "weeks": band.weeks,
        "direction": direction,
        "from": t_from.isoformat(),
        "to": t_to.isoformat(),
    }


def anomaly_summary(kpi: str, window: str, value: float | None, band: Mapping[str, Any]) -> str:
    """The default summary: 'orders 41 over 1h, usually 95\u2013130 on Tuesday 10:00\u201311:00'."""
    t_from = datetime.fromisoformat(band["from"])
    t_to = datetime.fromisoformat(band["to"])
    if t_from.date() == t_to.date() or t_to == t_from.replace(hour=0, minute=0) + timedelta(days=1):
        when = f"on {t_from:%A %H:%M}{NDASH}{t_to:%H:%M}"
    else:
        when = f"from {t_from:%A %H:%M} to {t_to:%A %H:%M}"
    shown = "n/a" if value is None else f"{value:.4g}"
    return f"{kpi} {shown} over {window}, usually {band['low']:.4g}{NDASH}{band['high']:.4g} {when}"
