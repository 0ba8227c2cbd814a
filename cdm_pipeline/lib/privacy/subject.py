"""The data subject of a privacy request: every record, identifier and customer id of one person.

A request names an e-mail address, a phone number or a customer id. The person is the customer
(or customers) those lead to through identity resolution, so a request by e-mail also reaches the
person's CRM record under an older address, their ESP subscription and the browsers they logged
in on. Every e-mail address and phone number any of those records ever held is the person's too,
and so is every record, of anyone, that holds one of them: erasing "jane@x.org" must remove that
value wherever it is.

Values stay in memory and in temporary tables of this connection; nothing here logs them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import ID_REGISTRY, XREF, quarantine_table, staging_table
from cdm_pipeline.lib.staging.links import CLIENT_PREFIX, LINK_COLUMNS, RECORD_LINKS, register_record_links
from cdm_pipeline.lib.standardise.emails import standardise_email
from cdm_pipeline.lib.standardise.phones import standardise_phone
from cdm_pipeline.lib.warehouse import quote_ident, quote_literal, table_exists

# Temporary tables describing the subject, for the SQL that finds their rows everywhere.
SUBJECT_RECORDS = "_subject_records"
SUBJECT_EMAILS = "_subject_emails"
SUBJECT_PHONES = "_subject_phones"
SUBJECT_LINEAGE = "_subject_lineage"


class SubjectError(ValueError):
    """The request does not name a usable identifier (the message carries no value)."""


@dataclass
class DataSubject:
    customer_ids: list[str] = field(default_factory=list)
    records: list[tuple[str, str]] = field(default_factory=list)  # (source_name, source_record_id)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.customer_ids or self.records)


def normalise_request(config: CdmConfig, email: str | None, phone: str | None) -> tuple[str | None, str | None]:
    """The request's e-mail and phone as staging writes them (so they match stored values)."""
    e = p = None
    if email is not None:
        e, issue = standardise_email(email)
        if not e or issue:
            raise SubjectError("the e-mail address of the request is not a valid address")
    if phone is not None:
        p, issue = standardise_phone(phone, config.default_region)
        if not p or issue:
            raise SubjectError("the phone number of the request is not a valid number")
    return e, p


def find_subject(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, *,
    email: str | None = None, phone: str | None = None, customer_id: str | None = None,
) -> DataSubject:
    """Everything that identifies the person named by one of ``email``, ``phone``, ``customer_id``.

    Also leaves the subject in this connection's temporary tables (``SUBJECT_*``), and the
    config's record links in ``RECORD_LINKS``, for ``staging_match_sql``.
    """
    if [email, phone, customer_id].count(None) != 2:
        raise SubjectError("name exactly one of e-mail, phone or customer id")
    email, phone = normalise_request(config, email, phone)
    register_record_links(conn, config)
    contacts, web = staging_table("contacts"), staging_table("web_events")
    has_identity = table_exists(conn, XREF)
    has_staging = table_exists(conn, contacts)
    seeds: set[tuple[str, str]] = set()
    if has_staging and (email or phone):
        seeds |= set(conn.execute(
            f"SELECT DISTINCT source_name, source_record_id FROM {contacts}"
            " WHERE email = $email OR phone = $phone",
            {"email": email, "phone": phone},
        ).fetchall())
    if email and table_exists(conn, web):
        seeds |= set(conn.execute(
            f"SELECT DISTINCT source_name, $prefix || client_id FROM {web}"
            " WHERE email = $email AND client_id IS NOT NULL",
            {"email": email, "prefix": CLIENT_PREFIX},
        ).fetchall())

    customers: set[str] = set()
    if customer_id and table_exists(conn, ID_REGISTRY):
        customers |= {_surviving_id(conn, customer_id)}
    elif customer_id:
        customers.add(customer_id)
    records = set(seeds)
    if has_identity:
        conn.execute("CREATE OR REPLACE TEMP TABLE _subject_seeds (source_name VARCHAR, source_record_id VARCHAR)")
        if seeds:
            conn.executemany("INSERT INTO _subject_seeds VALUES (?, ?)", sorted(seeds))
        customers |= {r[0] for r in conn.execute(
            f"SELECT DISTINCT customer_id FROM {XREF} JOIN _subject_seeds"
            " USING (source_name, source_record_id)"
        ).fetchall()}
        if customers:
            records |= set(conn.execute(
                f"SELECT source_name, source_record_id FROM {XREF}"
                " WHERE list_contains($ids, customer_id)", {"ids": sorted(customers)},
            ).fetchall())
        conn.execute("DROP TABLE _subject_seeds")

    emails = {email} if email else set()
    phones = {phone} if phone else set()
    register_subject(conn, records, set(), set())
    if has_staging:
        for e, p in conn.execute(
            f"""SELECT c.email, c.phone FROM {contacts} c JOIN {SUBJECT_RECORDS} r
            USING (source_name, source_record_id)"""
        ).fetchall():
            emails |= {e} - {None}
            phones |= {p} - {None}
    if table_exists(conn, web):
        emails |= {r[0] for r in conn.execute(
            f"""SELECT DISTINCT w.email FROM {web} w JOIN {SUBJECT_RECORDS} r
            ON r.source_name = w.source_name AND r.source_record_id = $prefix || w.client_id
            WHERE w.email IS NOT NULL""",
            {"prefix": CLIENT_PREFIX},
        ).fetchall()}
    subject = DataSubject(sorted(customers), sorted(records), sorted(emails), sorted(phones))
    register_subject(conn, set(subject.records), set(subject.emails), set(subject.phones))
    return subject


def _surviving_id(conn: duckdb.DuckDBPyConnection, customer_id: str) -> str:
    """Follow merges from an id the person may have been given before identity merged it."""
    current = customer_id
    for _ in range(50):
        rows = conn.execute(
            f"SELECT merged_into FROM {ID_REGISTRY} WHERE customer_id = ? AND status = 'merged'",
            [current],
        ).fetchall()
        if not rows or rows[0][0] is None:
            return current
        current = rows[0][0]
    return current


def register_subject(conn: duckdb.DuckDBPyConnection, records: set, emails: set, phones: set) -> None:
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {SUBJECT_RECORDS} (source_name VARCHAR, source_record_id VARCHAR)")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {SUBJECT_EMAILS} (value VARCHAR)")
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {SUBJECT_PHONES} (value VARCHAR)")
    if records:
        conn.executemany(f"INSERT INTO {SUBJECT_RECORDS} VALUES (?, ?)", sorted(records))
    if emails:
        conn.executemany(f"INSERT INTO {SUBJECT_EMAILS} VALUES (?)", [(e,) for e in sorted(emails)])
    if phones:
        conn.executemany(f"INSERT INTO {SUBJECT_PHONES} VALUES (?)", [(p,) for p in sorted(phones)])


# Lines that could not be read have no staged row: they are the subject's when their text holds
# one of the subject's addresses or the last nine digits of one of their numbers.
REJECTS_MATCH_SQL = f"""(
    EXISTS (SELECT 1 FROM {SUBJECT_EMAILS} e WHERE contains(lower(raw_line), e.value))
    OR EXISTS (SELECT 1 FROM {SUBJECT_PHONES} p WHERE contains(
        regexp_replace(raw_line, '[^0-9]', '', 'g'), right(p.value, 9))))"""


def audience_hashes(subject: DataSubject) -> set[str]:
    """The SHA-256 forms of the subject's addresses and numbers, as audience files hold them."""
    return {hashlib.sha256(v.encode()).hexdigest() for v in subject.emails + subject.phones}


def _names_subject_record(alias: str, column: str) -> str:
    """SQL: the row's ``column`` names one of the subject's records through a record link."""
    value = f"{alias}.{quote_ident(column)}"
    return (
        f"EXISTS (SELECT 1 FROM {RECORD_LINKS} l JOIN {SUBJECT_RECORDS} r ON r.source_name = l.target_source"
        f" WHERE l.source_name = {alias}.source_name AND l.id_column = {quote_literal(column)}"
        f" AND r.source_record_id = l.target_prefix || {value})"
    )


def staging_match_sql(config: CdmConfig, kind: str, alias: str = "t") -> str:
    """A condition true for rows of ``staging.<kind>`` / ``quarantine.<kind>`` that are the subject's.

    A row is the subject's when it is one of their records, holds one of their addresses or
    numbers, or names one of their records in a linked column (a contact's ``linked_id``, an
    order's ``contact_id``, a browser or login of a web event: ``lib/staging/links.py``).

    Uses the ``SUBJECT_*`` and ``RECORD_LINKS`` temporary tables ``find_subject`` leaves on the
    connection, so the SQL holds no config value; ``config`` is kept for the callers' signature.
    ``alias`` names the table in the caller's query.
    """
    if kind not in LINK_COLUMNS:
        raise ValueError(f"unknown kind {kind!r}")
    t = alias
    parts = [f"{t}.email IN (SELECT value FROM {SUBJECT_EMAILS})"]
    if kind == "contacts":
        parts += [
            f"EXISTS (SELECT 1 FROM {SUBJECT_RECORDS} r WHERE r.source_name = {t}.source_name"
            f" AND r.source_record_id = {t}.source_record_id)",
            f"{t}.phone IN (SELECT value FROM {SUBJECT_PHONES})",
        ]
    parts += [_names_subject_record(t, column) for column in LINK_COLUMNS[kind]]
    return " OR ".join(parts)


def mark_subject_lineage(conn: duckdb.DuckDBPyConnection, config: CdmConfig) -> int:
    """``SUBJECT_LINEAGE``: the landed file and line of every staged or quarantined subject row."""
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {SUBJECT_LINEAGE} (source_name VARCHAR, _source_file VARCHAR,"
        " _source_row BIGINT, _partition_date DATE)"
    )
    for kind in LINK_COLUMNS:
        for table in (staging_table(kind), quarantine_table(kind)):
            if table_exists(conn, table):
                conn.execute(
                    f"""INSERT INTO {SUBJECT_LINEAGE} SELECT source_name, _source_file, _source_row,
                    _partition_date FROM {table} t WHERE {staging_match_sql(config, kind)}"""
                )
    return conn.execute(f"SELECT count(*) FROM {SUBJECT_LINEAGE}").fetchall()[0][0]
