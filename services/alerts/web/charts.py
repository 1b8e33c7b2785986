"""Inline SVG charts: no JavaScript and no image requests, so a page reads the same with
scripts off, prints, and updates by swapping HTML.

Coordinates are computed here; colours come from the page's CSS classes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

from services.alerts.evaluation.readings import PathPoint

Point = tuple[float, float]


def _scale(low: float, high: float, size: float, pad: float) -> tuple[float, float]:
    """(factor, offset) mapping [low, high] onto [size - pad, pad] (SVG's y grows down)."""
    if high - low <= 1e-12:
        return 0.0, size / 2
    factor = (size - 2 * pad) / (high - low)
    return -factor, size - pad + low * factor


def _runs(points: Sequence[Point | None]) -> list[list[Point]]:
    """Consecutive known points; a gap (None) starts a new run so it shows as a gap."""
    runs: list[list[Point]] = [[]]
    for p in points:
        if p is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if r]


def _path(runs: list[list[Point]]) -> str:
    return " ".join(
        "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in run) for run in runs if len(run) > 1
    )


def _finite(value: float | None) -> float | None:
    """The value when it can be drawn; None for a gap (missing, NaN or infinite)."""
    return value if value is not None and math.isfinite(value) else None


def sparkline(values: Sequence[float | None], *, width: int = 140, height: int = 32) -> Markup:
    """The series' shape between its own minimum and maximum, the last point marked."""
    drawable = [_finite(v) for v in values]
    known = [v for v in drawable if v is not None]
    if len(values) < 2 or not known:
        return Markup(
            f'<svg class="spark" width="{width}" height="{height}" aria-hidden="true"></svg>'
        )
    fy, oy = _scale(min(known), max(known), height, 3)
    step = (width - 4) / (len(values) - 1)
    points = [
        (2 + i * step, v * fy + oy) if v is not None else None for i, v in enumerate(drawable)
    ]
    runs = _runs(points)
    last = runs[-1][-1]
    return Markup(
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' aria-hidden="true"><path class="line" d="{_path(runs)}"/>'
        f'<circle class="dot" cx="{last[0]:.1f}" cy="{last[1]:.1f}" r="2.2"/></svg>'
    )


def pacing_chart(
    path: Sequence[PathPoint],
    *,
    target: float | None,
    projection: float | None,
    width: int = 320,
    height: int = 120,
    label: str = "",
) -> Markup:
    """A goal's period: its value so far (solid), the pacing path to the target (dashed),
    the target (a rule across) and the projection (dotted, from now to the period's end)."""
    if len(path) < 2:
        return Markup("")
    start, end = path[0].time.timestamp(), path[-1].time.timestamp()
    span = max(end - start, 1.0)
    target, projection = _finite(target), _finite(projection)
    candidates = (*(p.value for p in path), *(p.expected for p in path), target, projection)
    numbers = [n for n in map(_finite, candidates) if n is not None]
    if not numbers:
        return Markup("")
    low, high = min([0.0, *numbers]), max(numbers) * 1.05 or 1.0
    fy, oy = _scale(low, high, height, 6)

    def x(t: datetime) -> float:
        return 4 + (t.timestamp() - start) / span * (width - 8)

    def y(v: float) -> float:
        return v * fy + oy

    def point(t: datetime, v: float | None) -> Point | None:
        v = _finite(v)
        return None if v is None else (x(t), y(v))

    value_pts = [point(p.time, p.value) for p in path]
    expected_pts = [point(p.time, p.expected) for p in path]
    parts = [
        f'<svg class="pacing" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' role="img" aria-label="{escape(label)}">'
    ]
    if target is not None:
        parts.append(
            f'<line class="target" x1="4" x2="{width - 4}" y1="{y(target):.1f}"'
            f' y2="{y(target):.1f}"/>'
        )
    parts.append(f'<path class="expected" d="{_path(_runs(expected_pts))}"/>')
    runs = _runs(value_pts)
    parts.append(f'<path class="value" d="{_path(runs)}"/>')
    if runs and projection is not None:
        last = runs[-1][-1]
        parts.append(
            f'<line class="projection" x1="{last[0]:.1f}" y1="{last[1]:.1f}"'
            f' x2="{width - 4}" y2="{y(projection):.1f}"/>'
        )
        parts.append(f'<circle class="now" cx="{last[0]:.1f}" cy="{last[1]:.1f}" r="3"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def series_chart(
    points: Sequence[tuple[datetime, float | None]],
    *,
    width: int = 900,
    height: int = 260,
    label: str = "",
) -> Markup:
    """A KPI over a window, large, with its range marked on the left edge."""
    drawable = [(t, _finite(v)) for t, v in points]
    known = [v for _, v in drawable if v is not None]
    if len(points) < 2 or not known:
        return Markup("")
    low, high = min(0.0, *known), max(known) * 1.05 or 1.0
    fy, oy = _scale(low, high, height, 10)
    start, end = points[0][0].timestamp(), points[-1][0].timestamp()
    span = max(end - start, 1.0)
    pts = [
        (50 + (t.timestamp() - start) / span * (width - 60), v * fy + oy) if v is not None else None
        for t, v in drawable
    ]
    grid = "".join(
        f'<line class="grid" x1="50" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}"/>'
        for y in (low * fy + oy, high * fy + oy)
    )
    return Markup(
        f'<svg class="series" width="100%" viewBox="0 0 {width} {height}" role="img"'
        f' aria-label="{escape(label)}">{grid}<path class="line" d="{_path(_runs(pts))}"/></svg>'
    )
