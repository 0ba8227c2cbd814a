"""Reference lists the simulation draws from: names, nicknames, places, companies, domains.

The lists live as small CSV/TXT files in ``data/`` (packaged with the project) so they can be
reviewed and extended without touching code. They are loaded once per process into numpy
arrays plus per-group sampling tables, which is what lets the generators pick values for tens
of thousands of people with a single vectorised ``rng.choice`` per group.
"""

from __future__ import annotations

import csv
import functools
import unicodedata
from dataclasses import dataclass
from importlib import resources

import numpy as np

COUNTRIES = ("GB", "US", "DE", "FR", "IE", "ES")
COUNTRY_WEIGHTS = np.array([0.36, 0.30, 0.12, 0.09, 0.05, 0.08])
# How CRM users type a country when they do not pick the ISO code from the list.
COUNTRY_SPELLINGS = {
    "GB": ("United Kingdom", "UK", "Great Britain", "England"),
    "US": ("United States", "U.S.A.", "USA", "United States of America"),
    "DE": ("Germany", "Deutschland"),
    "FR": ("France",),
    "IE": ("Ireland", "Republic of Ireland"),
    "ES": ("Spain", "España"),
}
ORIGINS = ("en", "ie", "de", "fr", "es", "xx")
# Share of each name origin per country: mostly local names, always some diversity.
ORIGIN_MIX = {
    "GB": (0.72, 0.06, 0.02, 0.02, 0.02, 0.16),
    "US": (0.66, 0.06, 0.03, 0.02, 0.13, 0.10),
    "DE": (0.06, 0.01, 0.75, 0.02, 0.02, 0.14),
    "FR": (0.05, 0.01, 0.03, 0.76, 0.04, 0.11),
    "IE": (0.35, 0.52, 0.01, 0.01, 0.01, 0.10),
    "ES": (0.04, 0.01, 0.01, 0.03, 0.83, 0.08),
}
# Street-type abbreviations a second CRM user might type (Street -> St, Straße -> Str.).
STREET_ABBREVIATIONS = {
    "Street": "St", "Road": "Rd", "Avenue": "Ave", "Lane": "Ln", "Drive": "Dr", "Close": "Cl",
    "Crescent": "Cres", "Terrace": "Ter", "Grove": "Gr", "Court": "Ct", "Way": "Wy",
    "Place": "Pl", "Gardens": "Gdns", "Square": "Sq", "Boulevard": "Blvd", "Parkway": "Pkwy",
    "straße": "str.", "Straße": "Str.", "platz": "pl.", "Rue": "R.", "Chemin": "Ch.",
    "Allée": "All.", "Impasse": "Imp.", "Quai": "Q.", "Calle": "C/", "Avenida": "Avda.",
    "Paseo": "Pº", "Plaza": "Pza.", "Rambla": "Rbla.", "Carrer": "C/",
}
# Second address line: (full label, abbreviation) per country.
STREET2_LABELS = {
    "GB": (("Flat", "Flat"), ("Apartment", "Apt")),
    "IE": (("Apartment", "Apt"), ("Flat", "Flat")),
    "US": (("Apartment", "Apt"), ("Suite", "Ste"), ("Unit", "Unit")),
    "DE": (("Wohnung", "Whg."), ("Etage", "Et.")),
    "FR": (("Appartement", "Appt"), ("Bâtiment", "Bât.")),
    "ES": (("Piso", "Piso"), ("Puerta", "Pta.")),
}
# Free-mail domain typos people make when typing an address by hand.
DOMAIN_TYPOS = {
    "gmail.com": "gmial.com", "hotmail.com": "hotmial.com", "hotmail.co.uk": "hotmail.co",
    "yahoo.com": "yaho.com", "outlook.com": "outlok.com", "icloud.com": "icloud.co",
    "yahoo.co.uk": "yahoo.co.uk.", "web.de": "wep.de", "gmx.de": "gmx.d", "orange.fr": "ornage.fr",
}
JUNK_EMAILS = ("test@test.com", "noemail@example.com", "n/a", "none@none.com", "no@email.com")
JUNK_PHONES = ("0000000000", "123456789", "1234567890", "n/a")


def ascii_slug(text: str) -> str:
    """Lower-case ASCII spelling of a name, as people type it into an e-mail address."""
    special = {"ß": "ss", "ø": "o", "Ø": "o", "ł": "l", "Ł": "l", "æ": "ae", "đ": "d", "ı": "i"}
    text = "".join(special.get(ch, ch) for ch in text)
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch == "-")


@dataclass(frozen=True)
class Pool:
    """Indices into a reference list with their sampling probabilities."""

    index: np.ndarray
    prob: np.ndarray

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.index[rng.choice(self.index.size, size=size, p=self.prob)]


def _zipf(n: int, offset: float, power: float) -> np.ndarray:
    # Frequency by rank: common names repeat a lot, the tail still shows up.
    w = 1.0 / (np.arange(n) + offset) ** power
    return w / w.sum()


@dataclass(frozen=True)
class Options:
    """A ragged list of text options per item, flattened so a choice per row is vectorised."""

    start: np.ndarray
    count: np.ndarray
    flat: np.ndarray

    @classmethod
    def of(cls, lists: list[list[str]]) -> Options:
        count = np.array([len(x) for x in lists], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
        return cls(start, count, np.array([v for x in lists for v in x]))

    def pick(self, item: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One option per row for ``item`` (uniform ``u`` in [0, 1) chooses which)."""
        k = np.minimum((u * self.count[item]).astype(np.int64), self.count[item] - 1)
        return self.flat[self.start[item] + k]


@dataclass(frozen=True)
class RefData:
    """Everything the simulation draws from, as arrays (indices are stable across runs)."""

    given: np.ndarray  # first names followed by nicknames
    given_slug: np.ndarray
    given_prob: np.ndarray  # frequency of a formal name within its (origin, gender) pool
    n_first: int
    first_pools: dict[tuple[str, str], Pool]  # (origin, gender) -> formal first names
    nick_start: np.ndarray  # per given-name index: first slot in nick_flat
    nick_count: np.ndarray
    nick_flat: np.ndarray  # indices into ``given``
    last: np.ndarray
    last_slug: np.ndarray
    last_prob: np.ndarray  # frequency of a surname within its origin pool
    last_pools: dict[str, Pool]
    city: np.ndarray
    city_country: np.ndarray
    city_region: np.ndarray
    city_postcodes: Options  # GB/IE/US: outward codes, routing keys, ZIP3 prefixes
    city_pc_range: np.ndarray  # DE/FR/ES: (low, high) numeric postcode range, else (-1, -1)
    city_areas: Options  # landline area codes (without trunk prefix)
    city_pools: dict[str, Pool]
    street_country: np.ndarray
    street_name: np.ndarray
    street_type: np.ndarray
    street_type_abbr: np.ndarray
    street_joiner: np.ndarray
    street_pools: dict[str, Pool]
    company: np.ndarray
    company_domain: np.ndarray
    company_pools: dict[str, Pool]
    domain: np.ndarray
    domain_pools: dict[str, Pool]
    reps: np.ndarray


def rows(name: str) -> list[dict[str, str]]:
    text = resources.files(__package__).joinpath("data").joinpath(name).read_text(encoding="utf-8")
    # Lines starting with '#' document a file; they are not data.
    return list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))


def _pools(keys: np.ndarray, weights: np.ndarray) -> dict[str, Pool]:
    out = {}
    for key in sorted(set(keys.tolist())):
        idx = np.flatnonzero(keys == key)
        out[key] = Pool(idx, weights[idx] / weights[idx].sum())
    return out


@functools.cache
def load() -> RefData:
    """Load and index the reference lists (cached for the process)."""
    first_rows = rows("first_names.csv")
    first = [r["name"] for r in first_rows]
    given_prob = np.zeros(len(first))
    first_pools = {}
    for origin in ORIGINS:
        for gender in ("F", "M"):
            idx = np.array(
                [i for i, r in enumerate(first_rows) if r["origin"] == origin and r["gender"] == gender]
            )
            first_pools[(origin, gender)] = Pool(idx, _zipf(idx.size, 4.0, 0.9))
            given_prob[idx] = first_pools[(origin, gender)].prob
    # Nicknames extend the given-name table so a record's first name is always one index.
    nick_rows = rows("nicknames.csv")
    nicks = sorted({r["nickname"] for r in nick_rows} - set(first))
    given = first + nicks
    position = {name: i for i, name in enumerate(given)}
    by_formal: dict[str, list[int]] = {}
    for r in nick_rows:
        by_formal.setdefault(r["formal"], []).append(position[r["nickname"]])
    nick_start = np.zeros(len(given), dtype=np.int64)
    nick_count = np.zeros(len(given), dtype=np.int64)
    flat: list[int] = []
    for i, name in enumerate(given):
        options = by_formal.get(name, [])
        nick_start[i], nick_count[i] = len(flat), len(options)
        flat.extend(options)

    last_rows = rows("last_names.csv")
    last = np.array([r["name"] for r in last_rows])
    last_origin = np.array([r["origin"] for r in last_rows])
    last_pools = {}
    last_prob = np.zeros(last.size)
    for origin in ORIGINS:
        idx = np.flatnonzero(last_origin == origin)
        last_pools[origin] = Pool(idx, _zipf(idx.size, 8.0, 1.0))
        last_prob[idx] = last_pools[origin].prob

    city_rows = rows("cities.csv")
    city_country = np.array([r["country"] for r in city_rows])
    street_rows = rows("streets.csv")
    street_country = np.array([r["country"] for r in street_rows])
    street_type = np.array([r["type"] for r in street_rows])
    company_rows = rows("companies.csv")
    company_country = np.array([r["country"] for r in company_rows])
    domain_rows = rows("email_domains.csv")
    domain_country = np.array([r["country"] for r in domain_rows])
    reps_text = resources.files(__package__).joinpath("data").joinpath("owner_reps.txt").read_text("utf-8")

    return RefData(
        given=np.array(given),
        given_slug=np.array([ascii_slug(n) for n in given]),
        given_prob=np.concatenate([given_prob, np.zeros(len(nicks))]),
        n_first=len(first),
        first_pools=first_pools,
        nick_start=nick_start,
        nick_count=nick_count,
        nick_flat=np.array(flat, dtype=np.int64),
        last=last,
        last_slug=np.array([ascii_slug(n) for n in last]),
        last_prob=last_prob,
        last_pools=last_pools,
        city=np.array([r["city"] for r in city_rows]),
        city_country=city_country,
        city_region=np.array([r["region"] for r in city_rows]),
        city_postcodes=Options.of(
            [[] if "-" in r["postcode"] else r["postcode"].split(";") for r in city_rows]
        ),
        city_pc_range=np.array(
            [[int(x) for x in r["postcode"].split("-")] if "-" in r["postcode"] else [-1, -1]
             for r in city_rows],
            dtype=np.int64,
        ),
        city_areas=Options.of([r["area_codes"].split(";") for r in city_rows]),
        city_pools=_pools(city_country, np.array([float(r["weight"]) for r in city_rows])),
        street_country=street_country,
        street_name=np.array([r["name"] for r in street_rows]),
        street_type=street_type,
        street_type_abbr=np.array([STREET_ABBREVIATIONS.get(t, t) for t in street_type.tolist()]),
        street_joiner=np.array([" " if r["joiner"] == "space" else "" for r in street_rows]),
        street_pools=_pools(street_country, np.ones(len(street_rows))),
        company=np.array([r["name"] for r in company_rows]),
        company_domain=np.array([r["domain"] for r in company_rows]),
        company_pools=_pools(company_country, np.ones(len(company_rows))),
        domain=np.array([r["domain"] for r in domain_rows]),
        domain_pools=_pools(domain_country, np.array([float(r["weight"]) for r in domain_rows])),
        reps=np.array([line.strip() for line in reps_text.splitlines() if line.strip()]),
    )
