"""The review as a person sees it: the HTML in headless Chromium, the PDF as page images.

Integration: real Debian programs (no Kafka or PostgreSQL). The numbers come from fixture
data; test_report_db.py checks them against the real `kpi_value`.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from services.demo.formatting import format_value
from services.demo.report import ReportFormat
from services.demo.report_render import write_report
from tests.demo.conftest import chromium_args
from tests.demo.fakes import november

pytestmark = pytest.mark.integration


def looks_like_a_page(png: Path, *, min_height: int) -> None:
    """Not blank, not a stub: tall enough, and mostly white with ink on it."""
    image = imread(png)
    height, width = image.shape[:2]
    assert width >= 800
    assert height >= min_height
    gray = image[..., :3].mean(axis=2)
    assert (gray > 0.95).mean() > 0.5  # a report page is mostly paper ...
    assert (gray < 0.5).mean() > 0.003  # ... with text and charts on it
    assert len(np.unique((gray * 255).astype(int))) > 50  # antialiased text, charts, colours


def test_html_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    data = asyncio.run(november())
    html = tmp_path / "review.html"
    write_report(data, ReportFormat.html, html)
    base = chromium_args(chromium, tmp_path / "profile")
    dom = subprocess.run(
        [*base, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for row in data.goals:  # what the browser laid out, not only what the file holds
        assert row.goal in dom.stdout
        assert format_value(row.value, row.unit) in dom.stdout
    assert dom.stdout.count("<img ") == 5

    png = tmp_path / "review.png"
    shot = subprocess.run(
        [*base, "--window-size=1200,2400", f"--screenshot={png}", html.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert "bytes written to file" in shot.stderr
    looks_like_a_page(png, min_height=2400)


def test_pdf_pages_render(pdftoppm: str, tmp_path: Path) -> None:
    pdf = tmp_path / "review.pdf"
    write_report(asyncio.run(november()), ReportFormat.pdf, pdf)
    # 110 dpi: an A4 page is 910 x 1286 pixels.
    subprocess.run([pdftoppm, "-r", "110", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert 1 <= len(pages) <= 4  # an A4 review, not a runaway layout
    looks_like_a_page(pages[0], min_height=1200)
