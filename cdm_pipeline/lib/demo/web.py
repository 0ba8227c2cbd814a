"""GA4-like web analytics events: sessions, funnels, logins, form sign-ups and purchases.

A session is built as a fixed sequence of "slots" (page views, login, more page views, form
submit, add to cart, cart view, begin checkout, purchase), each with a per-session count; one
``np.repeat`` then lays out every event of every session in order. Events carry a user_id only
from the login onwards, so the same browser (client_id) is anonymous earlier in the session
and, in other sessions, possibly forever. About 30% of visitors are in no other system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from . import corrupt
from .context import SECONDS_PER_DAY, Chunk, time_of_day
from .crm import Contacts
from .email import SHOP, Clicks
from .ids import cat, ga_client_ids, hex_ids, order_ids
from .names import COUNTRIES
from .orders import WEB_ORDER_OFFSET, WebPurchases, currency_of
from .people import ROLE_CRM, ROLE_WEB_ONLY, People

WEB_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("event_name", pa.string()), ("client_id", pa.string()), ("user_id", pa.string()),
    ("email", pa.string()), ("session_id", pa.string()), ("page_location", pa.string()),
    ("page_referrer", pa.string()), ("utm_source", pa.string()), ("utm_medium", pa.string()),
    ("utm_campaign", pa.string()), ("device_category", pa.string()), ("geo_country", pa.string()),
    ("value", pa.float64()), ("currency", pa.string()), ("transaction_id", pa.string()),
])
# (utm_source, utm_medium, campaigns, referrer, weight); e-mail clicks are added separately.
_SOURCES = (
    ("google", "organic", (), "https://www.google.com/", 28),
    ("google", "cpc", ("brand_search", "generic_search", "autumn_sale"), "https://www.google.com/", 18),
    ("(direct)", "(none)", (), "", 25),
    ("facebook", "paid_social", ("autumn_sale_prospecting", "retargeting_q4"), "https://l.facebook.com/", 9),
    ("instagram", "paid_social", ("autumn_sale_prospecting",), "https://l.instagram.com/", 4),
    ("bing", "organic", (), "https://www.bing.com/", 4),
    ("partner-blog.com", "referral", (), "https://partner-blog.com/best-autumn-jackets", 4),
    ("tiktok", "paid_social", ("creator_collab",), "https://www.tiktok.com/", 3),
    ("newsletter", "email", (), "", 0),
)
_EMAIL_SOURCE = len(_SOURCES) - 1
_SLOTS = ("page_view", "login", "page_view", "form_submit", "add_to_cart", "page_view",
          "begin_checkout", "purchase")
_SLOT_PATH = ("", "/account/login", "", "/newsletter/signup", "", "/cart", "/checkout",
              "/checkout/confirmation")
_BROWSE = ("/", "/c/women", "/c/men", "/c/shoes", "/c/outerwear", "/c/accessories", "/sale",
           "/new-arrivals", "/search?q=boots", "/blog/style-guide")
_DEVICES = np.asarray(["mobile", "desktop", "tablet"])
_CATALOG = 2_000  # product pages; a few are far more popular than the rest


def _page_vocabulary() -> tuple[np.ndarray, np.ndarray, int]:
    """Every shop URL an event can be on: browse pages, funnel pages, product pages.

    Events store an index into this list (plus per-session landing URLs and external
    referrers), so millions of events do not each carry a wide fixed-width string.
    """
    sku = 10_000 + (np.arange(_CATALOG) * 7_919) % 90_000  # distinct: 7919 is coprime to 90000
    paths = list(_BROWSE) + [p for p in _SLOT_PATH if p] + [f"/product/sku-{k}" for k in sku.tolist()]
    slot_page = np.array([-1 if not p else len(_BROWSE) + [q for q in _SLOT_PATH if q].index(p)
                          for p in _SLOT_PATH])
    return np.asarray([SHOP + p for p in paths]), slot_page, len(paths) - _CATALOG


@dataclass(frozen=True)
class WebData:
    table: pa.Table  # all events of the chunk (WEB_SCHEMA)
    day: np.ndarray
    order_key: np.ndarray
    client_ids: np.ndarray  # distinct clients seen, with their person
    client_person: np.ndarray
    user_ids: np.ndarray  # distinct user_ids seen, with their person
    user_person: np.ndarray
    purchases: WebPurchases


def _sessions(chunk: Chunk, rng: np.random.Generator, people: People, clicks: Clicks):
    """Session starts: organic visits of visitors plus visits from e-mail clicks."""
    n, days = people.size, chunk.period.days
    visit_p = np.select([people.role == ROLE_WEB_ONLY, people.role == ROLE_CRM], [1.0, 0.33], 0.25)
    visitor = rng.random(n) < visit_p
    per_day = rng.gamma(1.2, 0.12, n)
    count = np.where(visitor, 1 + rng.poisson(per_day * days), 0)
    person = np.repeat(np.arange(n), count)
    day = rng.integers(0, days, person.size)
    start = chunk.period.day_start(day) + time_of_day(rng, person.size, "leisure")
    weights = np.array([s[4] for s in _SOURCES], dtype=float)
    source = rng.choice(len(_SOURCES), size=person.size, p=weights / weights.sum())
    campaign = np.full(person.size, "", dtype=object)
    for i, (_, _, options, _, _) in enumerate(_SOURCES):
        sel = np.flatnonzero(source == i)
        if options and sel.size:
            campaign[sel] = np.asarray(options)[rng.integers(0, len(options), sel.size)]
    landing = cat(SHOP, np.asarray(_BROWSE)[rng.integers(0, 8, person.size)])
    query = cat("?utm_source=", np.asarray([s[0] for s in _SOURCES])[source], "&utm_medium=",
                np.asarray([s[1] for s in _SOURCES])[source], "&utm_campaign=", campaign.astype(str))
    landing = np.where(campaign != "", cat(landing, query), landing)
    k = clicks.person.size
    return {
        "person": np.concatenate([person, clicks.person]),
        "start": np.concatenate([start, clicks.ts + rng.integers(2, 20, k)]),
        "source": np.concatenate([source, np.full(k, _EMAIL_SOURCE)]),
        "campaign": np.concatenate([campaign.astype(str), clicks.campaign_id]),
        "landing": np.concatenate([landing, clicks.url]),
    }


def _funnel(rng, people: People, contacts: Contacts, s: dict) -> np.ndarray:
    """Per-session event counts for each slot (rows: sessions, columns: _SLOTS)."""
    p, m = s["person"], s["person"].size
    has_account = rng.random(people.size) < 0.7
    can_login = has_account[p] & (contacts.person_day[p] >= 0) & (s["start"] >= contacts.person_created[p])
    login = can_login & (rng.random(m) < 0.4)
    cart = rng.random(m) < 0.22
    checkout = cart & (rng.random(m) < 0.5)
    purchase = checkout & can_login & (rng.random(m) < 0.6)
    login |= purchase  # checkout needs an account; guests drop off at begin_checkout
    form = (people.role[p] != ROLE_WEB_ONLY) & (rng.random(m) < 0.05)
    return np.stack([rng.geometric(0.45, m), login, rng.geometric(0.5, m) - 1, form, cart, cart,
                     checkout, purchase], axis=1).astype(np.int64)


def make_web(chunk: Chunk, people: People, contacts: Contacts, clicks: Clicks, basket: np.ndarray) -> WebData:
    """All web events of one chunk, and the purchases that become CRM orders."""
    rng = chunk.rng("web")
    period = chunk.period
    s = _sessions(chunk, rng, people, clicks)
    counts = _funnel(rng, people, contacts, s)
    n_people, n_sess = people.size, s["person"].size
    # Browsers: 1-3 per person; each session runs on one of them.
    n_clients = rng.choice([1, 2, 3], size=n_people, p=[0.55, 0.33, 0.12])
    first_seen = period.start_ts - rng.integers(0, 400 * SECONDS_PER_DAY, n_people * 3)
    all_clients = ga_client_ids(chunk.index, n_people * 3, chunk.keys.client, first_seen)
    device = _DEVICES[rng.choice(3, size=n_people * 3, p=[0.55, 0.38, 0.07])]
    client = s["person"] * 3 + (rng.random(n_sess) * n_clients[s["person"]]).astype(np.int64)
    session_ids = hex_ids("", chunk.index, n_sess, chunk.keys.session)
    # Lay out the events: one row per (session, slot, repetition), in slot order.
    per_session = counts.sum(axis=1)
    sess = np.repeat(np.arange(n_sess), per_session)
    slot = np.repeat(np.tile(np.arange(len(_SLOTS)), n_sess), counts.ravel())
    first_row = np.concatenate([[0], np.cumsum(per_session)[:-1]])
    pos = np.arange(sess.size) - first_row[sess]
    gap = np.where(pos == 0, 0, np.minimum(3 + rng.exponential(50, sess.size), 1700)).astype(np.int64)
    elapsed = np.cumsum(gap)
    offset = elapsed - elapsed[first_row[sess]]
    ts_us = (s["start"][sess] + offset) * 1_000_000 + rng.integers(0, 1_000_000, sess.size)
    person = s["person"][sess]
    # Pages as indices into one dictionary: [shop pages | session landing URLs | referrers].
    pages, slot_page, first_product = _page_vocabulary()
    n_ev, n_pages = sess.size, pages.size
    product = first_product + (rng.random(n_ev) ** 2.5 * _CATALOG).astype(np.int64)
    browse = np.where(rng.random(n_ev) < 0.4, product, rng.integers(0, len(_BROWSE), n_ev))
    page = np.where(slot == 4, product, np.where(slot_page[slot] < 0, browse, slot_page[slot]))
    location = np.where(pos == 0, n_pages + sess, page)
    referrers = np.asarray([x[3] for x in _SOURCES])
    referrer = np.where(pos == 0, n_pages + n_sess + s["source"][sess], np.roll(location, 1))
    no_referrer = (pos == 0) & (referrers[s["source"][sess]] == "")
    urls = pa.array(np.concatenate([pages, s["landing"], referrers]).astype(str))
    logged_in = (counts[sess, 1] > 0) & (slot >= 1)
    user = np.where(logged_in, contacts.primary_id[person], "")
    is_form = slot == 3
    typed = np.full(n_ev, "", dtype=people.email.dtype)
    typed[is_form] = people.email[person[is_form]]
    typed = corrupt.email_noise(rng, typed, 0.3)
    purchase = slot == 7
    cents = (basket[person] * np.exp(rng.normal(0, 0.35, sess.size))).astype(np.int64) + 99
    # Where the session comes from: home, or (4%) abroad on holiday or a business trip.
    abroad = rng.random(n_sess) < 0.04
    session_country = np.where(abroad, np.asarray(COUNTRIES)[rng.integers(0, len(COUNTRIES), n_sess)],
                               people.country[s["person"]])
    country = session_country[sess]
    keep = ts_us < period.end_ts * 1_000_000
    n_purchase = int((purchase & keep).sum())
    order_id = np.full(sess.size, "", dtype=object)
    order_id[purchase & keep] = order_ids(chunk.index, n_purchase, chunk.keys.order, offset=WEB_ORDER_OFFSET)
    first_event = pos == 0
    source = s["source"][sess]
    utm_campaign = np.where(first_event, s["campaign"][sess], "")
    k = np.flatnonzero(keep)
    present = lambda x: pa.array(x[k].astype(str), pa.string(), mask=(x[k] == ""))  # noqa: E731
    table = pa.table({
        "event_id": pa.array(hex_ids("", chunk.index, k.size, chunk.keys.web_event)),
        "event_timestamp": pa.array(ts_us[k], pa.timestamp("us", tz="UTC")),
        "event_name": pa.array(np.asarray(_SLOTS)[slot[k]]),
        "client_id": pa.array(all_clients[client[sess[k]]]),
        "user_id": present(user),
        "email": present(np.where(is_form, typed, "")),
        "session_id": pa.array(session_ids[sess[k]]),
        "page_location": urls.take(pa.array(location[k])),
        "page_referrer": urls.take(pa.array(referrer[k], mask=no_referrer[k])),
        "utm_source": present(np.where(first_event, np.asarray([x[0] for x in _SOURCES])[source], "")),
        "utm_medium": present(np.where(first_event, np.asarray([x[1] for x in _SOURCES])[source], "")),
        "utm_campaign": present(utm_campaign),
        "device_category": pa.array(device[client[sess[k]]]),
        "geo_country": pa.array(country[k]),
        "value": pa.array(cents[k] / 100.0, pa.float64(), mask=~purchase[k]),
        "currency": present(np.where(purchase, currency_of(people.country[person]), "")),
        "transaction_id": present(order_id.astype(str)),
    }, schema=WEB_SCHEMA)
    seen_clients = np.unique(client[sess[k]])
    user_rows = k[user[k] != ""]
    seen_users, first_user = np.unique(user[user_rows], return_index=True)
    bought = np.flatnonzero(purchase & keep)
    return WebData(
        table=table,
        day=period.day_of(ts_us[k] // 1_000_000),
        order_key=ts_us[k],
        client_ids=all_clients[seen_clients],
        client_person=seen_clients // 3,
        user_ids=seen_users,
        user_person=person[user_rows[first_user]],
        purchases=WebPurchases(
            order_id=order_id[bought].astype(str),
            person=person[bought],
            contact_id=user[bought],
            ts=ts_us[bought] // 1_000_000,
            cents=cents[bought],
        ),
    )
