"""Postal addresses that look local: street formats, postcodes and regions per country.

An address is kept as parts (street index, house number, flat, city, postcode) so the same
address can be rendered in full ("12 High Street") or abbreviated ("12 High St") by different
CRM users, and so a person who moves gets a new, equally plausible address in their country.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ids import cat, zpad
from .names import COUNTRIES, STREET2_LABELS, RefData

_UK_INWARD = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))
_EIRCODE = np.array(list("ACDEFHKNPRTVWXY0123456789"))
_FLAT_LETTER = np.array(list("ABCDEF"))


@dataclass(frozen=True)
class Addresses:
    """Address parts for a set of people or records (parallel arrays)."""

    street: np.ndarray  # index into the reference street list
    house: np.ndarray  # house number
    flat_label: np.ndarray  # index into STREET2_LABELS[country], -1 when there is no 2nd line
    flat_no: np.ndarray  # text such as "4" or "4B"
    city: np.ndarray  # index into the reference city list
    postcode: np.ndarray

    def take(self, rows: np.ndarray) -> Addresses:
        return Addresses(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))


def _choose_letters(rng: np.random.Generator, table: np.ndarray, n: int, k: int) -> np.ndarray:
    idx = rng.integers(0, table.size, size=(k, n))
    return cat(*[table[idx[i]] for i in range(k)]) if k > 1 else table[idx[0]]


def _postcodes(rng: np.random.Generator, ref: RefData, code: str, city: np.ndarray) -> np.ndarray:
    n = city.size
    u = rng.random(n)
    if code in ("DE", "FR", "ES"):
        lo, hi = ref.city_pc_range[city, 0], ref.city_pc_range[city, 1]
        return zpad(lo + (u * (hi - lo + 1)).astype(np.int64), 5)
    prefix = ref.city_postcodes.pick(city, u)
    if code == "US":
        return cat(prefix, zpad(rng.integers(1, 100, n), 2))
    if code == "IE":
        return cat(prefix, " ", _choose_letters(rng, _EIRCODE[:15], n, 1),
                   _choose_letters(rng, _EIRCODE, n, 3))
    # GB: outward code = area letters + district, inward code = digit + two letters.
    district = rng.integers(1, 21, n).astype("U")
    return cat(prefix, district, " ", rng.integers(0, 10, n).astype("U"),
               _choose_letters(rng, _UK_INWARD, n, 2))


def make_addresses(rng: np.random.Generator, ref: RefData, country: np.ndarray) -> Addresses:
    """A random plausible address in each row's country."""
    n = country.size
    street = np.zeros(n, dtype=np.int64)
    city = np.zeros(n, dtype=np.int64)
    postcode = np.empty(n, dtype="U10")
    flat_label = np.full(n, -1, dtype=np.int64)
    has_flat = rng.random(n) < 0.16
    label_u = rng.random(n)
    for code in COUNTRIES:
        sel = np.flatnonzero(country == code)
        if sel.size == 0:
            continue
        street[sel] = ref.street_pools[code].draw(rng, sel.size)
        city[sel] = ref.city_pools[code].draw(rng, sel.size)
        postcode[sel] = _postcodes(rng, ref, code, city[sel])
        n_labels = len(STREET2_LABELS[code])
        flat_label[sel] = np.where(has_flat[sel], (label_u[sel] * n_labels).astype(np.int64), -1)
    # House numbers are small far more often than large (log-uniform-ish, 1..250).
    house = np.exp(rng.random(n) * np.log(250)).astype(np.int64)
    flat_no = rng.integers(1, 40, n).astype("U")
    lettered = (country == "US") & (rng.random(n) < 0.4)
    flat_no = np.where(lettered, cat(flat_no, _FLAT_LETTER[rng.integers(0, 6, n)]), flat_no)
    return Addresses(street, np.maximum(house, 1), flat_label, flat_no, city, postcode)


def street_line(ref: RefData, addr: Addresses, country: np.ndarray, abbreviate: np.ndarray) -> np.ndarray:
    """First address line in the country's usual order, optionally with the type abbreviated."""
    name = ref.street_name[addr.street]
    kind = np.where(abbreviate, ref.street_type_abbr[addr.street], ref.street_type[addr.street])
    joiner = ref.street_joiner[addr.street]
    house = addr.house.astype("U")
    english = cat(house, " ", name, " ", kind)  # 12 High Street
    german = cat(name, joiner, kind, " ", house)  # Hauptstraße 12
    french = cat(house, " ", kind, " ", name)  # 12 Rue de la Paix
    spanish = cat(kind, " ", name, ", ", house)  # Calle Mayor, 12
    return np.select(
        [country == "DE", country == "FR", country == "ES"], [german, french, spanish], english
    )


def street2_line(addr: Addresses, country: np.ndarray, abbreviate: np.ndarray) -> np.ndarray:
    """Second address line ("Apartment 4B" / "Apt 4B"), empty for most people."""
    out = np.full(country.size, "", dtype=object)
    for code in COUNTRIES:
        labels = STREET2_LABELS[code]
        for i, (full, short) in enumerate(labels):
            sel = np.flatnonzero((country == code) & (addr.flat_label == i))
            if sel.size:
                label = np.where(abbreviate[sel], short, full)
                out[sel] = cat(label, " ", addr.flat_no[sel])
    return out.astype(str)
