"""The report as files: self-contained HTML (charts inline), Markdown, PDF and JSON, from
the `ReportData` that `report.build_report` gathered."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
import orjson
from markupsafe import Markup

from services.demo.formatting import (
    format_change,
    format_moment,
    format_timedelta,
    format_value,
    period_span,
    period_title,
    status_label,
)
from services.demo.pacing import (
    ReviewStatus,
)
from services.demo.periods import Period
from services.demo.report import ReportData, ReportFormat
from shared.i18n import Locale, format_percent, install, translations


def _environment(locale: Locale) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("services.demo", "templates"),
        autoescape=lambda name: bool(name and name.endswith(".html.j2")),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    install(env, locale)
    env.filters["fmt"] = lambda value, unit="": format_value(value, unit, locale)
    env.filters["change"] = partial(format_change, locale=locale)
    env.filters["duration"] = partial(format_timedelta, locale=locale)
    env.filters["pct"] = lambda v: "—" if v is None else format_percent(v, locale)
    return env


def page_counter(locale: Locale) -> Markup:
    """The CSS `content` of the PDF's page footer, in the locale's word order:
    `"page " counter(page) " of " counter(pages)`, or the translation's order."""
    text = translations(locale).gettext("page %(page)s of %(pages)s")
    parts = []
    for piece in re.split(r"(%\(pages?\)s)", text):
        if piece in {"%(page)s", "%(pages)s"}:
            parts.append(f"counter({piece[2:-2]})")
        elif piece:
            # A CSS string: double quotes, `"` and `\` escaped; raw text inside <style>.
            parts.append(json.dumps(piece, ensure_ascii=False))
    return Markup(" ".join(parts))


def _context(data: ReportData) -> dict[str, Any]:
    zone = ZoneInfo(data.timezone)
    locale = data.locale

    def when(t: datetime | None) -> str:
        return format_moment(t, zone, locale)

    return {
        "r": data,
        "when": when,
        "Status": ReviewStatus,
        "status": partial(status_label, locale=locale),
        "span": period_span(data.period, locale),
        "period_title": period_title(data.period, locale),
        "previous_title": period_title(data.previous, locale),
        "page_counter": page_counter(locale),
    }


def render_html(data: ReportData) -> str:
    return _environment(data.locale).get_template("report.html.j2").render(_context(data))


def render_markdown(data: ReportData, chart_dir: Path | None = None) -> str:
    """Markdown for a wiki or a PR; charts go to `chart_dir` as PNG files when given."""
    charts: dict[str, str] = {}
    if chart_dir is not None:
        chart_dir.mkdir(parents=True, exist_ok=True)
        for row in data.goals:
            if row.chart:
                path = chart_dir / f"{row.goal}.png"
                path.write_bytes(base64.b64decode(row.chart))
                charts[row.goal] = f"{chart_dir.name}/{path.name}"
    context = _context(data) | {"charts": charts}
    return _environment(data.locale).get_template("report.md.j2").render(context)


def render_pdf(data: ReportData) -> bytes:
    # WeasyPrint lays the same HTML out on A4 pages (the template carries @page rules).
    from weasyprint import HTML

    pdf = HTML(string=render_html(data)).write_pdf()
    assert pdf is not None  # with no target, write_pdf returns the bytes
    return bytes(pdf)


def _json_default(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Period):
        return value.label
    raise TypeError


def render_json(data: ReportData) -> bytes:
    payload = dataclasses.asdict(data)
    payload["period"] = data.period.label
    payload["previous"] = data.previous.label
    for row, goal in zip(payload["goals"], data.goals, strict=True):
        row["has_chart"] = row.pop("chart") is not None
        row["in_progress"] = goal.in_progress
    for row, kpi in zip(payload["kpis"], data.kpis, strict=True):
        row["change"] = kpi.change
        row["vs_target"] = kpi.vs_target
    return orjson.dumps(
        payload, default=_json_default, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
    )


def write_report(data: ReportData, fmt: ReportFormat, output: Path) -> None:
    if fmt is ReportFormat.html:
        output.write_text(render_html(data), encoding="utf-8")
    elif fmt is ReportFormat.md:
        output.write_text(
            render_markdown(data, output.with_name(f"{output.stem}-charts")), encoding="utf-8"
        )
    elif fmt is ReportFormat.pdf:
        output.write_bytes(render_pdf(data))
    else:
        output.write_bytes(render_json(data))
