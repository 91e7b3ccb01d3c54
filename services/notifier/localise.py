"""Dates and times as the patient reads them: in their language and their zone (Babel, CLDR).

"2026 m. kovo 4 d. 15:00" or "March 4, 2026, 3:00 PM" (and so in ru, bg), never ISO.
CLDR's narrow and non-breaking spaces become plain spaces: they are not in the GSM-7
alphabet and would turn an English SMS into UCS-2 (more segments for the same words).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton, format_time, get_datetime_format

_SPACES = str.maketrans({"\u202f": " ", "\u00a0": " "})


def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(language.split("-", 1)[0]) if "-" in language else Locale("en")


def _day(local: datetime, locale: Locale, short: bool) -> str:
    if short:  # without the year ("4 марта", "kovo 4 d."): an SMS about this season
        return str(format_skeleton("MMMMd", local, locale=locale))
    return str(format_date(local.date(), "long", locale=locale))


def format_visit_date(moment: datetime, zone: str, language: str, *, short: bool = False) -> str:
    """The day of ``moment`` in ``zone``, written out in ``language`` ("kovo 4 d.")."""
    local = moment.astimezone(ZoneInfo(zone))
    return _day(local, _locale(language), short).translate(_SPACES)


def format_visit_time(moment: datetime, zone: str, language: str, *, short: bool = False) -> str:
    """Day and time of ``moment`` in ``zone``, as ``language`` writes them."""
    locale = _locale(language)
    local = moment.astimezone(ZoneInfo(zone))
    day = _day(local, locale, short)
    clock = format_time(local.time(), "short", locale=locale)
    # CLDR's pattern joining date and time ("{1}, {0}", "{1} 'at' {0}"), as Babel does.
    pattern = str(get_datetime_format("medium", locale=locale)).replace("'", "")
    return pattern.replace("{0}", clock).replace("{1}", day).translate(_SPACES)
