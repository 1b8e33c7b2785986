"""shared.i18n: the locale setting, the format helpers and the catalogues.

The catalogue tests extract the messages from the code as `make i18n` does and fail when a
string is new (not in the zh-CN catalogue), untranslated, gone from the code, or when the
committed .mo is not the compiled .po.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from pydantic import ValidationError

from shared.i18n import (
    LOCALE_DIR,
    Locale,
    format_currency,
    format_date,
    format_datetime,
    format_interval,
    format_number,
    format_percent,
    install,
    term,
    translations,
)
from shared.settings import BaseServiceSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ZH = Locale.zh_CN


# -- the setting ----------------------------------------------------------------------------


def test_locale_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert BaseServiceSettings().locale is Locale.en
    for spelling in ("zh-CN", "zh_CN", "zh-cn"):
        monkeypatch.setenv("PACEKEEPER_LOCALE", spelling)
        assert BaseServiceSettings().locale is ZH
    monkeypatch.setenv("PACEKEEPER_LOCALE", "fr")
    with pytest.raises(ValidationError, match=r"locale\n.*'en' or 'zh-CN'"):
        BaseServiceSettings()


# -- formats (expectations written out, not computed with Babel) ----------------------------


def test_numbers_and_percentages() -> None:
    assert format_number(1234567.891, ZH) == "1,234,567.891"
    assert format_number(1234.5, Locale.en, decimals=2) == "1,234.50"
    assert format_number(0.00412, ZH, max_decimals=6) == "0.00412"
    assert format_number(-3, ZH, decimals=0) == "-3"
    assert format_percent(0.1234, ZH, decimals=1) == "12.3%"
    assert format_percent(0.5, Locale.en) == "50%"


def test_currency_symbols_follow_the_locale() -> None:
    # The locale's own currency gets the bare symbol, another one a marked symbol.
    assert format_currency(1234.5, "CNY", ZH) == "¥1,234.50"
    assert format_currency(1234.5, "USD", ZH) == "US$1,234.50"
    assert format_currency(1234.5, "USD", Locale.en) == "$1,234.50"
    assert format_currency(1234.5, "CNY", Locale.en) == "CN¥1,234.50"
    assert format_currency(-20, "EUR", ZH) == "-€20.00"
    assert format_currency(123456.7, "CNY", ZH, decimals=0) == "¥123,457"
    assert format_currency(1500, "JPY", Locale.en) == "¥1,500"  # no minor unit


def test_dates() -> None:
    day = date(2026, 11, 3)
    assert format_date(day, ZH, "yMMMd") == "2026年11月3日"
    assert format_date(day, Locale.en, "yMMMd") == "Nov 3, 2026"
    assert format_date(day, ZH, "yMMMM") == "2026年11月"
    assert format_date(day, ZH, "yQQQ") == "2026年第4季度"
    moment = datetime(2026, 11, 3, 6, 5, tzinfo=UTC)
    shanghai = ZoneInfo("Asia/Shanghai")
    assert format_datetime(moment, ZH, "MMMd Hm", zone=shanghai) == "11月3日 14:05"
    assert format_datetime(moment, Locale.en, "MMMd Hm", zone=shanghai) == "Nov 3, 14:05"
    # CLDR puts thin spaces around the en dash.
    interval = format_interval(date(2026, 11, 1), date(2026, 11, 30), ZH)
    assert interval == "2026年11月1日\u2009\u2013\u200930日"


def test_terms() -> None:
    assert term("at_risk", ZH) == "有风险"
    assert term("page", ZH) == "紧急"
    assert term("page", Locale.en) == "page"  # the translators' hint is not shown
    assert term("firing", Locale.en) == "firing"
    assert term("something-else", ZH) == "something-else"


def test_english_is_the_source_and_chinese_comes_from_the_catalogue() -> None:
    assert translations(Locale.en).gettext("Goal attainment") == "Goal attainment"
    assert translations(ZH).gettext("Goal attainment") == "目标达成情况"
    assert translations("zh_CN") is translations(ZH)  # cached, whatever the spelling


def test_install_in_a_jinja_environment() -> None:
    env = install(jinja2.Environment(autoescape=True), ZH)
    template = env.from_string(
        "{{ _('Goal attainment') }}|{% trans %}Target{% endtrans %}|"
        "{{ ngettext('%(num)s alert', '%(num)s alerts', 3) }}|"
        "{{ 1234.5|currency('CNY') }}|{{ 0.125|percent(1) }}|{{ 9876|number }}|"
        "{{ day|date('yMMMd') }}|{{ none|number }}|{{ term('missed') }}|{{ locale }}"
    )
    assert template.render(day=date(2026, 11, 3)) == (
        "目标达成情况|目标值|共 3 条告警|¥1,234.50|12.5%|9,876|2026年11月3日|—|未达成|zh-CN"
    )


# -- the catalogues -------------------------------------------------------------------------


def _extract(tmp_path: Path) -> Catalog:
    pot = tmp_path / "pacekeeper.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "-q", "extract", "-F", "babel.cfg",
         "-o", str(pot), "."],
        cwd=ROOT, check=True, timeout=300,
    )  # fmt: skip
    with pot.open("rb") as fp:
        return read_po(fp)


def _catalogue(locale: Locale) -> Catalog:
    path = LOCALE_DIR / locale.gettext_name / "LC_MESSAGES" / "pacekeeper.po"
    with path.open("rb") as fp:
        return read_po(fp, locale=locale.gettext_name)


def _key(message: object) -> tuple[object, str | None]:
    return (message.id, message.context)  # type: ignore[attr-defined]  # babel Message


def test_the_catalogue_is_current_and_complete(tmp_path: Path) -> None:
    """A string added to the code without its translation fails here: run `make i18n`,
    translate the new entries in shared/locale/zh_CN/LC_MESSAGES/pacekeeper.po, and run
    `make i18n` again to compile."""
    code = {_key(m) for m in _extract(tmp_path) if m.id}
    zh = _catalogue(ZH)
    catalogued = {_key(m) for m in zh if m.id}
    assert not zh.obsolete, "obsolete entries: run `make i18n`"
    assert code - catalogued == set(), "new strings: run `make i18n` and translate them"
    assert catalogued - code == set(), "strings gone from the code: run `make i18n`"
    untranslated = [
        m.id
        for m in zh
        if m.id and (m.fuzzy or not all(m.string if m.pluralizable else [m.string]))
    ]
    assert untranslated == []


_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]")


def test_translations_keep_the_placeholders() -> None:
    for message in _catalogue(ZH):
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        wanted = set(_PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            assert set(_PLACEHOLDER.findall(string)) == wanted, message.id


def test_the_compiled_catalogue_is_the_po_compiled() -> None:
    compiled = io.BytesIO()
    write_mo(compiled, _catalogue(ZH))
    path = LOCALE_DIR / ZH.gettext_name / "LC_MESSAGES" / "pacekeeper.mo"
    assert path.read_bytes() == compiled.getvalue(), "run `make i18n` to compile the .po"
