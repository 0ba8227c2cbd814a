"""Realistic demo landing data: CRM, e-mail marketing and web analytics exports of N people.

``generate_demo`` simulates a population of people over daily partitions and writes what three
systems would export about them (CSV, JSONL and Parquet landing files), with the mess real
exports carry: duplicates with nicknames and typos, updates, junk identifiers, malformed lines.
Beside the landing folders it writes ``ground_truth.parquet``, mapping every source record to
the person behind it, so identity resolution can be measured rather than eyeballed.

People are simulated in fixed-size chunks with their own random streams, so memory stays
bounded (a million people never sit in memory at once) and the output depends only on the
arguments: the same seed gives byte-identical text files and equal Parquet tables.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import writer
from .context import Chunk, IdKeys, Period
from .crm import CONTACT_COLUMNS, make_contacts
from .email import EVENT_COLUMNS, SUBSCRIBER_COLUMNS, Campaign, campaign_schedule, make_email
from .names import RefData, load
from .orders import ORDER_COLUMNS, make_orders, purchase_profile
from .people import make_people
from .web import WEB_SCHEMA, make_web

__all__ = [
    "CONTACT_COLUMNS", "DEFAULT_CHUNK_PEOPLE", "DemoSummary", "EVENT_COLUMNS", "ORDER_COLUMNS",
    "SUBSCRIBER_COLUMNS", "WEB_SCHEMA", "generate_demo",
]

log = logging.getLogger(__name__)

DEFAULT_CHUNK_PEOPLE = 25_000
_MAX_CHUNKS = 4_096  # subscriber ids are 32-bit: 12 bits of chunk, 20 bits of record
_MAX_CHUNK_PEOPLE = 80_000  # web client ids: 18 bits of record = 3 browser slots per person


@dataclass(frozen=True)
class DemoSummary:
    """What a ``generate_demo`` run wrote (counts only, never data)."""

    out_dir: Path
    people: int
    days: int
    seed: int
    start_date: dt.date
    files_written: int
    # Lines/rows written per file family (crm_contacts, crm_orders, email_subscribers,
    # email_events, web_events; malformed lines included) plus ground_truth rows.
    rows: dict[str, int]
    ground_truth_path: Path
    seconds: float


def _check(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


MARKER = ".cdm-demo"  # written beside the demo folders: they may be deleted by the next run


def _clean(out_dir: Path) -> None:
    """Remove only what this generator writes, so a re-run starts from a clean slate.

    A landing folder holding real exports must never be wiped by a demo run: without the marker
    the previous run left, existing crm/, email/ or web/ folders are an error.
    """
    existing = [name for name in writer.OWNED if (out_dir / name).exists()]
    if existing and not (out_dir / MARKER).exists():
        raise ValueError(
            f"{out_dir} already holds {', '.join(existing)}/ not written by the demo generator;"
            " choose an empty folder (the demo replaces these folders)"
        )
    for name in writer.OWNED:
        target = out_dir / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
    for name in ("ground_truth.parquet", "ground_truth.parquet.tmp"):
        (out_dir / name).unlink(missing_ok=True)


def _chunk(
    out_dir: Path, chunk: Chunk, ref: RefData, campaigns: list[Campaign], truth: writer.GroundTruthWriter
) -> dict[str, int]:
    """Simulate one chunk, write its files for every day and its ground-truth rows."""
    people = make_people(chunk, ref)
    contacts = make_contacts(chunk, ref, people)
    rate, basket = purchase_profile(chunk, people)
    email = make_email(chunk, ref, people, contacts, campaigns)
    web = make_web(chunk, people, contacts, email.clicks, basket)
    orders = make_orders(chunk, people, contacts, web.purchases, rate, basket)

    days = chunk.period.days
    plan = (
        (writer.CONTACTS, contacts.columns, contacts.day, contacts.order_key, contacts.broken),
        (writer.ORDERS, orders.columns, orders.day, orders.order_key, None),
        (writer.SUBSCRIBERS, email.subscribers, email.sub_day, email.sub_key, None),
        (writer.EMAIL_EVENTS, email.events, email.event_day, email.event_key, email.event_broken),
        (writer.WEB_EVENTS, web.table, web.day, web.order_key, None),
    )
    rows = {family.source: 0 for family, *_ in plan}
    for label in chunk.period.labels():
        for family in writer.FAMILIES:
            (out_dir / family.folder / label).mkdir(parents=True, exist_ok=True)
    for family, columns, day, key, broken in plan:
        for label, day_rows in zip(chunk.period.labels(), writer.by_day(day, key, days), strict=True):
            path = writer.file_path(out_dir, family, label, chunk.index)
            if family.suffix == "csv":
                rows[family.source] += writer.write_csv(path, columns, day_rows, broken)
            elif family.suffix == "jsonl":
                rows[family.source] += writer.write_jsonl(path, columns, day_rows, broken)
            else:
                rows[family.source] += writer.write_parquet(path, columns, day_rows)

    pid = people.person_id
    truth.write("crm_contacts", contacts.rec_id, pid[contacts.rec_person])
    truth.write("email_subscribers", email.sub_ids, pid[email.sub_id_person])
    truth.write("crm_orders", orders.columns["order_id"], pid[orders.person])
    truth.write("email_events", email.events["event_id"], pid[email.event_person])
    # Web identities under the names the identity graph gives them (lib/identity/records.py).
    truth.write("web_events", np.char.add("client:", web.client_ids.astype(str)), pid[web.client_person])
    truth.write("web_events", np.char.add("user:", web.user_ids.astype(str)), pid[web.user_person])
    return rows


# The demo's first day when neither the config nor the command line names one.
DEMO_START_DATE = dt.date(2026, 10, 1)


def generate_demo(
    out_dir: Path,
    people: int = 5000,
    days: int = 14,
    seed: int = 42,
    start_date: dt.date = DEMO_START_DATE,
    *,
    chunk_people: int = DEFAULT_CHUNK_PEOPLE,
) -> DemoSummary:
    """Write realistic landing files for ``people`` simulated people over ``days`` partitions.

    Args:
        out_dir: Landing root. Only ``crm/``, ``email/``, ``web/`` and ``ground_truth.parquet``
            inside it are deleted and rewritten; anything else there is left alone.
        people: Number of underlying people (>= 1).
        days: Number of daily partitions, ``start_date`` .. ``start_date + days - 1`` (>= 1).
        seed: Non-negative seed; the same arguments always produce the same files.
        start_date: Date of the first partition (it holds the initial loads); a date or an
            ISO ``YYYY-MM-DD`` string.
        chunk_people: People simulated together (memory per chunk; one file per chunk and day).

    Returns:
        A :class:`DemoSummary` with file and row counts.

    Raises:
        ValueError: On a non-positive ``people``/``days``, a negative seed, or a population too
            large for the id spaces at this chunk size.
    """
    started = time.perf_counter()
    people = _check("people", people, 1)
    days = _check("days", days, 1)
    seed = _check("seed", seed, 0)
    chunk_people = _check("chunk_people", chunk_people, 1, _MAX_CHUNK_PEOPLE)
    if isinstance(start_date, str):
        try:
            start_date = dt.date.fromisoformat(start_date)
        except ValueError:
            raise ValueError(f"start_date must be YYYY-MM-DD, got {start_date!r}") from None
    if isinstance(start_date, dt.datetime):
        start_date = start_date.date()
    if not isinstance(start_date, dt.date):
        raise ValueError(f"start_date must be a date, got {start_date!r}")
    n_chunks = math.ceil(people / chunk_people)
    if n_chunks > _MAX_CHUNKS:
        raise ValueError(
            f"{people} people in chunks of {chunk_people} needs {n_chunks} chunks; at most "
            f"{_MAX_CHUNKS} are supported, use a larger chunk_people"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _clean(out_dir)
    (out_dir / MARKER).write_text("Written by `cdm generate-demo`: crm/, email/ and web/ here are demo data.\n")
    period = Period(start_date, days)
    keys = IdKeys.from_seed(seed)
    campaigns = campaign_schedule(period, seed)
    ref = load()
    rows = {family.source: 0 for family in writer.FAMILIES}
    truth_path = out_dir / "ground_truth.parquet"
    truth = writer.GroundTruthWriter(truth_path)
    ok = False
    try:
        for index in range(n_chunks):
            first = index * chunk_people
            chunk = Chunk(index, first, min(chunk_people, people - first), people, period, seed, keys)
            for source, count in _chunk(out_dir, chunk, ref, campaigns, truth).items():
                rows[source] += count
            log.info("demo chunk %d/%d done (%d people)", index + 1, n_chunks, chunk.size)
        ok = True
    finally:
        truth.close(ok)
    rows["ground_truth"] = truth.rows
    summary = DemoSummary(
        out_dir=out_dir,
        people=people,
        days=days,
        seed=seed,
        start_date=start_date,
        files_written=n_chunks * days * len(writer.FAMILIES) + 1,
        rows=rows,
        ground_truth_path=truth_path,
        seconds=time.perf_counter() - started,
    )
    log.info(
        "demo data: %d people x %d days -> %d files, rows %s in %.1fs",
        people, days, summary.files_written, rows, summary.seconds,
    )
    return summary
