"""CRM contact records: initial load, new contacts, duplicates entered by other reps, updates.

A CRM person gets a primary record on the day they become a contact (the first partition holds
the initial load, created 1-5 years ago). About 17% get a second record (a few a third) typed in
by a different rep on a later day, with the variations that make record linkage hard: nicknames,
typos, swapped names, missing fields, another phone format, abbreviated street types, a work
e-mail. About 5% of records are edited on a later day and re-exported with the same id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import corrupt, phones
from .addresses import make_addresses, street2_line, street_line
from .context import SECONDS_PER_DAY, Chunk, time_of_day
from .ids import contact_ids, iso_seconds, yyyymmdd
from .names import COUNTRY_SPELLINGS, JUNK_EMAILS, JUNK_PHONES, RefData
from .people import ROLE_CRM, People, personal_emails, pick_nickname

CONTACT_COLUMNS = (
    "contact_id", "FirstName", "LastName", "Email", "Phone", "DOB", "Street", "Street2", "City",
    "PostCode", "Region", "Country", "Company", "EmailOptIn", "DoNotSell", "CreatedDate",
    "LastModifiedDate", "OwnerRep",
)
INITIAL_SHARE = 0.77  # of CRM people in the first partition (~60% of all people)
SECOND_RECORD = 0.17
THIRD_RECORD = 0.15  # of those with a second record
UPDATED = 0.055  # of records that can still change within the period
JUNK_RATE = 0.003
BROKEN_LINE_RATE = 1 / 15_000  # per kind, so about 1 in 5,000 lines overall
_YEAR = 365 * SECONDS_PER_DAY


@dataclass(frozen=True)
class Contacts:
    """Contact rows of one chunk (record versions, incl. updates) and the per-record index."""

    columns: dict[str, np.ndarray]  # CONTACT_COLUMNS -> text, one entry per exported row
    day: np.ndarray  # partition of each row
    order_key: np.ndarray  # LastModifiedDate as unix seconds (row order inside a file)
    broken: np.ndarray  # corrupt.BROKEN_* kind per row, 0 for a well-formed row
    rec_id: np.ndarray  # one entry per contact_id (base records)
    rec_person: np.ndarray  # local person index of each record
    rec_day: np.ndarray
    rec_created: np.ndarray
    person_day: np.ndarray  # per person: day the first CRM record appears, -1 if none
    person_created: np.ndarray  # per person: CreatedDate of that record (unix seconds)
    primary_id: np.ndarray  # per person: contact_id of that record, "" if none


def later_day(rng: np.random.Generator, day: np.ndarray, days: int) -> np.ndarray:
    """A random later partition, or the same one when ``day`` is already the last."""
    room = days - 1 - day
    return np.where(room > 0, day + 1 + (rng.random(day.size) * room).astype(np.int64), day)


def _records(chunk: Chunk, rng: np.random.Generator, crm: np.ndarray) -> dict[str, np.ndarray]:
    """Which records exist: person, kind (0 primary, 1 second, 2 third), day, creation time."""
    period, days, m = chunk.period, chunk.period.days, crm.size
    initial = (rng.random(m) < INITIAL_SHARE) | (days == 1)
    day1 = np.where(initial, 0, rng.integers(1, max(days, 2), m))
    back = rng.integers(_YEAR, 5 * _YEAR, m) // SECONDS_PER_DAY * SECONDS_PER_DAY
    created1 = np.where(
        initial, period.start_ts - back, period.day_start(day1)
    ) + time_of_day(rng, m, "office")
    second = rng.random(m) < SECOND_RECORD
    third = second & (rng.random(m) < THIRD_RECORD)
    day2 = later_day(rng, day1[second], days)
    created2 = np.maximum(period.day_start(day2) + time_of_day(rng, day2.size, "office"),
                          created1[second] + 600)
    prev3 = second.nonzero()[0].searchsorted(third.nonzero()[0])
    day3 = later_day(rng, day2[prev3], days)
    created3 = np.maximum(period.day_start(day3) + time_of_day(rng, day3.size, "office"),
                          created2[prev3] + 600)
    # A same-day follow-up must not spill into the next partition.
    day = np.concatenate([day1, day2, day3])
    created = np.minimum(np.concatenate([created1, created2, created3]),
                         period.day_start(day) + SECONDS_PER_DAY - 1)
    return {
        "person": np.concatenate([crm, crm[second], crm[third]]),
        "kind": np.concatenate([np.zeros(m, int), np.ones(second.sum(), int), np.full(third.sum(), 2)]),
        "day": day,
        "created": created,
    }


def _names(var: np.random.Generator, ref: RefData, people: People, p: np.ndarray, dup: np.ndarray):
    """First/last name as typed: nicknames, typos, swaps and case noise on duplicates."""
    n = p.size
    formal, preferred = people.first[p], people.preferred[p]
    # The other form of the name: the formal one if the person goes by a nickname, else a nickname.
    alt = np.where(preferred != formal, formal, pick_nickname(var, ref, formal))
    given = np.where(dup & (alt >= 0) & (var.random(n) < 0.35), alt, preferred)
    # Room for one extra character: a doubled letter makes a name longer.
    first = ref.given[given].astype(f"U{ref.given.dtype.itemsize // 4 + 1}")
    last = ref.last[people.last[p]].astype(f"U{ref.last.dtype.itemsize // 4 + 1}")
    typo_first = np.flatnonzero(var.random(n) < np.where(dup, 0.12, 0.01))
    first[typo_first] = corrupt.typos(var, first[typo_first])
    typo_last = np.flatnonzero(var.random(n) < np.where(dup, 0.12, 0.01))
    last[typo_last] = corrupt.typos(var, last[typo_last])
    swap = dup & (var.random(n) < 0.05)
    first, last = np.where(swap, last, first), np.where(swap, first, last)
    # The same draw for both names: a rep with caps lock on types the whole name that way.
    share, u = np.where(dup, 0.05, 0.01), var.random(n)
    upper, lower = u < share, (u >= share) & (u < 2 * share)
    first = np.where(upper, np.strings.upper(first), np.where(lower, np.strings.lower(first), first))
    last = np.where(upper, np.strings.upper(last), np.where(lower, np.strings.lower(last), last))
    return first, last


def _fields(chunk: Chunk, ref: RefData, people: People, rec: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Column values of the base records (before updates, junk and broken lines)."""
    var = chunk.rng("variants")
    p, n = rec["person"], rec["person"].size
    dup = rec["kind"] > 0
    country = people.country[p]
    rate = lambda primary, duplicate: var.random(n) < np.where(dup, duplicate, primary)  # noqa: E731
    first, last = _names(var, ref, people, p, dup)
    has_company = people.company[p] >= 0
    email = np.where(has_company & rate(0.08, 0.20), people.work_email[p], people.email[p])
    email = corrupt.domain_typos(email, rate(0.01, 0.03))
    email = corrupt.email_noise(var, email, 0.03)
    email = np.where(rate(0.04, 0.15), "", email)
    phone = phones.format_phones(
        var, country, people.phone_head[p], people.phone_tail[p], people.phone_len[p]
    )
    phone = np.where(rate(0.07, 0.15), "", phone)
    dob = np.where(rate(0.28, 0.45), "", yyyymmdd(people.dob[p]))
    dob = corrupt.birth_date_noise(var, dob, rate(0.004, 0.03))
    addr = people.address.take(p)
    abbreviate = rate(0.12, 0.35)
    street, street2 = street_line(ref, addr, country, abbreviate), street2_line(addr, country, abbreviate)
    city, region, postcode = ref.city[addr.city], ref.city_region[addr.city], addr.postcode
    shout = dup & (var.random(n) < 0.05)
    street = np.where(shout, np.strings.upper(street), street)
    city = np.where(shout, np.strings.upper(city), city)
    squash = rate(0.03, 0.12)  # "SW11 2AB" typed as "sw112ab"
    postcode = np.where(squash, np.strings.lower(np.strings.replace(postcode, " ", "")), postcode)
    no_address = rate(0.04, 0.10)
    street, street2, postcode = (np.where(no_address, "", x) for x in (street, street2, postcode))
    city = np.where(no_address & (var.random(n) < 0.5), "", city)
    spelled = np.empty(n, dtype=object)
    for code, options in COUNTRY_SPELLINGS.items():
        sel = np.flatnonzero(country == code)
        spelled[sel] = np.asarray(options)[var.integers(0, len(options), sel.size)]
    country_text = np.where(rate(0.08, 0.15), spelled.astype(str), country)
    company = np.where(has_company & rate(0.8, 0.7), ref.company[np.maximum(people.company[p], 0)], "")
    # Consent belongs to the person; a second rep sometimes records it differently or not at all.
    person_optin = var.random(people.size) < 0.6
    optin = np.where(person_optin[p] ^ rate(0.0, 0.15), "true", "false")
    optin = np.where(rate(0.08, 0.2), "", optin)
    dns = np.where(var.random(n) < 0.04, "true", np.where(var.random(n) < 0.12, "", "false"))
    reps = ref.reps.size
    rep_of_person = var.integers(0, reps, people.size)
    shift = np.where(rec["kind"] == 0, 0, 1 + var.integers(0, reps - 1, n))
    modified = np.where(
        rec["created"] < chunk.period.start_ts,
        rec["created"] + (var.random(n) * (chunk.period.start_ts - rec["created"])).astype(np.int64),
        rec["created"] + var.integers(0, 900, n),
    )
    day_end = chunk.period.day_start(rec["day"]) + SECONDS_PER_DAY - 1
    modified = np.where(rec["created"] < chunk.period.start_ts, modified, np.minimum(modified, day_end))
    return {
        "FirstName": first, "LastName": last, "Email": email, "Phone": phone, "DOB": dob,
        "Street": street, "Street2": street2, "City": city, "PostCode": postcode, "Region": region,
        "Country": country_text, "Company": company, "EmailOptIn": optin, "DoNotSell": dns,
        "CreatedDate": iso_seconds(rec["created"]), "_modified": modified,
        "OwnerRep": ref.reps[(rep_of_person[p] + shift) % reps],
    }


def _apply_junk(
    rng: np.random.Generator, chunk: Chunk, cols: dict[str, np.ndarray], kind: np.ndarray
) -> None:
    """test@test.com, n/a, 0000000000 ...: on primary records, so each hits a different person."""
    primary = np.flatnonzero(kind == 0)
    rows = primary[corrupt.pick_rows(rng, primary.size, JUNK_RATE, 3 if chunk.index == 0 else 0)]
    on_email = rng.random(rows.size) < 0.6
    junk_email = np.asarray(JUNK_EMAILS)[rng.integers(0, len(JUNK_EMAILS), rows.size)]
    junk_phone = np.asarray(JUNK_PHONES)[rng.integers(0, len(JUNK_PHONES), rows.size)]
    email = cols["Email"].astype(object)
    phone = cols["Phone"].astype(object)
    email[rows[on_email]] = junk_email[on_email]
    phone[rows[~on_email]] = junk_phone[~on_email]
    cols["Email"], cols["Phone"] = email.astype(str), phone.astype(str)


def _updates(chunk, ref, people, rng, cols, rec) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Later re-exports of ~5% of records: new phone, new address, new e-mail or consent change."""
    days = chunk.period.days
    rows = np.flatnonzero((rec["day"] < days - 1) & (rng.random(rec["day"].size) < UPDATED))
    new = {k: v[rows].copy() for k, v in cols.items()}
    p, n = rec["person"][rows], rows.size
    day = later_day(rng, rec["day"][rows], days)
    ts = chunk.period.day_start(day) + time_of_day(rng, n, "office")
    change = rng.choice(4, size=n, p=[0.4, 0.25, 0.2, 0.15])
    country = people.country[p]
    head, tail, length = phones.assign(rng, ref, country, people.address.city[p], people.gidx[p],
                                       chunk.keys.phone ^ 0x5DEECE66D)
    new_phone = phones.format_phones(rng, country, head, tail, length)
    addr = make_addresses(rng, ref, country)
    plain = np.zeros(n, dtype=bool)
    moved = {"Street": street_line(ref, addr, country, plain), "Street2": street2_line(addr, country, plain),
             "City": ref.city[addr.city], "PostCode": addr.postcode, "Region": ref.city_region[addr.city]}
    new_email = personal_emails(rng, ref, people.first[p], people.preferred[p], people.last[p],
                                people.dob[p], country, chunk.population)
    new["Phone"] = np.where(change == 0, new_phone, new["Phone"])
    for key, value in moved.items():
        new[key] = np.where(change == 1, value, new[key])
    new["Email"] = np.where(change == 2, new_email, new["Email"])
    flip = np.where(new["EmailOptIn"] == "true", "false", "true")
    new["EmailOptIn"] = np.where(change == 3, flip, new["EmailOptIn"])
    new["DoNotSell"] = np.where((change == 3) & (rng.random(n) < 0.5), "true", new["DoNotSell"])
    new["_modified"] = ts
    return new, rows, day


def make_contacts(chunk: Chunk, ref: RefData, people: People) -> Contacts:
    """All CRM contact rows of one chunk."""
    rng = chunk.rng("crm")
    crm = np.flatnonzero(people.role == ROLE_CRM)
    rec = _records(chunk, rng, crm)
    ids = contact_ids(chunk.index, rec["person"].size, chunk.keys.contact)
    cols = _fields(chunk, ref, people, rec)
    cols = {k: np.asarray(v).astype(str) if k != "_modified" else v for k, v in cols.items()}
    _apply_junk(rng, chunk, cols, rec["kind"])
    upd, upd_rows, upd_day = _updates(chunk, ref, people, rng, cols, rec)
    all_cols = {k: np.concatenate([cols[k], upd[k]]) for k in cols}
    contact_id = np.concatenate([ids, ids[upd_rows]])
    modified = all_cols.pop("_modified")
    all_cols["contact_id"] = contact_id
    all_cols["LastModifiedDate"] = iso_seconds(modified)
    total = contact_id.size
    broken = np.zeros(total, dtype=np.int8)
    mal = chunk.rng("malformed")
    # Latin-1 damage shows on accented names (José, Müller): prefer rows that have one.
    accented = np.zeros(total, dtype=bool)
    for col in ("FirstName", "LastName", "Street", "City"):
        for ch in "éèáíóúñüöäç":
            accented |= np.strings.find(all_cols[col], ch) >= 0
    for kind in (corrupt.BROKEN_COMMA, corrupt.BROKEN_QUOTE, corrupt.BROKEN_ENCODING):
        free = np.flatnonzero(broken == 0)
        if kind == corrupt.BROKEN_ENCODING and (accented[free]).any():
            free = free[accented[free]]
        picked = free[corrupt.pick_rows(mal, free.size, BROKEN_LINE_RATE, 1 if chunk.index == 0 else 0)]
        broken[picked] = kind
    person_day = np.full(people.size, -1, dtype=np.int64)
    person_created = np.zeros(people.size, dtype=np.int64)
    primary_id = np.full(people.size, "", dtype=ids.dtype)
    first = rec["kind"] == 0
    person_day[rec["person"][first]] = rec["day"][first]
    person_created[rec["person"][first]] = rec["created"][first]
    primary_id[rec["person"][first]] = ids[first]
    return Contacts(
        columns={c: all_cols[c] for c in CONTACT_COLUMNS},
        day=np.concatenate([rec["day"], upd_day]),
        order_key=modified,
        broken=broken,
        rec_id=ids,
        rec_person=rec["person"],
        rec_day=rec["day"],
        rec_created=rec["created"],
        person_day=person_day,
        person_created=person_created,
        primary_id=primary_id,
    )
