"""E-mail marketing: subscriber list exports and campaign events (sent, open, click, bounce ...).

About 60% of people subscribe: most CRM contacts do, and some people only ever exist here. The
ESP knows the CRM id for only ~40% of subscribers, addresses arrive with stray case and spaces,
and a few typo'd domains hard-bounce and get "cleaned". Campaigns follow a global weekly schedule
(the same for every chunk); unsubscribes and cleanings are re-exported as subscriber updates.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from . import corrupt
from .context import SECONDS_PER_DAY, Chunk, Period, time_of_day
from .crm import Contacts
from .ids import hex_ids, iso_seconds, scramble, subscriber_ids
from .names import RefData
from .people import ROLE_CRM, ROLE_EMAIL_ONLY, People

SUBSCRIBER_COLUMNS = (
    "subscriber_id", "email", "first_name", "last_name", "crm_id", "status", "opted_in_at",
    "updated_at", "list_name",
)
EVENT_COLUMNS = (
    "event_id", "subscriber_id", "email", "event_type", "campaign_id", "campaign_name",
    "occurred_at", "url", "bounce_type",
)
LISTS = ("Weekly Newsletter", "Special Offers", "VIP Club")
SHOP = "https://shop.example.com"
_PROMOS = ("Autumn Sale: 20% off outerwear", "New Arrivals", "Free Shipping Weekend",
           "Member Exclusive Offers", "Back in Stock", "Last Chance: Autumn Sale")
_LINKS = ("/new-arrivals", "/sale", "/c/outerwear", "/c/shoes", "/c/accessories", "/blog/style-guide")
BROKEN_JSON_RATE = 1 / 5_000
_EVENT_TYPES = np.asarray(["sent", "delivered", "bounce", "open", "click", "unsubscribe"], dtype=object)
_BOUNCE_TYPES = np.asarray(["", "hard", "soft"], dtype=object)


@dataclass(frozen=True)
class Campaign:
    campaign_id: str
    name: str
    send_ts: int
    lists: tuple[int, ...]  # indices into LISTS
    links: tuple[str, ...]


@dataclass(frozen=True)
class Clicks:
    """E-mail clicks that open a web session (the person lands on the shop from the link)."""

    person: np.ndarray
    ts: np.ndarray
    campaign_id: np.ndarray
    url: np.ndarray


@dataclass(frozen=True)
class EmailData:
    subscribers: dict[str, np.ndarray]
    sub_day: np.ndarray
    sub_key: np.ndarray
    sub_person: np.ndarray
    sub_ids: np.ndarray  # distinct subscriber ids (one per base row)
    sub_id_person: np.ndarray
    events: dict[str, np.ndarray]
    event_day: np.ndarray
    event_key: np.ndarray
    event_person: np.ndarray
    event_broken: np.ndarray  # True: the line is written truncated (invalid JSON)
    clicks: Clicks


def campaign_schedule(period: Period, seed: int) -> list[Campaign]:
    """Newsletter on Tuesdays, a promotion on Thursdays, a flash sale every other Saturday."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(2,))))
    key = int(np.random.SeedSequence(seed, spawn_key=(3,)).generate_state(1, np.uint64)[0])
    out = []
    for d in range(period.days):
        date = period.start_date + dt.timedelta(days=d)
        week = date.isocalendar().week
        slot = {1: 0, 3: 1, 5: 2}.get(date.weekday())
        if slot is None or (slot == 2 and week % 2):
            continue
        cid = "cmp_" + format(int(scramble(np.array([d * 4 + slot]), 40, key)[0]), "010x")
        hour = (9.0, 11.0, 8.5)[slot]
        if slot == 0:
            name, lists = f"Weekly Newsletter {date:%d %b %Y}", (0, 1, 2)
        elif slot == 1:
            name, lists = f"{_PROMOS[int(rng.integers(len(_PROMOS)))]} ({date:%d %b})", (1, 2)
        else:
            name, lists = f"Weekend Flash Sale {date:%d %b}", (0, 1, 2)
        links = tuple(rng.choice(_LINKS, size=3, replace=False).tolist())
        send = period.start_ts + d * SECONDS_PER_DAY + int(hour * 3600)
        out.append(Campaign(cid, name, send, lists, links))
    return out


def _subscribers(chunk: Chunk, ref: RefData, people: People, contacts: Contacts, rng):
    """Base subscriber rows: who subscribed, when, with which address and what the ESP knows."""
    period, days = chunk.period, chunk.period.days
    wants = ((people.role == ROLE_CRM) & (rng.random(people.size) < 0.67)) | (people.role == ROLE_EMAIL_ONLY)
    subs = np.flatnonzero(wants)
    has_company = people.company[subs] >= 0
    twice = has_company & (rng.random(subs.size) < 0.08)  # also subscribed with the work address
    person = np.concatenate([subs, subs[twice]])
    n = person.size
    work = np.concatenate([has_company & (rng.random(subs.size) < 0.12), np.ones(twice.sum(), bool)])
    work[: subs.size] &= ~twice  # the first subscription of a two-address person is personal
    typed = np.where(work, people.work_email[person], people.email[person])
    # A few addresses were mistyped at sign-up (gmial.com): they hard-bounce and get cleaned.
    canonical = corrupt.domain_typos(typed, rng.random(n) < 0.025)
    bad = canonical != typed
    initial = (rng.random(n) < 0.75) | (days == 1)
    day = np.where(initial, 0, rng.integers(1, max(days, 2), n))
    back = rng.integers(30 * SECONDS_PER_DAY, 4 * 365 * SECONDS_PER_DAY, n)
    opted = np.where(initial, period.start_ts - back, period.day_start(day) + time_of_day(rng, n, "leisure"))
    opted = np.minimum(opted, period.day_start(day) + SECONDS_PER_DAY - 1)
    updated = np.where(initial, opted + (rng.random(n) * (period.start_ts - opted)).astype(np.int64), opted)
    status = np.where(initial, rng.choice(3, n, p=[0.86, 0.09, 0.05]), 0)
    status = np.where(initial & bad, 2, status)
    use_formal = rng.random(n) < 0.1
    first = ref.given[np.where(use_formal, people.first[person], people.preferred[person])]
    crm_known = (contacts.person_day[person] >= 0) & (contacts.person_created[person] <= opted)
    crm_id = np.where(crm_known & (rng.random(n) < 0.95), contacts.primary_id[person], "")
    return {
        "person": person, "canonical": canonical, "bad": bad, "day": day, "opted": opted,
        "updated": updated, "status": status, "list": rng.choice(3, n, p=[0.7, 0.25, 0.05]),
        "first": np.where(rng.random(n) < 0.8, first, ""),
        "last": np.where(rng.random(n) < 0.4, ref.last[people.last[person]], ""),
        "crm_id": crm_id, "email": corrupt.email_noise(rng, canonical, 0.10),
    }


def _campaign_events(chunk: Chunk, rng, subs: dict, campaigns: list[Campaign]):
    """Run every campaign against the subscribers active at send time."""
    end = chunk.period.end_ts
    n = subs["person"].size
    engagement = rng.beta(2.0, 6.0, n)  # chance to open
    clickiness = rng.beta(2.0, 10.0, n)  # chance to click once opened
    status = subs["status"].copy()
    parts: list[tuple] = []  # (sub, type, ts, campaign, bounce type, link) as integer codes
    changes: list[tuple] = []  # (sub, new status, ts)
    for c, camp in enumerate(campaigns):
        active = (status == 0) & (subs["opted"] < camp.send_ts)
        rec = np.flatnonzero(active & np.isin(subs["list"], camp.lists))
        k = rec.size
        sent = camp.send_ts + rng.integers(0, 2700, k)
        hard = subs["bad"][rec] | (rng.random(k) < 0.003)
        soft = ~hard & (rng.random(k) < 0.015)
        ok = ~hard & ~soft
        delivered = sent + rng.integers(1, 120, k)
        bounced = sent + rng.integers(2, 300, k)
        opened = ok & (rng.random(k) < engagement[rec])
        open_ts = delivered + 60 + rng.exponential(4 * 3600, k).astype(np.int64)
        reopen = opened & (rng.random(k) < 0.25)
        reopen_ts = open_ts + 300 + rng.exponential(20 * 3600, k).astype(np.int64)
        clicked = opened & (rng.random(k) < clickiness[rec])
        click_ts = open_ts + 5 + rng.exponential(180, k).astype(np.int64)
        unsub = ok & (rng.random(k) < 0.002 + 0.004 * (engagement[rec] < 0.1))
        unsub_ts = np.where(opened, open_ts, delivered) + 30 + rng.exponential(600, k).astype(np.int64)
        link = c * 8 + rng.integers(0, len(camp.links), k)  # index into the campaigns' links
        for mask, kind, ts, bounce in (
            (np.ones(k, bool), 0, sent, 0), (ok, 1, delivered, 0), (hard, 2, bounced, 1),
            (soft, 2, bounced, 2), (opened, 3, open_ts, 0), (reopen, 3, reopen_ts, 0),
            (clicked, 4, click_ts, 0), (unsub, 5, unsub_ts, 0),
        ):
            keep = mask & (ts < end)
            m = int(keep.sum())
            parts.append((rec[keep], np.full(m, kind), ts[keep], np.full(m, c), np.full(m, bounce),
                          np.where(kind == 4, link[keep], -1)))
        for mask, new_status, ts in ((hard & (bounced < end), 2, bounced),
                                     (unsub & (unsub_ts < end), 1, unsub_ts)):
            status[rec[mask]] = new_status
            changes.append((rec[mask], np.full(mask.sum(), new_status), ts[mask]))
    cols = [np.concatenate([p[i] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64)
            for i in range(6)]
    ch = [np.concatenate([x[i] for x in changes]).astype(np.int64) if changes else np.zeros(0, np.int64)
          for i in range(3)]
    return cols, ch


def _click_urls(campaigns: list[Campaign]) -> np.ndarray:
    """Tracked link URLs, 8 slots per campaign (index = campaign * 8 + link)."""
    urls = np.full(max(len(campaigns), 1) * 8, "", dtype=object)
    for c, camp in enumerate(campaigns):
        for i, link in enumerate(camp.links):
            urls[c * 8 + i] = (f"{SHOP}{link}?utm_source=newsletter&utm_medium=email"
                               f"&utm_campaign={camp.campaign_id}")
    return urls


def make_email(
    chunk: Chunk, ref: RefData, people: People, contacts: Contacts, campaigns: list[Campaign]
) -> EmailData:
    """Subscriber rows (with status updates) and campaign events of one chunk."""
    rng = chunk.rng("email")
    period = chunk.period
    subs = _subscribers(chunk, ref, people, contacts, rng)
    n = subs["person"].size
    ids = subscriber_ids(chunk.index, n, chunk.keys.subscriber)
    (sub, kind, ts, camp, bounce, link), changes = _campaign_events(chunk, rng, subs, campaigns)
    ch_sub, ch_status, ch_ts = changes
    statuses = np.asarray(["subscribed", "unsubscribed", "cleaned"])
    rows = np.concatenate([np.arange(n), ch_sub])
    status = np.concatenate([subs["status"], ch_status])
    updated = np.concatenate([subs["updated"], ch_ts])
    subscribers = {
        "subscriber_id": ids[rows], "email": subs["email"][rows], "first_name": subs["first"][rows],
        "last_name": subs["last"][rows], "crm_id": subs["crm_id"][rows], "status": statuses[status],
        "opted_in_at": iso_seconds(subs["opted"][rows]), "updated_at": iso_seconds(updated),
        "list_name": np.asarray(LISTS)[subs["list"][rows]],
    }
    sub_day = np.concatenate([subs["day"], period.day_of(ch_ts)])
    # Low-cardinality text as object arrays of shared strings: 8 bytes a row, not 4 per char.
    camp_ids = np.asarray([c.campaign_id for c in campaigns] or [""], dtype=object)
    camp_names = np.asarray([c.name for c in campaigns] or [""], dtype=object)
    urls = _click_urls(campaigns)
    events = {
        "event_id": hex_ids("ev_", chunk.index, sub.size, chunk.keys.email_event),
        "subscriber_id": ids[sub], "email": corrupt.email_noise(rng, subs["canonical"][sub], 0.10),
        "event_type": _EVENT_TYPES[kind], "campaign_id": camp_ids[camp], "campaign_name": camp_names[camp],
        "occurred_at": iso_seconds(ts), "url": np.where(link >= 0, urls[np.maximum(link, 0)], ""),
        "bounce_type": _BOUNCE_TYPES[bounce],
    }
    broken = np.zeros(sub.size, dtype=bool)
    at_least = 1 if chunk.index == 0 else 0
    broken[corrupt.pick_rows(chunk.rng("json_errors"), sub.size, BROKEN_JSON_RATE, at_least)] = True
    is_click = kind == 4
    return EmailData(
        subscribers=subscribers,
        sub_day=sub_day,
        sub_key=updated,
        sub_person=subs["person"][rows],
        sub_ids=ids,
        sub_id_person=subs["person"],
        events=events,
        event_day=period.day_of(ts),
        event_key=ts,
        event_person=subs["person"][sub],
        event_broken=broken,
        clicks=Clicks(subs["person"][sub[is_click]], ts[is_click],
                      camp_ids[camp[is_click]].astype(str), urls[link[is_click]].astype(str)),
    )
