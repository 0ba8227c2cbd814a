"""The suppression list: identifiers of erased people, kept only as keyed hashes.

Erasing a person from the warehouse is not enough on its own: the source systems keep exporting
files, old partitions get re-run and backfilled, and each extract would bring the person back.
So every erased identifier goes on ``governance.suppression_list`` and every extract drops the
rows that match it *before* they are inserted (see ``lib/extract/load.py``).

The list must not itself become a list of the people who asked to be forgotten. It holds only
HMAC-SHA-256 hashes (``keyed_hash.py``) under a key that lives in ``$CDM_PRIVACY_KEY`` and never
in the warehouse: a copy of the warehouse cannot confirm that a given address was ever erased,
and a plain hash dictionary attack does not work without the key.

Two guards keep the list working across keys and copies: the warehouse records the key's
fingerprint (``check_privacy_key``: another key is refused, not silently matching nobody), and
every entry is also appended to the suppression ledger outside the warehouse
(``suppression_ledger.py``), which ``cdm restore`` re-applies to an older copy.

Values are hashed in the form staging would give them, with the same standardisers, so a
suppressed address matches however a source spells it (`` Jane.Doe@Example.org `` and
``jane.doe@example.org``); a phone matches its E.164 form, read in the row's country as staging
reads it. Entry kinds:

* ``email``: the standardised address (``jane.doe@example.org``);
* ``phone``: the E.164 number (``+447911123456``);
* ``record``: ``"<source_name>:<source_record_id>"`` (``crm_contacts:C123``), web identities as
  identity names them (``web_events:client:abc``, ``web_events:user:C123``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable

import duckdb

from cdm_pipeline.config import CdmConfig, SourceConfig
from cdm_pipeline.lib.catalog import PRIVACY_KEY_FINGERPRINT, SUPPRESSED_ROWS, SUPPRESSION_LIST, ensure
from cdm_pipeline.lib.personal_data.keyed_hash import (
    KEY_ENV_VAR,
    PrivacyKeyMismatch,
    key_fingerprint,
    keyed_hash,
    keyed_hash_params,
    keyed_hash_sql,
)
from cdm_pipeline.lib.personal_data.suppression_ledger import (
    LedgerEntry,
    append_ledger,
    connection_ledger,
    read_ledger,
)
from cdm_pipeline.lib.staging.links import LINK_COLUMNS, record_links
from cdm_pipeline.lib.staging.mapping import record_id_sql, text_sql
from cdm_pipeline.lib.staging.rules import phone_region_sql
from cdm_pipeline.lib.standardise import register_standardisers, standardise_email, standardise_phone
from cdm_pipeline.lib.warehouse import quote_ident, table_exists

logger = logging.getLogger(__name__)

KINDS = ("email", "phone", "record")

# Parameter names of the predicates start with this, so they cannot clash with a caller's.
_PREFIX = "cdm_sup"
_HMAC = f"{_PREFIX}_hmac"


def ensure_suppression_list(conn: duckdb.DuckDBPyConnection) -> None:
    """Create ``governance.suppression_list`` when missing."""
    ensure(conn, SUPPRESSION_LIST)


def normalise_entry(kind: str, value: str, region: str | None = None) -> str:
    """The form of ``value`` that is hashed for the list, as staging would spell it.

    Args:
        kind: ``email``, ``phone`` or ``record``.
        value: The identifier as the erasure request gives it.
        region: For a phone without a country code, the country it is read in (ISO code). An
            E.164 number needs none.

    Returns:
        The standardised e-mail address, the E.164 number, or the record reference as given.
        A value the standardiser cannot read is kept as it is (trimmed), exactly as staging
        keeps it, so a malformed address erased from staging still matches its raw rows.

    Raises:
        ValueError: an unknown kind, a blank value, or a record not of the form ``source:id``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown suppression kind {kind!r}; expected one of {', '.join(KINDS)}")
    text = value.strip(" ") if isinstance(value, str) else ""
    if not text:
        raise ValueError(f"a {kind} to suppress must not be blank")
    if kind == "email":
        return standardise_email(text).value or text
    if kind == "phone":
        return standardise_phone(text, region).value or text
    source, sep, record_id = text.partition(":")
    if not sep or not source or not record_id:
        raise ValueError("a record to suppress is written '<source_name>:<source_record_id>'")
    return text


def suppress(
    conn: duckdb.DuckDBPyConnection,
    key: bytes,
    entries: Iterable[tuple[str, str]],
    request_id: str | None,
    *,
    region: str | None = None,
) -> int:
    """Add identifiers to the suppression list, as keyed hashes only.

    An entry whose (kind, hash) is on the list already is not added again, so repeating an
    erasure is harmless.

    Args:
        conn: The warehouse connection.
        key: The privacy key (``privacy_key()``).
        entries: ``(kind, value)`` pairs; values are normalised first (``normalise_entry``).
        request_id: The erasure request the entries belong to (kept for the audit trail).
        region: The country national phone numbers are read in (see ``normalise_entry``).

    Returns:
        How many entries were new.

    Raises:
        ValueError: an entry of unknown kind, blank, or a malformed record reference.
    """
    pairs = sorted({(kind, keyed_hash(normalise_entry(kind, value, region), key)) for kind, value in entries})
    ensure_suppression_list(conn)
    fingerprint = check_privacy_key(conn, key)
    if not pairs:
        return 0
    added_at = dt.datetime.now(dt.timezone.utc)
    new = conn.execute(
        f"INSERT INTO {SUPPRESSION_LIST} (kind, value_hash, request_id, added_at)"
        " SELECT kind, value_hash, $request_id, $added_at"
        " FROM (SELECT unnest($kinds) AS kind, unnest($hashes) AS value_hash) AS new"
        f" WHERE NOT EXISTS (SELECT 1 FROM {SUPPRESSION_LIST} AS s"
        "                   WHERE s.kind = new.kind AND s.value_hash = new.value_hash)"
        " RETURNING kind, value_hash",
        {
            "request_id": request_id,
            "added_at": added_at,
            "kinds": [kind for kind, _ in pairs],
            "hashes": [value_hash for _, value_hash in pairs],
        },
    ).fetchall()
    _write_ledger(conn, fingerprint, [(kind, value_hash, request_id, added_at) for kind, value_hash in new])
    logger.info("suppression list: %d entries added (%d given)", len(new), len(pairs))
    return len(new)


def _write_ledger(
    conn: duckdb.DuckDBPyConnection, fingerprint: str, new: list[tuple[str, str, str | None, dt.datetime]]
) -> None:
    """Append the new entries to the ledger outside the warehouse (``suppression_ledger.py``).

    Written before the caller commits: if the erasure then fails, a restore erases the person
    anyway, which is what was asked. A warehouse without a ledger yet (written by an earlier
    version) gives it every entry it holds.
    """
    path = connection_ledger(conn)
    if path is None:
        return
    if not path.exists():
        new = conn.execute(
            f"SELECT kind, value_hash, request_id, added_at FROM {SUPPRESSION_LIST} ORDER BY added_at, kind, value_hash"
        ).fetchall()
    append_ledger(path, [
        LedgerEntry(kind, value_hash, request_id, added_at.astimezone(dt.timezone.utc).isoformat(), fingerprint)
        for kind, value_hash, request_id, added_at in new
    ])


def stored_key_fingerprint(conn: duckdb.DuckDBPyConnection) -> str | None:
    """The fingerprint of the privacy key the warehouse's suppression list was written with."""
    if not table_exists(conn, PRIVACY_KEY_FINGERPRINT):
        return None
    row = conn.execute(f"SELECT fingerprint FROM {PRIVACY_KEY_FINGERPRINT} ORDER BY recorded_at LIMIT 1").fetchone()
    return row[0] if row else None


def check_privacy_key(conn: duckdb.DuckDBPyConnection, key: bytes) -> str:
    """Refuse a privacy key other than the one the suppression list and its ledger were written with.

    Under another key no hash on the list matches anything: extracts would load erased people
    again and a restore would erase nobody, all without an error. The warehouse keeps the key's
    fingerprint (``keyed_hash.key_fingerprint``, never the key); the first key used on a
    warehouse that has none is recorded (a warehouse from before fingerprints trusts its first).

    Returns:
        The key's fingerprint.

    Raises:
        PrivacyKeyMismatch: the warehouse or its ledger was written under another key.
    """
    fingerprint = key_fingerprint(key)
    stored = stored_key_fingerprint(conn)
    ledger = connection_ledger(conn)
    others = sorted({e.key_fingerprint for e in read_ledger(ledger)} - {fingerprint}) if ledger else []
    if stored is not None and stored != fingerprint:
        others = [stored]
    if others:
        raise PrivacyKeyMismatch(
            f"{KEY_ENV_VAR} is not the key this warehouse's suppression list was written with (key fingerprint"
            f" {fingerprint}, recorded {others[0]}): under another key erased people would load again;"
            f" set the original {KEY_ENV_VAR}"
        )
    if stored is None:
        ensure(conn, PRIVACY_KEY_FINGERPRINT)
        conn.execute(
            f"INSERT INTO {PRIVACY_KEY_FINGERPRINT} VALUES (?, ?)", [fingerprint, dt.datetime.now(dt.timezone.utc)]
        )
    return fingerprint


def suppressed_count(conn: duckdb.DuckDBPyConnection) -> int:
    """How many entries the suppression list holds (0 when it does not exist)."""
    if not table_exists(conn, SUPPRESSION_LIST):
        return 0
    return int(conn.execute(f"SELECT count(*) FROM {SUPPRESSION_LIST}").fetchone()[0])


def has_suppressions(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether the suppression list exists and holds at least one entry."""
    if not table_exists(conn, SUPPRESSION_LIST):
        return False
    return bool(conn.execute(f"SELECT EXISTS (SELECT 1 FROM {SUPPRESSION_LIST})").fetchone()[0])


@dataclasses.dataclass
class _Check:
    """Values of a row and the list entries they are compared with.

    ``tests`` are ``(kind, listed)``: ``listed`` takes the SQL of the values, in the order of
    ``columns``, and returns the SQL of the value looked up on the list as ``kind``.
    """

    columns: tuple[str, ...]  # SQL over the raw row, each value as staging reads it
    tests: list[tuple[str, Callable[..., str]]]


class _Params:
    """Bound values of a predicate, named ``$cdm_sup_<n>``."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def bind(self, value: object) -> str:
        for name, bound in self.values.items():
            if bound == value and type(bound) is type(value):
                return f"${name}"
        name = f"{_PREFIX}_{len(self.values)}"
        self.values[name] = value
        return f"${name}"

    def used_in(self, sql: str) -> dict[str, object]:
        """The values ``sql`` refers to (DuckDB refuses a bound value the query does not use)."""
        return {name: value for name, value in self.values.items() if re.search(rf"\${name}\b", sql)}


def _checks(
    config: CdmConfig, source: SourceConfig, params: _Params, available: set[str] | None
) -> list[_Check]:
    """What to compare for ``source``: only the columns it maps (and the scan has)."""
    checks: list[_Check] = []
    email_kind, phone_kind, record_kind = KINDS

    def present(column: str) -> bool:
        return available is None or column.casefold() in available

    def mapped(canonical: str) -> str | None:
        """The raw row's value of a canonical column, as staging reads it (``text_sql``: trimmed,
        a nested field, the source's words, a name part); None when the rows cannot have it."""
        spec = source.column_spec(canonical)
        if spec is None or spec.column is None or spec.param or spec.column == source.explode:
            return None  # constants, file names, parameter lists and list elements: not in a row
        return text_sql(source, canonical, spec) if present(spec.column) else None

    def record(prefix: str) -> Callable[[str], str]:
        bound = params.bind(prefix)
        return lambda value: f"{bound} || {value}"

    email = mapped("email")
    if email:
        checks.append(_Check((email,), [(email_kind, lambda value: f"cdm_email({value}).value")]))
    if source.kind == "contacts":
        phone, country = mapped("phone"), mapped("country")
        if phone:
            default = params.bind(config.default_region)

            def e164(number: str, located: str | None = None) -> str:
                # The region staging reads the number in: the row's country when it is one.
                region = phone_region_sql(f"cdm_country({located})", default) if located else default
                return f"cdm_phone({number}, {region}).value"

            checks.append(_Check((phone, country) if country else (phone,), [(phone_kind, e164)]))
        # A source whose ids are generated in staging (id_from) has no id column to compare.
        if source.id_column and present(source.id_column):
            checks.append(_Check((record_id_sql(source, {}),), [(record_kind, record(f"{source.name}:"))]))
    # Ids of other records (lib/staging/links.py), each compared with every record it may name.
    links = sorted(
        (link for link in record_links(config) if link.source_name == source.name), key=lambda link: link.preference
    )
    for column in LINK_COLUMNS.get(source.kind, ()):
        value = mapped(column)
        targets = [link for link in links if link.id_column == column]
        if value and targets:
            checks.append(_Check(
                (value,), [(record_kind, record(f"{t.target_source}:{t.target_prefix}")) for t in targets]
            ))
    return checks


def _listed(value_sql: str, kind: str, params: _Params) -> str:
    """SQL: the keyed hash of ``value_sql`` is on the list as ``kind`` (NULL for a NULL value)."""
    return (
        f"{keyed_hash_sql(value_sql, _HMAC)} IN"
        f" (SELECT value_hash FROM {SUPPRESSION_LIST} WHERE kind = {params.bind(kind)})"
    )


def suppression_predicate(
    conn: duckdb.DuckDBPyConnection,
    config: CdmConfig,
    source: SourceConfig,
    key: bytes,
    *,
    relation: str | None = None,
    columns: Iterable[str] | None = None,
) -> tuple[str, dict]:
    """A SQL condition, TRUE for a landed row of ``source`` that the suppression list drops.

    The condition reads the source's own column names (text, as the extract scans them) and is
    never NULL. A row is dropped when any of these is on the list:

    * its e-mail column, standardised (every kind);
    * its phone column in E.164, read in the row's country or ``config.default_region``
      (contacts);
    * its own record, ``<source>:<id>`` (contacts);
    * every record an id of the row names (``lib/staging/links.py``): ``<target>:<id>`` for a
      contact's ``linked_id``, an order's ``contact_id``, an e-mail event's ``subscriber_id``,
      and a web event's own ``<source>:client:<client_id>`` and ``<source>:user:<user_id>``,
      each under every source its record links name.

    Values are read as staging reads them (``lib/staging/mapping.py``: trimmed, a nested field,
    the source's words, a spreadsheet's apostrophe dropped). The hashes are computed inside DuckDB
    (``keyed_hash_sql``) and compared with the list by a semi-join, one per kind.

    Args:
        conn: The connection that will run the condition (the standardisers are registered on
            it).
        config: The project config: its record links and default region.
        source: The source whose rows are tested.
        key: The privacy key.
        relation: The name (SQL, used as given) of a table or CTE holding the rows being
            tested, e.g. the extract's temp table of a scan. When given, each column's
            *distinct* values are hashed once from it and rows are matched on the raw values
            that hit, instead of hashing every row's values: the list is short and hashing is
            the cost, while an event source repeats a client id or an address thousands of
            times. Without it the condition hashes each row's values and works on any scan.
        columns: The columns the rows have, when that may be fewer than the source maps (a
            JSON partition whose records never carry a key): a missing column holds no value,
            so it is left out (a missing country means the default region, as in staging).

    Returns:
        The SQL condition and the parameters to bind with it.
    """
    register_standardisers(conn)
    params = _Params()
    terms = []
    listed_now = listed_kinds(conn)
    available = None if columns is None else {c.casefold() for c in columns}
    for check in _checks(config, source, params, available):
        # A kind with no entry cannot match: its values are not standardised nor hashed.
        tests = [(kind, sql) for kind, sql in check.tests if kind in listed_now]
        if not tests:
            continue
        quoted = list(check.columns)
        if relation is None:
            hits = " OR ".join(_listed(listed(*quoted), kind, params) for kind, listed in tests)
            terms.append(f"coalesce({hits}, false)")
            continue
        names = [f"v{i}" for i in range(len(quoted))]
        # NULL only in the later columns (a country), compared as '' and read back as NULL.
        keyed = [quoted[0], *(f"coalesce({c}, '')" for c in quoted[1:])]
        read = [names[0], *(f"nullif({n}, '')" for n in names[1:])]
        hits = " OR ".join(_listed(listed(*read), kind, params) for kind, listed in tests)
        distinct = ", ".join(f"{expr} AS {name}" for expr, name in zip(keyed, names, strict=True))
        values = names[0] if len(names) == 1 else f"row({', '.join(names)})"
        row = keyed[0] if len(keyed) == 1 else f"row({', '.join(keyed)})"
        terms.append(
            f"coalesce({row} IN (SELECT {values} FROM (SELECT DISTINCT {distinct} FROM {relation}"
            f" WHERE {quoted[0]} IS NOT NULL) WHERE {hits}), false)"
        )
    if not terms:
        return "false", {}
    sql = "(" + " OR ".join(terms) + ")"
    return sql, {**params.used_in(sql), **keyed_hash_params(key, _HMAC)}


def listed_kinds(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """The kinds the suppression list has entries of."""
    if not table_exists(conn, SUPPRESSION_LIST):
        return set()
    return {row[0] for row in conn.execute(f"SELECT DISTINCT kind FROM {SUPPRESSION_LIST}").fetchall()}


def email_pattern(delimiter: str = ",") -> str:
    """A regular expression for e-mail-like tokens in a line of text (generous: the e-mail
    standardiser decides what they are)."""
    stop = r"\s,;\"<>()\[\]{}" + re.escape(delimiter)
    return f"[^{stop}]+@[^{stop}]+"


def reject_suppression_predicate(
    conn: duckdb.DuckDBPyConnection, source: SourceConfig, key: bytes, column: str = "raw_line"
) -> tuple[str, dict]:
    """A SQL condition, TRUE for a rejected line that names a suppressed e-mail address.

    A line that could not be parsed has no columns, only its text: every e-mail-like token in
    it is standardised and hashed, and the line is dropped when one is on the list. Phone
    numbers and record ids in free text are *not* matched: a run of digits in a broken line
    cannot be told apart from an amount, a date or another id, and reading every digit run as
    a phone would drop unrelated lines. Such a line stays in quarantine, where no later layer
    reads it.

    Args:
        conn: The connection that will run the condition.
        source: The source of the lines (its CSV delimiter ends a token).
        key: The privacy key.
        column: The column holding the line's text.

    Returns:
        The SQL condition (never NULL) and the parameters to bind with it.
    """
    if "email" not in listed_kinds(conn):
        return "false", {}
    register_standardisers(conn)
    params = _Params()
    pattern = params.bind(email_pattern(source.delimiter))
    email_kind = params.bind("email")
    hashed = keyed_hash_sql("cdm_email(rtrim(token, '.')).value", _HMAC)
    sql = (
        f"coalesce(list_has_any(list_transform(regexp_extract_all({quote_ident(column)}, {pattern}),"
        f" lambda token: {hashed}),"
        f" (SELECT list(value_hash) FROM {SUPPRESSION_LIST} WHERE kind = {email_kind})), false)"
    )
    return sql, {**params.values, **keyed_hash_params(key, _HMAC)}


def record_suppressed_rows(
    conn: duckdb.DuckDBPyConnection, source_name: str, partition_date: dt.date, rows: int, loaded_at: dt.datetime,
) -> None:
    """Replace the count of rows a partition's extract dropped (the governance report reads it)."""
    ensure(conn, SUPPRESSED_ROWS)
    conn.execute(
        f"DELETE FROM {SUPPRESSED_ROWS} WHERE source_name = ? AND partition_date = ?", [source_name, partition_date]
    )
    conn.execute(
        f"INSERT INTO {SUPPRESSED_ROWS} VALUES (?, ?, ?, ?)", [source_name, partition_date, rows, loaded_at]
    )
