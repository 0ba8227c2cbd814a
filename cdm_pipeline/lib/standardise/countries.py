"""Country names and codes to ISO 3166-1 alpha-2.

Exports spell countries every way people do: ``GB``, ``GBR``, ``United Kingdom``, ``U.K.``,
``England``, ``Deutschland``, ``Россия``. Golden records, phone parsing and postcode checks all
need one code, so everything pycountry knows (codes, names, official and common names) is
matched case- and accent-insensitively, plus an alias table for what exports really contain.
"""

from __future__ import annotations

import functools
import re
import unicodedata

import pycountry

from . import BLANK, Standardised, _trim

ISSUE = "unknown_country"

# What real exports contain that pycountry does not know. Keys are matched after the same
# folding as pycountry's names (case, accents, dots and other punctuation do not matter).
ALIASES: dict[str, str] = {
    # United Kingdom: the constituent countries are not ISO countries, but a customer in
    # "Scotland" lives in GB for every purpose here (phones, postcodes, consent law).
    "UK": "GB", "U.K.": "GB", "Great Britain": "GB", "Britain": "GB", "England": "GB",
    "Scotland": "GB", "Wales": "GB", "Cymru": "GB", "Northern Ireland": "GB",
    "United Kingdom of Great Britain": "GB", "Vereinigtes Königreich": "GB",
    "Royaume-Uni": "GB", "Reino Unido": "GB", "Regno Unito": "GB",
    # United States
    "USA": "US", "U.S.A.": "US", "U.S.": "US", "United States of America": "US", "America": "US",
    "United States": "US", "Estados Unidos": "US", "Vereinigte Staaten": "US", "États-Unis": "US",
    # Europe, in the countries' own languages and their neighbours'
    "Deutschland": "DE", "Allemagne": "DE", "Alemania": "DE", "Germania": "DE", "BRD": "DE",
    "Holland": "NL", "The Netherlands": "NL", "Nederland": "NL", "Niederlande": "NL",
    "Pays-Bas": "NL", "Países Bajos": "NL",
    "España": "ES", "Spanien": "ES", "Espagne": "ES", "Spagna": "ES",
    "Éire": "IE", "Irland": "IE", "Irlande": "IE", "Republic of Ireland": "IE",
    "Italia": "IT", "Italien": "IT", "Italie": "IT",
    "Frankreich": "FR", "Francia": "FR",
    "Schweiz": "CH", "Suisse": "CH", "Svizzera": "CH", "Helvetia": "CH",
    "Österreich": "AT", "Autriche": "AT",
    "België": "BE", "Belgique": "BE", "Belgien": "BE",
    "Danmark": "DK", "Dänemark": "DK", "Sverige": "SE", "Schweden": "SE", "Norge": "NO",
    "Norwegen": "NO", "Suomi": "FI", "Island": "IS", "Ísland": "IS",
    "Polska": "PL", "Polen": "PL", "Česko": "CZ", "Česká republika": "CZ", "Tschechien": "CZ",
    "Czech Republic": "CZ", "Magyarország": "HU", "Ungarn": "HU", "Ελλάδα": "GR", "Hellas": "GR",
    "Griechenland": "GR", "Luxemburg": "LU", "Lëtzebuerg": "LU", "Türkei": "TR", "Turkey": "TR",
    "Россия": "RU", "Russia": "RU", "Russland": "RU", "Україна": "UA", "Ukraina": "UA",
    "Macedonia": "MK", "Kosova": "XK", "Kosovo": "XK",
    # Elsewhere
    "South Korea": "KR", "Korea": "KR", "대한민국": "KR", "North Korea": "KP",
    "中国": "CN", "China PR": "CN", "PRC": "CN", "日本": "JP", "Nippon": "JP",
    "Brasil": "BR", "México": "MX", "UAE": "AE", "U.A.E.": "AE", "Emirates": "AE",
    "Vatican": "VA", "Vatican City": "VA", "Holy See": "VA", "Ivory Coast": "CI",
    "Cape Verde": "CV", "Swaziland": "SZ", "Burma": "MM", "East Timor": "TL",
    "Hong Kong SAR": "HK", "Macau": "MO", "Palestine": "PS", "Brunei": "BN",
    "Democratic Republic of Congo": "CD", "DR Congo": "CD", "DRC": "CD",
    "Republic of Congo": "CG", "Congo-Brazzaville": "CG", "Congo-Kinshasa": "CD",
    "Trinidad": "TT", "Saint Kitts": "KN", "St Lucia": "LC", "St Vincent": "VC",
    "St Kitts and Nevis": "KN", "Saint Martin": "MF", "Sint Maarten": "SX",
}

# Kosovo has no ISO code yet; XK is the user-assigned code that the EU, banks and libraries use.
_EXTRA_CODES = {"XK": "Kosovo"}

_PUNCT_GONE = re.compile(r"[.'’`´\"]")  # U.S.A. -> usa, Côte d'Ivoire -> cote divoire
_PUNCT_SPACE = re.compile(r"[\s,;:()\[\]/_\-–—]+")  # Timor-Leste -> timor leste


@functools.lru_cache(maxsize=4096)
def _fold(text: str) -> str:
    """The lookup key of a country spelling: no case, accents, punctuation or leading "the"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = text.replace("&", " and ")
    text = _PUNCT_SPACE.sub(" ", _PUNCT_GONE.sub("", text)).strip()
    if text.startswith("the "):
        text = text[4:]
    return text


@functools.cache
def _lookup() -> dict[str, str]:
    """Folded spelling -> alpha-2, built once on first use (pycountry loads its JSON lazily)."""
    table: dict[str, str] = {}
    derived: dict[str, set[str]] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        spellings = [code, country.alpha_3, country.name, getattr(country, "flag", None)]
        spellings += [getattr(country, "official_name", None), getattr(country, "common_name", None)]
        for spelling in filter(None, spellings):
            table.setdefault(_fold(spelling), code)
            # "Korea, Republic of" is also written "Republic of Korea", and often just "Korea":
            # the inverted form is added, the short form only where it names one country.
            if ", " in spelling:
                head, _, tail = spelling.partition(", ")
                derived.setdefault(_fold(f"{tail} {head}"), set()).add(code)
                derived.setdefault(_fold(head), set()).add(code)
    for key, codes in derived.items():
        if len(codes) == 1:
            table.setdefault(key, codes.pop())
    for code, name in _EXTRA_CODES.items():
        table.setdefault(_fold(code), code)
        table.setdefault(_fold(name), code)
    # Aliases win over derived short forms ("Korea" is South Korea in practice).
    for alias, code in ALIASES.items():
        table[_fold(alias)] = code
    return table


def standardise_country(raw: str | None) -> Standardised:
    """Standardise a country spelling to its ISO 3166-1 alpha-2 code.

    Args:
        raw: A code (``gb``, ``GBR``), a name in English or the local language (``Germany``,
            ``Deutschland``, ``Côte d'Ivoire``), a common export spelling (``U.K.``,
            ``England``) or a flag emoji.

    Returns:
        ``Standardised("GB", None)`` and the like; ``(raw, "unknown_country")`` when nothing
        matches; ``(None, None)`` for None or blank input.
    """
    if raw is None:
        return BLANK
    text = _trim(raw)
    if not text:
        return BLANK
    code = _lookup().get(_fold(text))
    if code is None:
        return Standardised(raw, ISSUE)
    return Standardised(code, None)
