"""The report's charts: a goal's period so far against its target line and pacing path,
drawn with matplotlib as PNG."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from matplotlib.dates import AutoDateLocator, DateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from services.demo.formatting import RATIO_UNITS, format_value

Points = list[tuple[datetime, float]]
BLUE, GREY, INK, LIGHT = "#2563eb", "#9ca3af", "#111827", "#93c5fd"


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


def render_chart(chart: ChartData, zone: ZoneInfo) -> bytes:
    """A PNG of the KPI to date, the goal line, the pacing path and the projection."""
    fig = Figure(figsize=(6.2, 2.6), dpi=120)
    ax = fig.subplots()
    if chart.steps:
        ax.plot(*_xy(chart.steps), "o", color=LIGHT, markersize=3, label="per step", zorder=1)
    if chart.pacing:
        ax.plot(*_xy(chart.pacing), "--", color=GREY, linewidth=1.3, label="pacing path", zorder=2)
    if chart.target is not None:
        ax.axhline(chart.target, color=INK, linestyle=":", linewidth=1.2, label="target", zorder=2)
    if chart.actual:
        label = "to date" if chart.cumulative else "period to date"
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
                label="projection",
                zorder=3,
            )
    ax.set_xlim(_daynum(chart.start), _daynum(chart.end))
    # matplotlib.dates has no annotations for these two constructors.
    locator = AutoDateLocator(minticks=3, maxticks=8, tz=zone)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    length = chart.end - chart.start
    pattern = "%H:%M" if length <= timedelta(days=2) else "%d %b"
    ax.xaxis.set_major_formatter(DateFormatter(pattern, tz=zone))  # type: ignore[no-untyped-call]
    ax.yaxis.set_major_formatter(FuncFormatter(axis_formatter(chart.unit, ax.get_ylim())))
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


def axis_formatter(unit: str, limits: tuple[float, float]) -> Callable[[float, object], str]:
    """Tick labels in the KPI's unit, with enough decimals to tell neighbouring ticks apart
    (a ratio axis from 2.80% to 2.82% must not read 2.8% five times)."""
    span = abs(limits[1] - limits[0])
    if unit in RATIO_UNITS and span > 0:
        decimals = max(0, min(4, math.ceil(-math.log10(span * 100 / 5))))
        return lambda v, _: f"{v * 100:.{decimals}f}%"
    return lambda v, _: format_value(v, unit)


def png_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
