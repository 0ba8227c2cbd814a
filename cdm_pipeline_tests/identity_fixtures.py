"""Small staged warehouses for the identity tests: hand-made rows and a seeded labelled dataset.

A warehouse here is a fresh DuckDB file holding ``staging.contacts`` and ``staging.web_events``
exactly as staging defines them (``staging_columns``), plus a config loaded from a YAML file
written beside it, so the identity library runs on the same shapes the pipeline gives it.
"""

from __future__ import annotations

import datetime as dt
import random
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

from cdm_pipeline.config import CdmConfig, load_config
from cdm_pipeline.lib.staging.columns import staging_columns
from cdm_pipeline.lib.warehouse import connect

DAY1 = dt.date(2026, 10, 1)
DAY2 = dt.date(2026, 10, 2)
UTC = dt.timezone.utc

CONTACT_COLUMNS = (
    "first_name", "last_name", "email", "phone", "birth_date", "address_line1", "address_line2",
    "city", "postcode", "region", "country", "company", "email_opt_in", "do_not_sell",
    "created_at", "updated_at",
)
WEB_COLUMNS = ("client_id", "user_id", "email", "event_name", "occurred_at")

# Source definitions for the config file, by name. Contacts sources map every canonical column
# they may carry (identity.same_ids checks that ``linked_id`` / ``user_id`` are mapped).
SOURCES: dict[str, dict] = {
    "crm_contacts": {
        "system": "crm", "kind": "contacts", "format": "csv", "path": "crm/{date}/*.csv",
        "id_column": "contact_id", "columns": {c: c for c in CONTACT_COLUMNS},
    },
    "shop_customers": {
        "system": "shop", "kind": "contacts", "format": "csv", "path": "shop/{date}/*.csv",
        "id_column": "customer_no", "columns": {c: c for c in CONTACT_COLUMNS},
    },
    "email_subscribers": {
        "system": "email", "kind": "contacts", "format": "jsonl", "path": "esp/{date}/*.jsonl",
        "id_column": "subscriber_id",
        "columns": {"first_name": "first_name", "last_name": "last_name", "email": "email",
                    "linked_id": "crm_id"},
    },
    "web_events": {
        "system": "web", "kind": "web_events", "format": "parquet", "path": "web/{date}/*.parquet",
        "id_column": "event_id", "columns": {c: c for c in WEB_COLUMNS},
    },
}


def write_identity_config(
    folder: Path, sources: Sequence[str] = ("crm_contacts",), **identity: object
) -> CdmConfig:
    """Write ``cdm.yaml`` in ``folder`` and load it; identity keys override small test defaults.

    The defaults keep Splink training fast (few u-sampling pairs) and put the model and the
    overrides file in ``folder``.
    """
    section: dict[str, object] = {
        "model_path": "identity/model.json",
        "overrides_path": "identity/overrides.csv",
        "u_sample_pairs": 200_000,
    }
    section.update(identity)
    document = {
        "warehouse": "warehouse.duckdb",
        "landing_dir": "landing",
        "sources": [{"name": name, **SOURCES[name]} for name in sources],
        "identity": section,
    }
    path = folder / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(path)


def create_staging(path: Path) -> duckdb.DuckDBPyConnection:
    """A fresh warehouse file with empty ``staging.contacts`` and ``staging.web_events``."""
    conn = connect(path)
    conn.execute("CREATE SCHEMA IF NOT EXISTS staging")
    for kind in ("contacts", "web_events"):
        body = ", ".join(f"{name} {ddl}" for name, ddl in staging_columns(kind).items())
        conn.execute(f"CREATE TABLE staging.{kind} ({body})")
    return conn


def contact(source: str, record_id: str, *, day: dt.date = DAY1, flags: Iterable[str] = (), **values) -> dict:
    """One staged contact row; ``birth_date`` may be a date or an ISO string."""
    row = {"source_name": source, "source_record_id": record_id, "_partition_date": day,
           "quality_flags": list(flags)}
    birth = values.get("birth_date")
    if isinstance(birth, str):
        values["birth_date"] = dt.date.fromisoformat(birth)
        values.setdefault("birth_date_text", birth)
    elif isinstance(birth, dt.date):
        values.setdefault("birth_date_text", birth.isoformat())
    row.update(values)
    return row


def web_event(
    source: str, event_id: str, client_id: str | None, *, user_id: str | None = None,
    email: str | None = None, day: dt.date = DAY1, hour: int = 12, flags: Iterable[str] = (),
) -> dict:
    """One staged web event (a page view) seen on ``client_id``."""
    return {
        "source_name": source, "source_record_id": event_id, "client_id": client_id,
        "user_id": user_id, "email": email, "event_name": "page_view",
        "occurred_at": dt.datetime.combine(day, dt.time(hour), tzinfo=UTC),
        "_partition_date": day, "quality_flags": list(flags),
    }


def insert_rows(conn: duckdb.DuckDBPyConnection, kind: str, rows: Sequence[dict]) -> None:
    """Insert staged rows into ``staging.<kind>``, filling the lineage columns staging fills."""
    columns = list(staging_columns(kind))
    systems = {name: spec["system"] for name, spec in SOURCES.items()}
    values = []
    for number, row in enumerate(rows, start=1):
        full = dict.fromkeys(columns)
        full.update(
            source_system=systems.get(row["source_name"], row["source_name"]),
            _source_file=f"{row['source_name']}/{row['_partition_date']}/part-0.csv",
            _source_row=number,
        )
        full.update(row)
        unknown = set(full) - set(columns)
        if unknown:
            raise KeyError(f"not a staging.{kind} column: {sorted(unknown)}")
        values.append([full[c] for c in columns])
    if values:
        marks = ", ".join("?" for _ in columns)
        conn.executemany(f"INSERT INTO staging.{kind} ({', '.join(columns)}) VALUES ({marks})", values)


@dataclass
class Warehouse:
    conn: duckdb.DuckDBPyConnection
    config: CdmConfig


def staged_warehouse(
    folder: Path, contacts: Sequence[dict] = (), web_events: Sequence[dict] = (),
    sources: Sequence[str] = ("crm_contacts",), **identity: object,
) -> Warehouse:
    """Config + warehouse file in ``folder`` with the given staged rows."""
    config = write_identity_config(folder, sources, **identity)
    conn = create_staging(config.warehouse)
    insert_rows(conn, "contacts", contacts)
    insert_rows(conn, "web_events", web_events)
    return Warehouse(conn, config)


def write_truth(path: Path, truth: Iterable[tuple[str, str, str]]) -> Path:
    lines = ["source_name,source_record_id,entity"] + [",".join(t) for t in truth]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- A labelled dataset ---------------------------------------------------------------------

FIRST_NAMES = (
    "Oliver", "George", "Harry", "Jack", "Jacob", "Noah", "Charlie", "Thomas", "Oscar", "William",
    "James", "Henry", "Leo", "Alfie", "Joshua", "Freddie", "Archie", "Ethan", "Isaac", "Alexander",
    "Joseph", "Edward", "Samuel", "Max", "Daniel", "Arthur", "Lucas", "Mohammed", "Logan", "Theo",
    "Harrison", "Benjamin", "Mason", "Sebastian", "Finley", "Adam", "Dylan", "Zachary", "Riley",
    "Olivia", "Amelia", "Isla", "Ava", "Emily", "Isabella", "Mia", "Poppy", "Ella", "Lily",
    "Sophia", "Grace", "Evie", "Scarlett", "Ruby", "Chloe", "Sophie", "Daisy", "Freya",
    "Phoebe", "Florence", "Alice", "Jessica", "Sienna", "Matilda", "Evelyn", "Eva", "Millie",
    "Harriet", "Imogen", "Rosie", "Beatrice", "Martha", "Eleanor", "Hannah", "Priya", "Aisha",
)
LAST_NAMES = (
    "Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
    "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood",
    "Jackson", "Clarke", "Patel", "Khan", "Lewis", "James", "Phillips", "Mason", "Mitchell",
    "Rose", "Davis", "Rodriguez", "Cox", "Alexander", "Morgan", "Moore", "Mills", "King",
    "Harris", "Campbell", "Hughes", "Edwards", "Turner", "Cooper", "Parker", "Collins", "Ward",
    "Bailey", "Bell", "Carter", "Murphy", "Morris", "Cook", "Richardson", "Watson", "Young",
    "Baker", "Harrison", "Gray", "Holmes", "Kelly", "Marshall", "Fletcher", "Chapman", "Hunt",
    "Ellis", "Reynolds", "Matthews", "Lloyd", "Knight", "Palmer", "Webb", "Dixon", "Pearson",
    "Barker", "Fisher", "Burton", "Gibson", "Stevens", "Ahmed", "Hussain", "Begum", "Sutton",
    "Whitaker", "Hargreaves", "Pritchard", "Oakley", "Thornton", "Kaur", "Nowak", "Okafor",
)
STREETS = (
    "High Street", "Station Road", "Church Lane", "Victoria Road", "Green Lane", "Manor Road",
    "Park Avenue", "Queens Road", "New Road", "Mill Lane", "Kings Road", "Grange Road",
    "School Lane", "The Crescent", "North Street", "Springfield Road", "Windsor Road",
    "Highfield Road", "Albert Road", "London Road",
)
CITIES = (
    "London", "Leeds", "Bristol", "Manchester", "Sheffield", "Norwich", "York", "Bath",
    "Cardiff", "Nottingham", "Leicester", "Exeter", "Brighton", "Reading", "Oxford",
)
DOMAINS = ("gmail.com", "outlook.com", "yahoo.co.uk", "hotmail.co.uk", "icloud.com", "btinternet.com")


@dataclass(frozen=True)
class Person:
    entity: str
    first_name: str
    last_name: str
    birth_date: dt.date
    email: str
    phone: str
    address_line1: str
    postcode: str
    city: str


def _typo(rng: random.Random, word: str) -> str:
    """One keyboard slip in a word: a substituted, dropped, doubled or transposed letter."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("substitute", "drop", "double", "transpose"))
    if kind == "substitute":
        letter = rng.choice([c for c in string.ascii_lowercase if c != word[i].lower()])
        return word[:i] + letter + word[i + 1:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def _postcode(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUWY"
    return (f"{rng.choice(letters)}{rng.choice(letters)}{rng.randint(1, 29)} "
            f"{rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}")


def _phone(rng: random.Random) -> str:
    return "+447" + "".join(str(rng.randint(0, 9)) for _ in range(9))


def make_people(rng: random.Random, count: int, prefix: str = "P") -> list[Person]:
    """``count`` distinct people with distinct (first, last) names, emails and phones."""
    people: list[Person] = []
    names: set[tuple[str, str]] = set()
    while len(people) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        if (first, last) in names:
            continue
        names.add((first, last))
        number = len(people) + 1
        people.append(Person(
            entity=f"{prefix}{number:04d}",
            first_name=first,
            last_name=last,
            birth_date=dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(50 * 365)),
            email=f"{first}.{last}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}".lower(),
            phone=_phone(rng),
            address_line1=f"{rng.randint(1, 199)} {rng.choice(STREETS)}",
            postcode=_postcode(rng),
            city=rng.choice(CITIES),
        ))
    return people


def _swap_day_month(date: dt.date) -> dt.date:
    return dt.date(date.year, date.day, date.month) if date.day <= 12 and date.day != date.month else date


def _record(person: Person, source: str, record_id: str, fields: Sequence[str], **changed) -> dict:
    values = {f: getattr(person, f) for f in fields}
    values.update({k: v for k, v in changed.items() if k in fields})
    return contact(source, record_id, **values)


def labelled_contacts(
    seed: int = 7, people: int = 120,
    fields: Sequence[str] = ("first_name", "last_name", "email", "phone", "birth_date",
                             "address_line1", "postcode", "city"),
) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """Contact records for ``people`` people across CRM, a web shop and (with email) an ESP.

    Every person has one CRM record; some have a CRM duplicate (a name typo, no phone); most
    appear in the shop with variation (a typo in one name, day and month swapped, a different
    or missing email, a changed phone, a new address); with an email column, many also subscribe to the ESP
    with their CRM address. Returns the staged rows and the truth (source, record id, entity).
    """
    rng = random.Random(seed)
    rows: list[dict] = []
    truth: list[tuple[str, str, str]] = []

    def add(row: dict, person: Person) -> None:
        rows.append(row)
        truth.append((row["source_name"], row["source_record_id"], person.entity))

    for number, person in enumerate(make_people(rng, people), start=1):
        add(_record(person, "crm_contacts", f"C{number:04d}", fields), person)
        if rng.random() < 0.15:
            name_field = rng.choice(("first_name", "last_name"))
            add(_record(person, "crm_contacts", f"C{number:04d}-dup", fields,
                        **{name_field: _typo(rng, getattr(person, name_field))}, phone=None), person)
        if rng.random() < 0.75:
            changed: dict[str, object] = {}
            if rng.random() < 0.2:
                name_field = rng.choice(("first_name", "last_name"))
                changed[name_field] = _typo(rng, getattr(person, name_field))
            if rng.random() < 0.15:
                changed["birth_date"] = _swap_day_month(person.birth_date)
            email_roll = rng.random()
            if email_roll < 0.2:
                changed["email"] = None
            elif email_roll < 0.5:
                changed["email"] = f"{person.first_name[0]}{person.last_name}@work{number}.co.uk".lower()
            if rng.random() < 0.25:
                changed["phone"] = _phone(rng)
            if rng.random() < 0.1:  # moved house within the same city
                changed["address_line1"] = f"{rng.randint(1, 199)} {rng.choice(STREETS)}"
                changed["postcode"] = _postcode(rng)
            add(_record(person, "shop_customers", f"S{number:04d}", fields, **changed), person)
        if "email" in fields and rng.random() < 0.5:
            add(_record(person, "email_subscribers", f"E{number:04d}",
                        ("first_name", "last_name", "email")), person)
    return rows, truth
