"""The report's charts: a goal's period so far against its target line and pacing path,
drawn with matplotlib as PNG."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import matplotlib
from matplotlib import font_manager
from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from services.demo.formatting import RATIO_UNITS, format_value
from shared.i18n import Locale, format_datetime, format_number, translations

Points = list[tuple[datetime, float]]
BLUE, GREY, INK, LIGHT = "#2563eb", "#9ca3af", "#111827", "#93c5fd"
# Han characters: Noto Sans CJK from Debian's fonts-noto-cjk (`make report-deps`), or
# another common CJK font; matplotlib falls back glyph by glyph along the list, so Latin
# text keeps DejaVu Sans.
CJK_FAMILIES = ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "Noto Sans SC")
LATIN_FAMILY = "DejaVu Sans"


@cache
def font_families(locale: Locale) -> list[str]:
    """The font list a chart in `locale` is drawn with: a CJK font first for Chinese."""
    if locale is Locale.en:
        return [LATIN_FAMILY]
    found = [f for f in CJK_FAMILIES if _has_family(f)]
    if not found:
        # matplotlib keeps its font list in a cache built once; fonts installed after that
        # (report-deps on a machine that had drawn a chart before) are not in it.
        for path in font_manager.findSystemFonts():
            if any(key in path for key in ("NotoSansCJK", "SourceHanSans", "wqy-zenhei")):
                font_manager.fontManager.addfont(path)
        found = [f for f in CJK_FAMILIES if _has_family(f)]
    return [*found, LATIN_FAMILY]


def _has_family(name: str) -> bool:
    return any(f.name == name for f in font_manager.fontManager.ttflist)


@dataclass(frozen=True, slots=True)
class ChartData:
    title: str
    unit: str
    start: datetime
    end: datetime
    actual: Points
    pacing: Points
    target: float | None
    steps: Points = field(default_factory=list)  # per-step values of a level KPI
    projection: tuple[datetime, float] | None = None
    cumulative: bool = False


def _daynum(t: datetime) -> float:
    """Matplotlib's date number (days since its default epoch, 1970-01-01 UTC)."""
    return t.timestamp() / 86400


def _xy(points: Sequence[tuple[datetime, float]]) -> tuple[list[float], list[float]]:
    return [_daynum(t) for t, _ in points], [v for _, v in points]


def render_chart(chart: ChartData, zone: ZoneInfo, locale: Locale = Locale.en) -> bytes:
    """A PNG of the KPI to date, the goal line, the pacing path and the projection."""
    with matplotlib.rc_context({"font.family": font_families(locale)}):
        return _render_chart(chart, zone, locale)


def _render_chart(chart: ChartData, zone: ZoneInfo, locale: Locale) -> bytes:
    _ = translations(locale).gettext
    fig = Figure(figsize=(6.2, 2.6), dpi=120)
    ax = fig.subplots()
    if chart.steps:
        ax.plot(*_xy(chart.steps), "o", color=LIGHT, markersize=3, label=_("per step"), zorder=1)
    if chart.pacing:
        ax.plot(
            *_xy(chart.pacing), "--", color=GREY, linewidth=1.3, label=_("pacing path"), zorder=2
        )
    if chart.target is not None:
        ax.axhline(
            chart.target, color=INK, linestyle=":", linewidth=1.2, label=_("target"), zorder=2
        )
    if chart.actual:
        label = _("to date") if chart.cumulative else _("period to date")
        # A window with data only at its very end would otherwise draw an invisible line.
        marker = "o" if len(chart.actual) < 4 else ""
        ax.plot(
            *_xy(chart.actual), "-", marker=marker, markersize=4, color=BLUE, linewidth=2.2,
            label=label, zorder=3,
        )  # fmt: skip
        if chart.projection:
            ax.plot(
                *_xy([chart.actual[-1], chart.projection]),
                ":",
                color=BLUE,
                linewidth=1.6,
                label=_("projection"),
                zorder=3,
            )
    ax.set_xlim(_daynum(chart.start), _daynum(chart.end))
    # matplotlib.dates has no annotations for these two constructors.
    locator = AutoDateLocator(minticks=3, maxticks=8, tz=zone)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    length = chart.end - chart.start
    if locale is Locale.en:
        pattern = "%H:%M" if length <= timedelta(days=2) else "%d %b"
        ax.xaxis.set_major_formatter(DateFormatter(pattern, tz=zone))  # type: ignore[no-untyped-call]
    else:
        skeleton = "Hm" if length <= timedelta(days=2) else "MMMd"
        ax.xaxis.set_major_formatter(FuncFormatter(date_tick(skeleton, zone, locale)))
    ax.yaxis.set_major_formatter(FuncFormatter(axis_formatter(chart.unit, ax.get_ylim(), locale)))
    ax.set_title(chart.title, loc="left", fontsize=10, color=INK)
    ax.grid(axis="y", color="#e5e7eb", linewidth=0.8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8, colors="#374151")
    ax.legend(fontsize=7, frameon=False, loc="best", ncols=2)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def date_tick(skeleton: str, zone: ZoneInfo, locale: Locale) -> Callable[[float, object], str]:
    """Date tick labels in the locale's format (`11月3日`), from matplotlib date numbers."""

    def tick(value: float, _: object) -> str:
        moment = datetime.fromtimestamp(value * 86400, UTC)
        return format_datetime(moment, locale, skeleton, zone=zone)

    return tick


def axis_formatter(
    unit: str, limits: tuple[float, float], locale: Locale = Locale.en
) -> Callable[[float, object], str]:
    """Tick labels in the KPI's unit, with enough decimals to tell neighbouring ticks apart
    (a ratio axis from 2.80% to 2.82% must not read 2.8% five times)."""
    span = abs(limits[1] - limits[0])
    if unit in RATIO_UNITS and span > 0:
        decimals = max(0, min(4, math.ceil(-math.log10(span * 100 / 5))))
        return lambda v, _: format_number(v * 100, locale, decimals=decimals) + "%"
    return lambda v, _: format_value(v, unit, locale)


def png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
