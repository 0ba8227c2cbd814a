"""The underlying people: one consistent identity per person, before any system records it.

Every landing record is derived from these attributes (plus noise), and the ground truth maps
each record back to ``person_id``. Which systems know a person is decided here too:

* ``ROLE_CRM``: has a CRM contact (may also subscribe to e-mail and visit the web shop);
* ``ROLE_EMAIL_ONLY``: only ever signs up to the newsletter (never becomes a CRM contact);
* ``ROLE_WEB_ONLY``: an anonymous visitor who never identifies anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import phones
from .addresses import Addresses, make_addresses
from .context import Chunk
from .ids import cat, zfill, zpad
from .names import COUNTRIES, COUNTRY_WEIGHTS, ORIGIN_MIX, ORIGINS, RefData

ROLE_CRM, ROLE_EMAIL_ONLY, ROLE_WEB_ONLY = 0, 1, 2
ROLE_SHARES = (0.78, 0.08, 0.14)
NICKNAME_USERS = 0.15  # people who go by a nickname (Bob) rather than their formal name
EMPLOYED = 0.55  # people with a company (and so a work e-mail address)

# Personal e-mail local parts, from first name f, last name l, 2-digit year y, number n,
# with their relative frequency.
_LOCAL_PATTERNS = {
    "f.l": 10, "f.ly": 14, "Fly": 14, "f_L": 8, "fln": 12, "f.ln": 10, "l.f": 6, "fn": 6,
    "F.l": 6, "fl": 4, "f-ly": 4, "lfy": 6,
}
# How many times more (or fewer) namesakes a pattern has than the full first + last name:
# an initial is shared by ~15 first names, a birth year splits people ~50 ways, n 10,000 ways.
_PATTERN_CROWDING = {
    "f.l": 1.0, "f.ly": 1 / 50, "Fly": 15 / 50, "f_L": 15.0, "fln": 1e-4, "f.ln": 1e-4,
    "l.f": 1.0, "fn": 300 * 1e-4, "F.l": 15.0, "fl": 1.0, "f-ly": 1 / 50, "lfy": 1 / 50,
}
# Accepted chance that somebody else already holds the same mailbox name.
_CLASH_RISK = 2e-4
# Name frequencies are per origin pool; a typical origin holds ~40% of a country's people.
_ORIGIN_SHARE = 0.4


@dataclass(frozen=True)
class People:
    """Attributes of the people of one chunk (parallel arrays, one row per person)."""

    gidx: np.ndarray  # global person index (stable across chunks)
    person_id: np.ndarray
    role: np.ndarray
    country: np.ndarray
    gender: np.ndarray
    first: np.ndarray  # formal given name (index into RefData.given)
    preferred: np.ndarray  # the given name the person actually uses (formal or nickname)
    last: np.ndarray
    dob: np.ndarray  # days since 1970-01-01
    address: Addresses
    phone_head: np.ndarray
    phone_tail: np.ndarray
    phone_len: np.ndarray
    company: np.ndarray  # index into RefData.company, -1 when none
    email: np.ndarray  # personal address
    work_email: np.ndarray  # "" when the person has no company

    @property
    def size(self) -> int:
        return int(self.gidx.size)


def pick_nickname(rng: np.random.Generator, ref: RefData, given: np.ndarray) -> np.ndarray:
    """A nickname for each formal name (Robert -> Bob/Bobby/Rob); -1 where there is none."""
    count = ref.nick_count[given]
    k = np.minimum((rng.random(given.size) * count).astype(np.int64), np.maximum(count - 1, 0))
    slot = np.where(count > 0, ref.nick_start[given] + k, 0)
    return np.where(count > 0, ref.nick_flat[slot], -1)


def _expected_namesakes(ref: RefData, first: np.ndarray, last: np.ndarray, population: int) -> np.ndarray:
    # Roughly how many people in the whole simulation share this first + last name.
    return population * _ORIGIN_SHARE * ref.given_prob[first] * ref.last_prob[last]


def _disambiguate(rng: np.random.Generator, local: np.ndarray, clashes: np.ndarray) -> np.ndarray:
    """Append digits where a mailbox name is probably taken (john.smith -> john.smith4821).

    Real mailbox names are unique, but a chunk cannot see the others; so we append as many
    random digits as it takes to make an accidental clash unlikely at this population size.
    """
    digits = np.clip(np.ceil(np.log10(np.maximum(clashes, 1e-12) / _CLASH_RISK)), 0, 8).astype(np.int64)
    number = (rng.random(local.size) * 10.0**digits).astype(np.int64)
    return np.where(digits > 0, cat(local, zfill(number.astype("U"), digits)), local)


def personal_emails(
    rng: np.random.Generator,
    ref: RefData,
    first: np.ndarray,
    preferred: np.ndarray,
    last: np.ndarray,
    dob: np.ndarray,
    country: np.ndarray,
    population: int,
) -> np.ndarray:
    """Free-mail addresses built from names the way people pick them (jsmith87@yahoo.co.uk)."""
    n = first.size
    # f and l spell the address patterns below ("f.l", "Fly"): first and last name slugs.
    f, l = ref.given_slug[preferred], ref.last_slug[last]  # noqa: E741
    f1, l1 = np.strings.slice(f, 0, 1), np.strings.slice(l, 0, 1)
    year = dob.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    y = zpad(year % 100, 2)
    num = rng.integers(1, 10_000, n).astype("U")
    forms = {
        "f.l": cat(f, ".", l), "f.ly": cat(f, ".", l, y), "Fly": cat(f1, l, y),
        "f_L": cat(f, "_", l1), "fln": cat(f, l, num), "f.ln": cat(f, ".", l, num),
        "l.f": cat(l, ".", f), "fn": cat(f, num), "F.l": cat(f1, ".", l), "fl": cat(f, l),
        "f-ly": cat(f, "-", l, y), "lfy": cat(l, f, y),
    }
    names = list(_LOCAL_PATTERNS)
    share = np.array([_LOCAL_PATTERNS[k] for k in names], dtype=float)
    share /= share.sum()
    pick = rng.choice(len(names), size=n, p=share)
    local = np.choose(pick, [forms[k].astype(object) for k in names]).astype(str)
    domain = np.zeros(n, dtype=np.int64)
    domain_share = np.zeros(n)
    for code in COUNTRIES:
        sel = np.flatnonzero(country == code)
        if sel.size:
            pool = ref.domain_pools[code]
            k = rng.choice(pool.index.size, size=sel.size, p=pool.prob)
            domain[sel], domain_share[sel] = pool.index[k], pool.prob[k]
    crowding = np.array([_PATTERN_CROWDING[k] for k in names])[pick]
    clashes = _expected_namesakes(ref, first, last, population) * crowding * share[pick] * domain_share
    return cat(_disambiguate(rng, local, clashes), "@", ref.domain[domain])


def work_emails(
    rng: np.random.Generator,
    ref: RefData,
    first: np.ndarray,
    preferred: np.ndarray,
    last: np.ndarray,
    company: np.ndarray,
    population: int,
) -> np.ndarray:
    """first.last@company.com or flast@company.com (+ digits for namesakes); "" without company."""
    f, l = ref.given_slug[preferred], ref.last_slug[last]  # noqa: E741 (as in the patterns above)
    full = rng.random(first.size) < 0.6
    local = np.where(full, cat(f, ".", l), cat(np.strings.slice(f, 0, 1), l))
    # About 1/15 of a country's employed people work at any one company in the list.
    clashes = _expected_namesakes(ref, first, last, population) * EMPLOYED / 15
    clashes *= np.where(full, 0.6, 0.4 * 15)
    domain = ref.company_domain[np.maximum(company, 0)]
    return np.where(company >= 0, cat(_disambiguate(rng, local, clashes), "@", domain), "")


def make_people(chunk: Chunk, ref: RefData) -> People:
    """Simulate the people of one chunk."""
    rng = chunk.rng("people")
    n = chunk.size
    gidx = np.arange(chunk.first_person, chunk.first_person + n, dtype=np.int64)
    person_id = np.strings.add("P", zpad(gidx, 7))
    role = rng.choice(3, size=n, p=ROLE_SHARES).astype(np.int8)
    country = np.asarray(COUNTRIES)[rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS)]
    gender = np.where(rng.random(n) < 0.505, "F", "M")
    origin = np.empty(n, dtype="U2")
    for code in COUNTRIES:
        sel = np.flatnonzero(country == code)
        origin[sel] = np.asarray(ORIGINS)[rng.choice(len(ORIGINS), size=sel.size, p=ORIGIN_MIX[code])]
    first = np.zeros(n, dtype=np.int64)
    last = np.zeros(n, dtype=np.int64)
    for o in ORIGINS:
        for g in ("F", "M"):
            sel = np.flatnonzero((origin == o) & (gender == g))
            first[sel] = ref.first_pools[(o, g)].draw(rng, sel.size)
        # Surnames follow the person's origin, with a little mixing (marriage, migration).
        sel = np.flatnonzero(origin == o)
        last[sel] = ref.last_pools[o].draw(rng, sel.size)
    mixed = rng.random(n) < 0.08
    last[mixed] = ref.last_pools["en"].draw(rng, int(mixed.sum()))
    nick = pick_nickname(rng, ref, first)
    preferred = np.where((nick >= 0) & (rng.random(n) < NICKNAME_USERS), nick, first)
    # Adults 18-85, most between 25 and 60.
    age_days = ((18 + rng.beta(2.0, 3.0, n) * 67) * 365.25).astype(np.int64)
    dob = chunk.period.start_day - age_days
    address = make_addresses(rng, ref, country)
    head, tail, length = phones.assign(rng, ref, country, address.city, gidx, chunk.keys.phone)
    company = np.full(n, -1, dtype=np.int64)
    employed = rng.random(n) < EMPLOYED
    for code in COUNTRIES:
        sel = np.flatnonzero((country == code) & employed)
        company[sel] = ref.company_pools[code].draw(rng, sel.size)
    return People(
        gidx=gidx,
        person_id=person_id,
        role=role,
        country=country,
        gender=gender,
        first=first,
        preferred=preferred,
        last=last,
        dob=dob,
        address=address,
        phone_head=head,
        phone_tail=tail,
        phone_len=length,
        company=company,
        email=personal_emails(rng, ref, first, preferred, last, dob, country, chunk.population),
        work_email=work_emails(rng, ref, first, preferred, last, company, chunk.population),
    )
