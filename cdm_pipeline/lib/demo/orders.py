"""CRM orders: two years of history in the initial load, then daily orders and web purchases.

Purchase frequency is heavy-tailed (a Gamma-Poisson mix: many customers bought once, a few buy
every month) so recency/frequency/monetary segmentation has real structure to find. Every order
points at one of the person's contact records that existed when the order was placed; web
purchases become orders whose ``order_id`` is the web ``transaction_id``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import corrupt
from .context import SECONDS_PER_DAY, Chunk
from .crm import Contacts
from .ids import iso_seconds, money, order_ids
from .people import People

ORDER_COLUMNS = ("order_id", "contact_id", "order_date", "amount", "currency", "status", "channel")
HISTORY_DAYS = 730
WEB_ORDER_OFFSET = 1 << 21  # web purchases take the upper half of a chunk's order-id space
BAD_ROW_RATE = 0.0005  # per kind (negative amount, empty date): ~0.1% of orders overall


@dataclass(frozen=True)
class WebPurchases:
    """Purchases the web shop recorded; each becomes a CRM order with the same id."""

    order_id: np.ndarray
    person: np.ndarray  # local person index
    contact_id: np.ndarray  # the account the shopper was logged in with
    ts: np.ndarray  # unix seconds
    cents: np.ndarray


@dataclass(frozen=True)
class Orders:
    columns: dict[str, np.ndarray]
    day: np.ndarray
    order_key: np.ndarray
    person: np.ndarray


def currency_of(country: np.ndarray) -> np.ndarray:
    """GBP in the UK, USD in the US, EUR elsewhere (all other simulated countries use the euro)."""
    return np.select([country == "GB", country == "US"], ["GBP", "USD"], "EUR")


def purchase_profile(chunk: Chunk, people: People) -> tuple[np.ndarray, np.ndarray]:
    """Per person: expected orders per year (heavy-tailed) and typical basket in cents."""
    rng = chunk.rng("profile")
    # Half are occasional shoppers; the rest follow a long tail up to monthly-or-more buyers.
    occasional = rng.random(people.size) < 0.5
    rate = np.where(occasional, rng.gamma(1.0, 0.3, people.size), rng.gamma(0.7, 2.5, people.size))
    basket = np.exp(rng.normal(np.log(5500), 0.5, people.size))
    return rate, basket


def _contact_at(
    rng: np.random.Generator, contacts: Contacts, person: np.ndarray, ts: np.ndarray, n_people: int
) -> np.ndarray:
    """A random one of the person's contact records that already existed at ``ts``."""
    slots = np.zeros((n_people, 3), dtype=np.int64)
    created = np.full((n_people, 3), np.iinfo(np.int64).max)
    rank = np.zeros(contacts.rec_person.size, dtype=np.int64)
    order = np.lexsort((contacts.rec_created, contacts.rec_person))
    sorted_person = contacts.rec_person[order]
    starts = np.searchsorted(sorted_person, sorted_person, side="left")
    rank[order] = np.arange(order.size) - starts
    slots[contacts.rec_person, rank] = np.arange(contacts.rec_person.size)
    created[contacts.rec_person, rank] = contacts.rec_created
    valid = np.maximum((created[person] <= ts[:, None]).sum(axis=1), 1)
    pick = np.minimum((rng.random(person.size) * valid).astype(np.int64), valid - 1)
    return contacts.rec_id[slots[person, pick]]


def make_orders(
    chunk: Chunk, people: People, contacts: Contacts, web: WebPurchases, rate: np.ndarray, basket: np.ndarray
) -> Orders:
    """All order rows of one chunk."""
    rng = chunk.rng("orders")
    period = chunk.period
    has_crm = contacts.person_day >= 0
    # History: customers already in the initial load, orders since they became customers.
    old = np.flatnonzero(has_crm & (contacts.person_day == 0))
    since = np.maximum(contacts.person_created[old], period.start_ts - HISTORY_DAYS * SECONDS_PER_DAY)
    years = (period.start_ts - since) / (365 * SECONDS_PER_DAY)
    n_hist = rng.poisson(rate[old] * years)
    h_person = np.repeat(old, n_hist)
    h_since = np.repeat(since, n_hist)
    h_ts = h_since + (rng.random(h_person.size) * (period.start_ts - h_since)).astype(np.int64)
    # New orders in the period (shop, phone and untracked web orders), after the contact exists.
    crm = np.flatnonzero(has_crm)
    n_new = rng.poisson(rate[crm] * period.days / 365 * 1.5)
    d_person = np.repeat(crm, n_new)
    d_from = np.repeat(np.maximum(contacts.person_created[crm], period.start_ts), n_new)
    d_ts = d_from + (rng.random(d_person.size) * (period.end_ts - d_from)).astype(np.int64)
    n_base = h_person.size + d_person.size
    person = np.concatenate([h_person, d_person, web.person])
    ts = np.concatenate([h_ts, d_ts, web.ts])
    contact = np.concatenate([
        _contact_at(rng, contacts, np.concatenate([h_person, d_person]), ts[:n_base], people.size),
        web.contact_id,
    ])
    cents = np.concatenate([
        (basket[person[:n_base]] * np.exp(rng.normal(0, 0.35, n_base))).astype(np.int64) + 99,
        web.cents,
    ])
    historic = np.arange(person.size) < h_person.size
    status = np.where(
        historic,
        np.asarray(["completed", "refunded", "cancelled"])[rng.choice(3, person.size, p=[0.9, 0.05, 0.05])],
        np.asarray(["completed", "pending", "cancelled", "refunded"])[
            rng.choice(4, person.size, p=[0.82, 0.1, 0.04, 0.04])],
    )
    channel = np.asarray(["web", "store", "phone"])[rng.choice(3, person.size, p=[0.45, 0.4, 0.15])]
    channel = np.where(np.arange(person.size) >= n_base, "web", channel)
    ids = np.concatenate([order_ids(chunk.index, n_base, chunk.keys.order), web.order_id])
    day = np.where(historic, 0, period.day_of(ts))
    amount = money(cents).astype(object)
    order_date = iso_seconds(ts)
    # A handful of bad rows for the quality checks: refunds booked as negative sales, lost dates.
    negative = corrupt.pick_rows(rng, person.size, BAD_ROW_RATE, 1 if chunk.index == 0 else 0)
    amount[negative] = money(-cents[negative])
    undated = corrupt.pick_rows(rng, person.size, BAD_ROW_RATE, 1 if chunk.index == 0 else 0)
    order_date = order_date.astype(object)
    order_date[undated] = ""
    return Orders(
        columns={
            "order_id": ids, "contact_id": contact, "order_date": order_date.astype(str),
            "amount": amount.astype(str), "currency": currency_of(people.country[person]),
            "status": status, "channel": channel,
        },
        day=day,
        order_key=ts,
        person=person,
    )
