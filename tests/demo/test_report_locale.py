"""The review in Chinese: the texts from the catalogue, the locale's formats, and a PDF whose
Han characters are drawn with Noto Sans CJK (page text read back with poppler, pages
rendered to PNG). English output is checked to stay as it was in test_report.py."""

# ruff: noqa: RUF001 - Chinese text is written with full-width punctuation

from __future__ import annotations

import asyncio
import shutil
import subprocess
import warnings
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.demo.charts import ChartData, font_families, render_chart
from services.demo.formatting import format_value
from services.demo.periods import parse_period
from services.demo.report import ReportData, ReportFormat, build_report
from services.demo.report_render import page_counter, render_markdown, write_report
from shared.i18n import Locale
from tests.demo.fakes import CONFIG, NOW, VALUES, FakeAlerts, FakeRepository
from tests.demo.test_report_render import looks_like_a_page

ZH = Locale.zh_CN


def zh_november(*, charts: bool = True) -> ReportData:
    return asyncio.run(
        build_report(
            FakeRepository(CONFIG, VALUES),
            parse_period("2026-11", NOW.date()),
            now=NOW,
            alerts_api=FakeAlerts(),  # type: ignore[arg-type]  # the one method the report calls
            charts=charts,
            locale=ZH,
        )
    )


@pytest.mark.unit
def test_markdown_in_chinese() -> None:
    data = zh_november(charts=False)
    markdown = render_markdown(data)
    assert markdown.startswith("# 绩效复盘 — 2026年11月\n")
    for heading in ("## 目标达成情况", "## 指标与2026年10月及目标对比", "## 本期告警"):
        assert heading in markdown
    assert (
        "| 目标 | 指标 | 周期 | 目标值 | 实际值 | 当前应达值 | 预计 | 达成率 | 状态 |" in markdown
    )
    # Periods, statuses, units and the foreign currency the zh-CN way.
    assert "| first-response-30m | first_response_p90 | 2026年第45周 |" in markdown
    assert "| 2026年第4季度 (进行中) |" in markdown
    assert "未达成" in markdown
    assert "有风险" in markdown
    assert "32.7 分钟" in markdown
    assert "US$6,788,152" in markdown
    assert "较2026年10月 +20%（US$9,453,631）" in markdown
    assert "| 紧急 | 11月12日 14:03 | 11月12日 14:41 | 38.0 分钟 |" in markdown
    assert "2026年11月 尚未结束：数据截至 11月20日 15:00" in data.notes[0]
    for english in ("Goal attainment", "at risk", "min", "Week", "November"):
        assert english not in markdown


@pytest.mark.unit
def test_the_pdf_footer_follows_the_translation() -> None:
    assert page_counter(Locale.en) == '"page " counter(page) " of " counter(pages)'
    assert page_counter(ZH) == '"第 " counter(page) " 页，共 " counter(pages) " 页"'


def _cjk_font_installed() -> bool:
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return False
    out = subprocess.run([fc_list, ":lang=zh-cn", "family"], capture_output=True, text=True)
    return "Noto Sans CJK SC" in out.stdout


needs_cjk_font = pytest.mark.skipif(
    not _cjk_font_installed(), reason="fonts-noto-cjk is missing (make report-deps)"
)


@pytest.mark.unit
@needs_cjk_font
def test_charts_draw_han_characters_with_a_cjk_font() -> None:
    assert font_families(ZH)[0] == "Noto Sans CJK SC"
    zone = ZoneInfo("Asia/Shanghai")
    chart = ChartData(
        title="月度营收 · 2026年11月",
        unit="CNY",
        start=datetime(2026, 11, 1, tzinfo=UTC),
        end=datetime(2026, 12, 1, tzinfo=UTC),
        actual=[(datetime(2026, 11, d, tzinfo=UTC), 1000.0 * d) for d in range(1, 20)],
        pacing=[(datetime(2026, 11, 1, tzinfo=UTC), 0.0), (datetime(2026, 12, 1, tzinfo=UTC), 3e4)],
        target=30000.0,
    )
    # matplotlib warns "Glyph ... missing from font(s)" for every character it draws as a
    # box; no warning means every Han character of the title, legend and ticks had a glyph.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png = render_chart(chart, zone, ZH)
    assert png.startswith(b"\x89PNG")


@pytest.mark.integration
@needs_cjk_font
def test_zh_pdf_text_fonts_and_pages(pdftoppm: str, tmp_path: Path) -> None:
    pdftotext, pdffonts = shutil.which("pdftotext"), shutil.which("pdffonts")
    assert pdftotext, "poppler-utils comes with pdftoppm"
    assert pdffonts, "poppler-utils comes with pdftoppm"
    data = zh_november()
    pdf = tmp_path / "review.pdf"
    write_report(data, ReportFormat.pdf, pdf)

    # The text a reader sees, read back from the laid-out pages.
    page_text = subprocess.run(
        [pdftotext, "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for expected in (
        "绩效复盘 — 2026年11月",
        "目标达成情况",
        "指标与2026年10月及目标对比",
        "本期告警",
        "达成率",
        "有风险",
        "第 1 页，共",
        "US$6,788,152",
    ):
        assert expected in page_text, expected
    for row in data.goals:
        assert format_value(row.value, row.unit, ZH) in page_text

    # The Han characters come from Noto Sans CJK, embedded: not boxes from a fallback.
    fonts = subprocess.run([pdffonts, str(pdf)], capture_output=True, text=True, check=True)
    embedded = [line for line in fonts.stdout.splitlines()[2:] if "Noto-Sans-CJK-SC" in line]
    assert embedded, fonts.stdout
    assert all(line.split()[-5] == "yes" for line in embedded)  # the `emb` column

    subprocess.run([pdftoppm, "-r", "110", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert 1 <= len(pages) <= 4
    looks_like_a_page(pages[0], min_height=1200)
