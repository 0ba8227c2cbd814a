"""Plausible phone numbers and the many ways CRM users type them.

A number is kept as (country, head, tail): ``head`` is the mobile prefix or landline area code
without the trunk ``0``, ``tail`` the subscriber number. ``data/phone_plan.csv`` lists, per head,
the subscriber-number length and the leading digits that libphonenumber accepts, so a phone
library downstream can parse and validate what we write (UK 07xxx mobiles, London 020 7/8/3,
US area codes of the person's city, German 015x-017x mobiles ...).

Tails are a keyed permutation of the person's global index, so two different people never get
the same number by accident: a shared phone would wrongly look like a match signal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from .ids import cat, scramble
from .names import COUNTRIES, RefData, rows

CALLING_CODE = {"GB": "44", "US": "1", "DE": "49", "FR": "33", "IE": "353", "ES": "34"}
TRUNK = {"GB": "0", "US": "", "DE": "0", "FR": "0", "IE": "0", "ES": ""}
MOBILE_SHARE = {"GB": 0.7, "US": 0.0, "DE": 0.6, "FR": 0.65, "IE": 0.6, "ES": 0.65}
# Relative frequency of each typing style per country (style names are the keys of _render).
STYLE_WEIGHTS = {
    "GB": {"national": 40, "intl": 20, "intl00": 8, "compact": 20, "e164": 12},
    "IE": {"national": 45, "intl": 25, "intl00": 5, "compact": 15, "e164": 10},
    "US": {"paren": 30, "dots": 12, "dash_intl": 10, "dash": 20, "digits": 18, "intl": 10},
    "DE": {"national": 35, "slash": 20, "intl": 20, "intl00": 5, "intl_0": 8, "compact": 12},
    "FR": {"pairs": 45, "dots": 15, "intl": 20, "intl00": 5, "compact": 15},
    "ES": {"national": 40, "pairs": 15, "intl": 25, "intl00": 5, "compact": 15},
}


@dataclass(frozen=True)
class Plan:
    """The numbering plan of one country, indexed by head."""

    heads: np.ndarray
    mobile_heads: np.ndarray
    tail_length: dict[str, int]
    leads: dict[str, np.ndarray]  # two-digit leads allowed after each head


@functools.cache
def plan(country: str) -> Plan:
    mine = [r for r in rows("phone_plan.csv") if r["country"] == country]
    every = np.arange(100)
    return Plan(
        heads=np.array([r["head"] for r in mine]),
        mobile_heads=np.array([r["head"] for r in mine if r["kind"] == "mobile"], dtype="U4"),
        tail_length={r["head"]: int(r["tail_length"]) for r in mine},
        leads={
            r["head"]: every if r["leads"] == "*" else np.array([int(x) for x in r["leads"].split(";")])
            for r in mine
        },
    )


def permute_mod(x: np.ndarray, modulus: np.ndarray, key: int) -> np.ndarray:
    """A keyed permutation of ``[0, modulus)`` per row (cycle-walking over a bit scramble)."""
    out = np.zeros(x.size, dtype=np.int64)
    for m in np.unique(modulus).tolist():
        sel = np.flatnonzero(modulus == m)
        bits = max(2, int(m - 1).bit_length())
        y = scramble(np.asarray(x[sel], dtype=np.int64) % m, bits, key)
        todo = y >= m
        while todo.any():  # stays inside the value's cycle, ends at the first value below m
            y[todo] = scramble(y[todo], bits, key)
            todo = y >= m
        out[sel] = y.astype(np.int64)
    return out


def make_tails(code: str, head: np.ndarray, person: np.ndarray, key: int) -> tuple[np.ndarray, np.ndarray]:
    """Subscriber numbers valid after ``head`` and their lengths; unique per (person, key, head)."""
    p = plan(code)
    uniq, inv = np.unique(head, return_inverse=True)
    length = np.array([p.tail_length[h] for h in uniq.tolist()], dtype=np.int64)[inv]
    leads = [p.leads[h] for h in uniq.tolist()]
    lead_count = np.array([x.size for x in leads], dtype=np.int64)
    lead_start = np.concatenate([[0], np.cumsum(lead_count)[:-1]]).astype(np.int64)
    lead_flat = np.concatenate(leads)
    scale = 10 ** (length - 2)
    w = permute_mod(np.asarray(person), lead_count[inv] * scale, key)
    tail = lead_flat[lead_start[inv] + w // scale] * scale + w % scale
    if code == "US":  # exchanges cannot be N11 (211, 411, 911 ...): shift those to N21
        tail = np.where((tail // 10_000) % 100 == 11, tail + 100_000, tail)
    return tail, length


def assign(
    rng: np.random.Generator,
    ref: RefData,
    country: np.ndarray,
    city: np.ndarray,
    person: np.ndarray,
    key: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (head, tail, tail length) phone per person: a mobile, or a landline in their city."""
    head = np.empty(country.size, dtype="U4")
    tail = np.zeros(country.size, dtype=np.int64)
    length = np.zeros(country.size, dtype=np.int64)
    u = rng.random((3, country.size))
    for code in COUNTRIES:
        sel = np.flatnonzero(country == code)
        if sel.size == 0:
            continue
        mobiles = plan(code).mobile_heads
        land = ref.city_areas.pick(city[sel], u[2, sel])
        if mobiles.size:
            mobile = u[0, sel] < MOBILE_SHARE[code]
            land = np.where(mobile, mobiles[(u[1, sel] * mobiles.size).astype(np.int64)], land)
        head[sel] = land
        tail[sel], length[sel] = make_tails(code, land, person[sel], key)
    return head, tail, length


def _pairs(digits: np.ndarray, sep: str) -> np.ndarray:
    # "42685300" -> "42 68 53 00" (all numbers of one country share the length here).
    n = int(np.strings.str_len(digits).max()) if digits.size else 0
    parts = [np.strings.slice(digits, i, i + 2) for i in range(0, n, 2)]
    out = parts[0]
    for part in parts[1:]:
        out = np.where(np.strings.str_len(part) > 0, cat(out, sep, part), out)
    return out


def _render(code: str, head: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """All typing styles of one country's numbers (the caller picks one per row)."""
    cc, trunk = CALLING_CODE[code], TRUNK[code]
    nsn = np.strings.add(head, t)
    if code == "US":
        ex, line = np.strings.slice(t, 0, 3), np.strings.slice(t, 3, 7)
        return {
            "paren": cat("(", head, ") ", ex, "-", line),
            "dots": cat(head, ".", ex, ".", line),
            "dash_intl": cat("+1-", head, "-", ex, "-", line),
            "dash": cat(head, "-", ex, "-", line),
            "digits": nsn,
            "intl": cat("+1 ", head, " ", ex, " ", line),
        }
    if code == "FR":
        pairs = _pairs(t, " ")
        return {
            "pairs": cat("0", head, " ", pairs),
            "dots": cat("0", head, ".", _pairs(t, ".")),
            "intl": cat("+33 ", head, " ", pairs),
            "intl00": cat("0033 ", head, " ", pairs),
            "compact": cat("0", nsn),
        }
    if code == "ES":
        s = np.strings.slice
        return {
            "national": cat(s(nsn, 0, 3), " ", s(nsn, 3, 6), " ", s(nsn, 6, 9)),
            "pairs": cat(s(nsn, 0, 3), " ", _pairs(s(nsn, 3, 9), " ")),
            "intl": cat("+34 ", s(nsn, 0, 3), " ", _pairs(s(nsn, 3, 9), " ")),
            "intl00": cat("0034 ", nsn),
            "compact": nsn,
        }
    # GB, IE, DE: head, then the tail split once (8 -> 4+4, 7 -> 3+4, 6 -> 3+3; DE unsplit).
    n = np.strings.str_len(t)
    split = n if code == "DE" else np.where(n == 8, 4, 3)
    first, rest = np.strings.slice(t, 0, split), np.strings.slice(t, split, None)
    if code == "GB":  # UK mobiles are written 07700 900123, not 07700 900 123
        first, rest = np.where(n == 6, t, first), np.where(n == 6, "", rest)
    grouped = np.where(np.strings.str_len(rest) > 0, cat(first, " ", rest), first)
    styles = {
        "national": cat(trunk, head, " ", grouped),
        "intl": cat("+", cc, " ", head, " ", grouped),
        "intl00": cat("00", cc, " ", head, " ", grouped),
        "compact": cat(trunk, nsn),
        "e164": cat("+", cc, nsn),
    }
    if code == "DE":
        styles["slash"] = cat("0", head, "/", t)
        styles["intl_0"] = cat("+49 (0)", head, " ", t)
    return styles


def format_phones(
    rng: np.random.Generator,
    country: np.ndarray,
    head: np.ndarray,
    tail: np.ndarray,
    length: np.ndarray,
) -> np.ndarray:
    """Type each number in a randomly chosen, country-typical style."""
    out = np.empty(country.size, dtype=object)
    pick_u = rng.random(country.size)
    # Subscriber digits with their leading zeros: str(tail + 10**len) minus its leading "1".
    digits = np.strings.slice((tail + 10 ** np.maximum(length, 1)).astype("U"), 1, None)
    for code in COUNTRIES:
        sel = np.flatnonzero(country == code)
        if sel.size == 0:
            continue
        weights = STYLE_WEIGHTS[code]
        names = list(weights)
        cum = np.cumsum([weights[k] for k in names], dtype=float)
        pick = np.searchsorted(cum / cum[-1], pick_u[sel], side="right")
        styles = _render(code, head[sel], digits[sel])
        out[sel] = np.choose(pick, [styles[k].astype(object) for k in names])
    return out.astype(str)
