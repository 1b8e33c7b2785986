"""Languages: message catalogues and the locale's number, currency and date formats.

Pacekeeper speaks English (the source strings) and Simplified Chinese. The setting is
`PACEKEEPER_LOCALE=en|zh-CN` (`BaseServiceSettings.locale`); the catalogues are
`shared/locale/<ll_CC>/LC_MESSAGES/pacekeeper.po` with their compiled `.mo` next to them
(`make i18n` extracts, updates and compiles; `tests/shared/test_i18n.py` fails when a
catalogue is behind the code).

The whole API, for the report, the web scorecard and the notifications:

    from shared.i18n import Locale, install, translations, format_number, ...

    _ = translations(Locale.zh_CN).gettext        # Python code: _("Goal attainment")
    install(env, Locale.zh_CN)                    # a Jinja2 Environment, once per locale:
        # {% trans %}…{% endtrans %}, {{ _("…") }}, {{ ngettext("%(num)d alert", …, n) }}
        # (newstyle gettext: %(name)s placeholders filled from keyword arguments), and the
        # filters number, percent, currency, date, datetime, interval below with the
        # locale bound; the globals `locale` (the `Locale`) and `term` (below).
    format_number(1234.5, locale, decimals=2)     # "1,234.50"
    format_percent(0.1234, locale, decimals=1)    # "12.3%"
    format_currency(1234.5, "CNY", locale)        # en "CN¥1,234.50", zh-CN "¥1,234.50"
    format_date(day, locale, "yMMMd")             # en "Nov 3, 2026", zh-CN "2026年11月3日"
    format_datetime(t, locale, "MMMd Hm", zone=z) # en "Nov 3, 14:05", zh-CN "11月3日 14:05"
    format_interval(first, last, locale)          # en "Nov 1 - 30, 2026" (an en dash)
    term("at_risk", locale)                       # en "at risk", zh-CN "有风险" (TERMS)

Strings defined before a locale is known (module constants) are marked with `N_("…")` so
extraction finds them, and translated where they are shown: `_(CONSTANT)`.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

# Babel and Jinja2 load on first use: every service imports this module with its settings
# (`Locale`), and most never format a number or render a template (~170 ms on 2 cores).
if TYPE_CHECKING:
    import babel
    import jinja2
    from babel.support import NullTranslations

DOMAIN = "pacekeeper"
LOCALE_DIR = Path(__file__).parent / "locale"
_DATE_WIDTHS = {"short", "medium", "long", "full"}


class Locale(StrEnum):
    """The languages Pacekeeper is translated into, spelled as in `PACEKEEPER_LOCALE`."""

    en = "en"
    zh_CN = "zh-CN"

    @classmethod
    def _missing_(cls, value: object) -> Locale | None:
        # zh_CN, zh-cn, ZH-CN: the same locale (gettext and browsers spell it differently).
        if isinstance(value, str):
            wanted = value.strip().replace("_", "-").lower()
            for member in cls:
                if member.value.lower() == wanted:
                    return member
        return None

    @property
    def babel(self) -> babel.Locale:
        """Babel's locale data (CLDR) for formats."""
        return _babel_locale(self)

    @property
    def gettext_name(self) -> str:
        """The catalogue directory name: `zh_CN`."""
        return self.value.replace("-", "_")


DEFAULT_LOCALE = Locale.en


@cache
def _babel_locale(locale: Locale) -> babel.Locale:
    import babel

    return babel.Locale.parse(locale.gettext_name)


def N_(message: str) -> str:
    """Mark `message` for extraction without translating it (yet)."""
    return message


def translations(locale: Locale | str = DEFAULT_LOCALE) -> NullTranslations:
    """The catalogue of `locale`: `gettext`, `ngettext`, `pgettext` and friends.

    English is the source language and has no catalogue: its strings come back as written.
    A missing compiled catalogue is an error rather than a silent fallback to English.
    """
    return _translations(Locale(locale))


@cache
def _translations(locale: Locale) -> NullTranslations:
    from babel.support import NullTranslations, Translations

    if locale is Locale.en:
        return NullTranslations()
    path = LOCALE_DIR / locale.gettext_name / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not path.is_file():
        raise FileNotFoundError(f"no compiled catalogue for {locale}: {path} (run `make i18n`)")
    with path.open("rb") as fp:
        return Translations(fp, domain=DOMAIN)


# The words the services share (goal status, alert severity and state): the English
# spellings are the API's values, translated where a person reads them.
TERMS = {
    "achieved": N_("achieved"),
    "on_track": N_("on track"),
    "at_risk": N_("at risk"),
    "off_track": N_("off track"),
    "missed": N_("missed"),
    "no_data": N_("no data"),
    "page": N_("severity: page"),
    "ticket": N_("severity: ticket"),
    "info": N_("severity: info"),
    "inactive": N_("inactive"),
    "pending": N_("pending"),
    "firing": N_("firing"),
    "resolved": N_("resolved"),
}


def term(value: str, locale: Locale | str = DEFAULT_LOCALE) -> str:
    """A status, severity or alert state as a person reads it: `at_risk` -> en "at risk",
    zh-CN "有风险"; an unknown value unchanged."""
    message = TERMS.get(value)
    if message is None:
        return value
    text = translations(locale).gettext(message)
    # "severity: page" only tells translators which "page" is meant.
    return text.removeprefix("severity: ")


# -- formats --------------------------------------------------------------------------------


def _pattern(decimals: int) -> str:
    return "#,##0" + ("." + "0" * decimals if decimals > 0 else "")


def format_number(
    value: float,
    locale: Locale | str = DEFAULT_LOCALE,
    *,
    decimals: int | None = None,
    max_decimals: int = 3,
) -> str:
    """Grouped digits in the locale's symbols; `decimals` fixes the fraction digits,
    otherwise as many as needed up to `max_decimals`."""
    import babel.numbers

    loc = Locale(locale).babel
    if decimals is None:
        pattern = "#,##0" + ("." + "#" * max_decimals if max_decimals > 0 else "")
        return babel.numbers.format_decimal(value, pattern, locale=loc)
    return babel.numbers.format_decimal(value, _pattern(decimals), locale=loc)


def format_percent(
    value: float, locale: Locale | str = DEFAULT_LOCALE, *, decimals: int = 0
) -> str:
    """A share as a percentage: 0.1234 -> "12.3%" with one decimal."""
    import babel.numbers

    return babel.numbers.format_percent(
        value, _pattern(decimals) + "%", locale=Locale(locale).babel
    )


def format_currency(
    value: float,
    currency: str,
    locale: Locale | str = DEFAULT_LOCALE,
    *,
    decimals: int | None = None,
) -> str:
    """An amount in the ISO `currency` with the locale's symbol for it: the local currency
    gets the plain symbol (en "$", zh-CN "¥"), another one a marked symbol (zh-CN "US$",
    en "CN¥"). `decimals` overrides the currency's usual digits (0 for large amounts)."""
    import babel.numbers

    loc = Locale(locale).babel
    if decimals is None:
        return babel.numbers.format_currency(value, currency, locale=loc)
    return babel.numbers.format_currency(
        value, currency, "¤" + _pattern(decimals), locale=loc, currency_digits=False
    )


def format_date(value: date, locale: Locale | str = DEFAULT_LOCALE, format: str = "medium") -> str:
    """`format`: a width (short, medium, long, full) or a CLDR skeleton such as `yMMMd`,
    `MMMd`, `yMMMM` (a month), `yQQQ` (a quarter)."""
    import babel.dates

    loc = Locale(locale).babel
    if format in _DATE_WIDTHS:
        return babel.dates.format_date(value, format, locale=loc)
    return babel.dates.format_skeleton(format, value, locale=loc, fuzzy=True)


def format_datetime(
    value: datetime,
    locale: Locale | str = DEFAULT_LOCALE,
    format: str = "medium",
    *,
    zone: ZoneInfo | None = None,
) -> str:
    """A moment in `zone` (default: its own). `format`: a width, a CLDR skeleton, or a
    date skeleton and a time skeleton separated by a space (`MMMd Hm`), joined the way
    the locale joins a date and a time."""
    import babel.dates

    loc = Locale(locale).babel
    if zone is not None:
        value = value.astimezone(zone)
    if format in _DATE_WIDTHS:
        return babel.dates.format_datetime(value, format, tzinfo=value.tzinfo, locale=loc)
    if " " in format:
        day, time = format.split(" ", 1)
        glue = loc.datetime_formats.get("medium", "{1} {0}")
        return str(glue).format(
            babel.dates.format_skeleton(time, value, tzinfo=value.tzinfo, locale=loc, fuzzy=True),
            babel.dates.format_skeleton(day, value, tzinfo=value.tzinfo, locale=loc, fuzzy=True),
        )
    return babel.dates.format_skeleton(format, value, tzinfo=value.tzinfo, locale=loc, fuzzy=True)


def format_interval(
    start: date, end: date, locale: Locale | str = DEFAULT_LOCALE, skeleton: str = "yMMMd"
) -> str:
    """Two days as one range, both inclusive, as CLDR writes it: en "Nov 1 - 30, 2026",
    zh-CN "2026年11月1日 - 30日" (with an en dash)."""
    import babel.dates

    return babel.dates.format_interval(start, end, skeleton, locale=Locale(locale).babel)


# -- Jinja2 ---------------------------------------------------------------------------------


def install(env: jinja2.Environment, locale: Locale | str = DEFAULT_LOCALE) -> jinja2.Environment:
    """Give `env` the catalogue of `locale` (jinja2.ext.i18n, newstyle gettext) and the
    format helpers as filters (`number`, `percent`, `currency`, `date`, `datetime`,
    `interval`). One environment per locale: the translations are bound to it."""
    locale = Locale(locale)
    env.add_extension("jinja2.ext.i18n")
    # jinja2.ext.i18n adds this method to the environment; its stubs do not know it.
    install_translations: Any = env.install_gettext_translations  # type: ignore[attr-defined]
    install_translations(translations(locale), newstyle=True)
    env.filters.update(
        number=partial(_number_filter, locale=locale),
        percent=partial(_percent_filter, locale=locale),
        currency=partial(_currency_filter, locale=locale),
        date=partial(_date_filter, locale=locale),
        datetime=partial(_datetime_filter, locale=locale),
        interval=partial(_interval_filter, locale=locale),
    )
    env.globals["locale"] = locale
    env.globals["term"] = partial(term, locale=locale)
    return env


# Filters: `None` shows as an em dash, as everywhere a KPI has no value.
_NONE = "—"


def _number_filter(value: float | None, decimals: int | None = None, *, locale: Locale) -> str:
    return _NONE if value is None else format_number(value, locale, decimals=decimals)


def _percent_filter(value: float | None, decimals: int = 0, *, locale: Locale) -> str:
    return _NONE if value is None else format_percent(value, locale, decimals=decimals)


def _currency_filter(
    value: float | None, currency: str, decimals: int | None = None, *, locale: Locale
) -> str:
    return _NONE if value is None else format_currency(value, currency, locale, decimals=decimals)


def _date_filter(value: date | None, format: str = "medium", *, locale: Locale) -> str:
    return _NONE if value is None else format_date(value, locale, format)


def _datetime_filter(
    value: datetime | None,
    format: str = "medium",
    zone: ZoneInfo | str | None = None,
    *,
    locale: Locale,
) -> str:
    if value is None:
        return _NONE
    tz = ZoneInfo(zone) if isinstance(zone, str) else zone
    return format_datetime(value, locale, format, zone=tz)


def _interval_filter(start: date, end: date, skeleton: str = "yMMMd", *, locale: Locale) -> str:
    return format_interval(start, end, locale, skeleton)
