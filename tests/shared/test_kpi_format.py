"""KPI values as the report and both scorecards show them, in each locale."""

from __future__ import annotations

import pytest

from shared.i18n import Locale
from shared.kpi_format import format_change, format_value

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "unit", "locale", "expected"),
    [
        (234.5, "USD", Locale.en, "$234.50"),
        (123456, "USD", Locale.en, "$123,456"),
        (234.5, "USD", Locale.zh_CN, "US$234.50"),
        (1234.5, "CNY", Locale.zh_CN, "¥1,234"),
        (0.1234, "ratio", Locale.en, "12.3%"),
        (12345, "", Locale.zh_CN, "12,345"),
        (2.5, "points", Locale.en, "2.50"),
        (42, "tickets", Locale.en, "42 tickets"),
        (75, "s", Locale.en, "75 s"),
        (5400, "s", Locale.en, "1.5 h"),
        (None, "USD", Locale.en, "—"),
        (float("nan"), "", Locale.en, "—"),
    ],
)
def test_kpi_values_read_as_people_write_them(
    value: float | None, unit: str, locale: Locale, expected: str
) -> None:
    assert format_value(value, unit, locale) == expected


def test_changes_carry_their_direction() -> None:
    assert format_change(0.125, Locale.en) == "▲ +12.5%"
    assert format_change(-0.03, Locale.en) == "▼ -3.0%"
    assert format_change(0.0, Locale.en) == "■ +0.0%"
    assert format_change(None, Locale.en) == "—"
