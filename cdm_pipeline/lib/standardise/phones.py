"""Phone numbers to E.164 (``+442079460018``) with Google's libphonenumber rules.

People type numbers in every national style (``020 7946 0018``, ``(415) 555-2671``,
``0162/77638272``, ``+44 (0)20 ...``, ``0044 ...``); only E.164 lets two sources agree on one
number. Numbers without a country code are read in the record's region (its country, or the
configured default); only numbers that libphonenumber considers valid for their region are
accepted, which rejects placeholders such as ``0000000000`` and too-short/too-long typos.

Parsing costs ~10 µs per number, so it is done once per distinct canonical form of the input
(``(415) 555-2671``, ``415-555-2671`` and ``415.555.2671`` are one parse) and remembered.
Validation gives exactly libphonenumber's answer at a sixth of its cost (see is_valid_number).
"""

from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumber, PhoneNumberFormat
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, REGION_CODE_FOR_NON_GEO_ENTITY

from . import BLANK, Standardised, _Memo, _trim
from .countries import standardise_country

ISSUE = "invalid_phone"

# How many distinct canonical numbers to remember (about 150 bytes each: up to ~150 MB).
CACHE_SIZE = 1 << 20
_PARSED = _Memo(CACHE_SIZE)  # "canonical text\x1fregion" -> E.164, or "" when not valid

# Inputs made only of digits, a leading plus and separators are reduced to their digits before
# parsing, so different typings of one number share a cache entry. Anything else (letters of
# an extension or vanity number, several numbers) goes to libphonenumber as it is.
_SIMPLE = re.compile(r"\+?[\d\s().\-/]+")
_NOT_DIGIT = re.compile(r"\D")


@functools.lru_cache(maxsize=1024)
def _region(region: str | None) -> str | None:
    """The libphonenumber region for a record's country, or None to require a country code."""
    if region is None:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        # Accept the same spellings as the country column ("UK", "Deutschland", ...).
        code, issue = standardise_country(region)
        code = None if issue else code
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


# --- Validation --------------------------------------------------------------------------------
# phonenumbers.is_valid_number costs as much as parsing (~11 µs): for every candidate region it
# tries up to eleven number types one by one, each a Python call around a regex. The functions
# below give the same answer (the tests compare them with phonenumbers on every region's example
# numbers and on random digit strings) with one combined regex per region and number length.

# The number types _number_type_helper tries after general_desc; any match makes a number valid.
_TYPE_DESCS = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager",
               "uan", "voicemail", "fixed_line", "mobile")
_NOT_COMBINABLE = re.compile(r"\\[1-9]|\(\?P|\(\?[aiLmsux]")  # back-references, named groups, flags
# (general_desc pattern, the type patterns as one regex or several) per (metadata, length).
_Check = tuple[re.Pattern[str], "re.Pattern[str] | tuple[re.Pattern[str], ...]"]
_KNOWN_TYPE: dict[tuple[int, int], _Check | None] = {}


def _lengths_fit(desc: object, length: int) -> bool:
    possible = desc.possible_length  # type: ignore[attr-defined]
    return not possible or length in possible


def _known_type_pattern(metadata: PhoneMetadata, length: int) -> _Check | None:
    """What a national number of ``length`` digits must fully match to have a known type."""
    key = (id(metadata), length)  # metadata objects live as long as the process
    if key in _KNOWN_TYPE:
        return _KNOWN_TYPE[key]
    patterns = []
    general = metadata.general_desc
    if general is not None and general.national_number_pattern and _lengths_fit(general, length):
        for name in _TYPE_DESCS:
            if name == "mobile" and metadata.same_mobile_and_fixed_line_pattern:
                continue  # then mobile numbers are exactly the fixed-line matches
            desc = getattr(metadata, name)
            if desc is not None and desc.national_number_pattern and _lengths_fit(desc, length):
                patterns.append(desc.national_number_pattern)
    check: _Check | None = None
    if patterns:
        types: re.Pattern[str] | tuple[re.Pattern[str], ...]
        if any(_NOT_COMBINABLE.search(p) for p in patterns):
            types = tuple(re.compile(p) for p in patterns)
        else:  # (?:a)|(?:b) fully matches exactly when a or b does
            types = re.compile("|".join(f"(?:{p})" for p in patterns))
        check = (re.compile(general.national_number_pattern), types)
    _KNOWN_TYPE[key] = check
    return check


def _has_known_type(nsn: str, metadata: PhoneMetadata) -> bool:
    """``phonenumbers._number_type_helper(nsn, metadata) != UNKNOWN``, faster."""
    entry = _known_type_pattern(metadata, len(nsn))
    if entry is None:
        return False
    general, types = entry
    if not general.fullmatch(nsn):
        return False
    if isinstance(types, tuple):
        return any(p.fullmatch(nsn) for p in types)
    return types.fullmatch(nsn) is not None


def is_valid_number(number: PhoneNumber) -> bool:
    """Same result as ``phonenumbers.is_valid_number`` (same steps, faster type check)."""
    country_code = number.country_code
    regions = COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if regions is None:
        return False
    nsn = phonenumbers.national_significant_number(number)
    if len(regions) == 1:
        region = regions[0]
    else:
        # phonenumbers.region_code_for_number: the first region whose leading digits match,
        # or (for regions without leading digits) whose number types know the number.
        region = None
        for candidate in regions:
            metadata = PhoneMetadata.metadata_for_region(candidate.upper(), None)
            if metadata is None:
                continue
            if metadata.leading_digits is not None:
                if re.match(metadata.leading_digits, nsn):
                    region = candidate
                    break
            elif _has_known_type(nsn, metadata):
                region = candidate
                break
        if region is None:
            return False
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
    if metadata is None:
        return False
    if region != REGION_CODE_FOR_NON_GEO_ENTITY and metadata.country_code != country_code:
        return False
    return _has_known_type(nsn, metadata)


# --- Parsing -----------------------------------------------------------------------------------


def _parse(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not is_valid_number(number):
        return None
    # E.164 has no room for extensions ("ext. 12", "x12"): they are dropped.
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _e164(text: str, region: str | None) -> str | None:
    """E.164 of ``text`` read in ``region``, or None when it is not a valid number."""
    key = f"{text}\x1f{region or ''}"
    cached = _PARSED.data.get(key)
    if cached is not None:
        return cached or None
    e164 = None if region is None and text.startswith("00") else _parse(text, region)
    if e164 is None and text.startswith("00"):
        # "00" is the international call prefix in most of the world (ITU recommendation), so
        # "0044 7911 123456" is +44 also where the record's region dials abroad with 011 (US)
        # or has no region at all. Tried second: in Australia "0011" is the prefix instead.
        e164 = _parse("+" + text[2:], None)
    _PARSED.put(key, e164 or "")
    return e164


def standardise_phone(raw: str | None, region: str | None) -> Standardised:
    """Standardise a phone number to E.164.

    Args:
        raw: The number as typed: national (``020 7946 0018``), international (``+44 20 7946
            0018``, ``0044 ...``), with a ``(0)`` trunk mark, separators or an extension.
        region: ISO alpha-2 region that numbers without a country code belong to (the
            record's country or the configured default; country names and aliases such as
            ``UK`` are accepted too). None or an unknown region: only numbers with an explicit
            country code can be standardised.

    Returns:
        ``("+442079460018", None)`` for a valid number; ``(raw, "invalid_phone")`` when it does
        not parse or is not a valid number; ``(None, None)`` for None or blank input.
    """
    if raw is None:
        return BLANK
    text = _trim(raw)
    if not text:
        return BLANK
    if _SIMPLE.fullmatch(text):
        # Brackets go too: "+44 (0)20 ..." becomes "+44020...", whose trunk 0 libphonenumber
        # drops (or keeps, for Italy, where it belongs to the number).
        text = ("+" if text[0] == "+" else "") + _NOT_DIGIT.sub("", text)
    # A region changes nothing for a number that carries its country code: one cache entry.
    e164 = _e164(text, None if text[:1] == "+" else _region(region))
    if e164 is None:
        return Standardised(raw, ISSUE)
    return Standardised(e164, None)
