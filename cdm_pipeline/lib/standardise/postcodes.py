"""Postcodes in each country's canonical form, validated where the format is known.

Addresses are matched and deduplicated on postcode, so ``sw1a1aa``, ``SW1A  1AA`` and
``SW1A 1AA`` must be one value. For countries with a known format the value is brought into
the official layout (``SW1A 1AA``, ``12345-6789``, ``A65 F4E2``, ``1234 AB``) and checked;
elsewhere it is only upper-cased and its whitespace collapsed, because a wrong rule for a
country we do not know would flag good data.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from . import BLANK, Standardised
from .countries import standardise_country

ISSUE = "invalid_postcode"

# Outward code (area, district) then inward code (sector digit, unit letters), spaces removed.
# Letters follow Royal Mail's rules: no Q/V/X first, no I/J/Z second, no C/I/K/M/O/V inward.
_GB = re.compile(
    r"(?:[A-PR-UWYZ](?:[0-9][0-9]?|[A-HK-Y][0-9][0-9]?|[0-9][A-HJKPSTUW]|[A-HK-Y][0-9][ABEHMNPRVWXY])"
    r"|GIR)[0-9][ABD-HJLNP-UW-Z]{2}"
)
_US = re.compile(r"([0-9]{5})(?:-?([0-9]{4}))?")
# Eircode: routing key (letter + two digits, or D6W) and a four-character unique identifier.
_IE = re.compile(r"([AC-FHKNPRTV-Y][0-9]{2}|D6W)([0-9AC-FHKNPRTV-Y]{4})")
# Dutch: four digits (no leading zero) and two letters; SA, SD and SS are never issued.
_NL = re.compile(r"([1-9][0-9]{3})(?!SA|SD|SS)([A-Z]{2})")
# Five digits, optionally behind the old European country prefix ("D-10115", "F-75001").
_FIVE_DIGITS = {
    code: re.compile(rf"(?:(?:{letter}|{code})-?)?([0-9]{{5}})")
    for code, letter in {"DE": "D", "FR": "F", "ES": "E", "IT": "I"}.items()
}
_INVISIBLE = str.maketrans("", "", "\u200b\u200c\u200d\u2060\ufeff")


@functools.lru_cache(maxsize=1024)
def _country(country: str | None) -> str | None:
    """The alpha-2 code for the country argument (codes, names and aliases all work)."""
    if country is None:
        return None
    code, issue = standardise_country(country)
    return None if issue else code


def _gb(compact: str) -> str | None:
    return f"{compact[:-3]} {compact[-3:]}" if _GB.fullmatch(compact) else None


def _us(compact: str) -> str | None:
    if len(compact) == 4 and compact.isdigit():
        compact = "0" + compact  # a spreadsheet dropped the leading zero of 02134
    match = _US.fullmatch(compact)
    if match is None:
        return None
    zip5, plus4 = match.groups()
    return f"{zip5}-{plus4}" if plus4 else zip5


def _five_digits(compact: str, country: str) -> str | None:
    match = _FIVE_DIGITS[country].fullmatch(compact)
    return match[1] if match else None


def _ie(compact: str) -> str | None:
    match = _IE.fullmatch(compact)
    return f"{match[1]} {match[2]}" if match else None


def _nl(compact: str) -> str | None:
    match = _NL.fullmatch(compact)
    return f"{match[1]} {match[2]}" if match else None


_FORMATS = {
    "GB": _gb,
    "US": _us,
    "IE": _ie,
    "NL": _nl,
    **{code: functools.partial(_five_digits, country=code) for code in _FIVE_DIGITS},
}


def standardise_postcode(raw: str | None, country: str | None) -> Standardised:
    """Standardise a postcode for the record's country.

    Args:
        raw: The postcode as exported, e.g. ``"sw1a1aa"`` or ``" 2134 "``.
        country: ISO alpha-2 code of the address (names and aliases such as ``UK`` work too).
            GB, US, IE, NL, DE, FR, ES and IT are formatted and validated; other or unknown
            countries (and None) only get upper case and collapsed whitespace.

    Returns:
        ``("SW1A 1AA", None)`` and the like; ``(raw, "invalid_postcode")`` when the value does
        not fit the country's format; ``(None, None)`` for None or blank input.
    """
    if raw is None:
        return BLANK
    if raw.isascii():
        text = raw.upper()
    else:  # full-width digits and letters; upper case can decompose letters, so NFKC again
        text = unicodedata.normalize("NFKC", raw).translate(_INVISIBLE).upper()
        text = unicodedata.normalize("NFKC", text)
    text = " ".join(text.split())
    if not text:
        return BLANK
    check = _FORMATS.get(_country(country) or "")
    if check is None:
        return Standardised(text, None)
    clean = check(text.replace(" ", ""))
    if clean is None:
        return Standardised(raw, ISSUE)
    return Standardised(clean, None)
