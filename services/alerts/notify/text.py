"""Plain-text and Markdown renderings of a notification, for chat bots and email, in the
alerts service's locale (`PACEKEEPER_LOCALE`). The payload itself stays as Alertmanager
spells it (English states, raw numbers): machines read it; people read these texts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.i18n import Locale, format_datetime, format_number, format_percent, term, translations


def _number(value: Any, locale: Locale) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "—" if value is None else str(value)
    # Six significant digits at most, as Alertmanager's templates show a value.
    return format_number(float(f"{value:.6g}"), locale, max_decimals=6)


def title(payload: Mapping[str, Any], locale: Locale = Locale.en) -> str:
    _ = translations(locale).gettext
    firing = sum(1 for a in payload.get("alerts", []) if a.get("status") == "firing")
    resolved = len(payload.get("alerts", [])) - firing
    labels = payload.get("groupLabels") or {}
    name = labels.get("alertname") or ", ".join(f"{k}={v}" for k, v in labels.items())
    parts = []
    if payload.get("restatement"):
        restated = _("RESTATED")
        return f"[{restated}] {name}".strip()
    if firing:
        parts.append(_("FIRING:%(count)d") % {"count": firing})
    if resolved:
        parts.append(_("RESOLVED:%(count)d") % {"count": resolved})
    return f"[{' '.join(parts)}] {name}".strip()


def _alert_line(alert: Mapping[str, Any], *, markdown: bool, locale: Locale) -> str:
    _ = translations(locale).gettext
    labels = alert.get("labels", {})
    annotations = alert.get("annotations", {})
    summary = annotations.get("summary") or labels.get("alertname", "")
    extra = {k: v for k, v in labels.items() if k not in ("alertname",)}
    status = term(alert.get("status", ""), locale)
    value = alert.get("value")
    if locale is Locale.en:
        status = status if markdown else status.upper()
    head = f"**{status}** {summary}" if markdown else f"{status} {summary}"
    line = f"- {head}"
    if value is not None:
        line += " " + _("(value %(value)s)") % {"value": _number(value, locale)}
    if extra:
        line += " " + ", ".join(f"{k}={v}" for k, v in sorted(extra.items()))
    goal = alert.get("goal")
    if goal:
        line += "\n  " + _(
            "goal %(name)s: %(status)s, value %(value)s, expected %(expected)s,"
            " target %(target)s, projection %(projection)s"
        ) % {
            "name": goal.get("name"),
            "status": term(str(goal.get("status")), locale),
            "value": _number(goal.get("value"), locale),
            "expected": _number(goal.get("expected"), locale),
            "target": _number(goal.get("target"), locale),
            "projection": _number(goal.get("projection"), locale),
        }
        drivers = goal.get("contributors") or []
        if drivers:
            line += "\n  " + _("most behind: %(contributors)s") % {
                "contributors": ", ".join(
                    f"{d['dims']} ({'+' if d['delta'] >= 0 else ''}{_number(d['delta'], locale)})"
                    for d in drivers
                )
            }
    band = alert.get("band")
    if band:
        line += "\n  " + _band_line(band, locale)
    restatement = alert.get("restatement")
    if restatement:
        line += "\n  " + _restatement_line(restatement, locale)
    description = annotations.get("description")
    if description:
        line += f"\n  {description}"
    return line


def _verdict(status: Any, locale: Locale) -> str:
    _ = translations(locale).gettext
    return {"met": _("met"), "missed": term("missed", locale)}.get(status, "—")


def _signed(value: Any, locale: Locale) -> str:
    plus = "+" if isinstance(value, int | float) and value > 0 else ""
    return plus + _number(value, locale)


def _restatement_line(restatement: Mapping[str, Any], locale: Locale) -> str:
    """'period from 2026-11-01 restated: as reported 1,000 (met), as restated 940 (missed),
    change -60 (-6.0%)', in the locale."""
    _ = translations(locale).gettext
    reported = restatement.get("reported") or {}
    restated = restatement.get("restated") or {}
    relative = restatement.get("relative")
    return _(
        "period from %(start)s restated: as reported %(reported)s (%(reported_status)s),"
        " as restated %(restated)s (%(restated_status)s), change %(delta)s (%(relative)s)"
    ) % {
        "start": str(restatement.get("period_start", ""))[:10],
        "reported": _number(reported.get("value"), locale),
        "reported_status": _verdict(reported.get("status"), locale),
        "restated": _number(restated.get("value"), locale),
        "restated_status": _verdict(restated.get("status"), locale),
        "delta": _signed(restatement.get("delta"), locale),
        "relative": "—"
        if not isinstance(relative, int | float) or relative in (float("inf"), float("-inf"))
        else ("+" if relative > 0 else "") + format_percent(relative, locale, decimals=1),
    }


def _band_line(band: Mapping[str, Any], locale: Locale) -> str:
    """'usually 95\u2013130 for Tue, 10:00\u201311:00 (median 112 of 8 weeks)', in the locale."""
    _ = translations(locale).gettext
    start = datetime.fromisoformat(band["from"])
    end = datetime.fromisoformat(band["to"])
    same_day = end.date() == start.date() or end.time() == end.time().min
    when = "\u2013".join(
        (
            format_datetime(start, locale, "EEEE Hm"),
            format_datetime(end, locale, "Hm" if same_day else "EEEE Hm"),
        )
    )
    return _("usually %(low)s\u2013%(high)s for %(when)s (median %(usual)s of %(weeks)d weeks)") % {
        "low": _number(band.get("low"), locale),
        "high": _number(band.get("high"), locale),
        "usual": _number(band.get("usual"), locale),
        "weeks": int(band.get("weeks", 0)),
        "when": when,
    }


def body(payload: Mapping[str, Any], *, markdown: bool = False, locale: Locale = Locale.en) -> str:
    lines = [_alert_line(a, markdown=markdown, locale=locale) for a in payload.get("alerts", [])]
    link = payload.get("externalURL")
    if link:
        lines.append(f"{link}/v1/alerts")
    return "\n".join(lines)
