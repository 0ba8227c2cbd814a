"""``cdm export analyst``: the six marts as Parquet for analysts, without direct identifiers.

What an analyst gets, and why:

* **One decision per column.** :data:`COLUMN_RULES` names every column of every mart with one of
  four actions — ``keep``, ``drop``, ``hash`` (keyed), ``transform`` (a coarser value) — and the
  reason. A mart column that is not in the table stops the export before anything is written
  (and a test compares the table with the marts the pipeline builds), so a column added to a mart
  later cannot reach an analyst unreviewed.
* **Direct identifiers are dropped**: names, e-mail, phone, street lines, and the free text that
  can carry them (``company``: a sole trader's business is their name; ``page_url``: query strings
  carry e-mail addresses and tokens). ``city`` and ``postcode`` are dropped too (with a birth
  year they narrow a person down to a handful); ``region`` and ``country`` stay.
  ``birth_date`` becomes ``birth_year``.
* **Ids are keyed hashes.** Customer ids are issued in sequence (``CUST-0000000001``), so a plain
  SHA-256 of one is reversed by hashing every number; browser ids, session ids, event ids and
  order ids can be looked up in the source systems. Each becomes the lower-case hex
  HMAC-SHA-256 under the deployment's privacy key (``CDM_PRIVACY_KEY``, never stored in the
  warehouse or the export), computed in DuckDB. The same id gives the same hash in every table,
  so analysts still join ``customer_360`` to the journeys, ``order_attribution.order_id`` to
  ``customer_journey_events.order_id`` and ``touch_event_id`` to ``event_id``; exports made with
  the same key join with each other (``key_fingerprint`` in the manifest tells).
  ``source_record_id`` of the journey events is dropped rather than hashed: ``event_id`` (its
  hash) already identifies the event, and a second hashed copy of a source-system id would only
  be one more key to link on.
* **All or nothing.** The six tables are read in one transaction (one consistent snapshot) and
  ``COPY``-ed by DuckDB into a hidden folder beside the target, with ``manifest.json``; the folder
  is then renamed into place. A failure leaves the previous export (or nothing) as it was. A target
  that holds anything but a previous analyst export is refused, so an export never deletes a
  folder of other files.
* **No values in the output.** The command line, the manifest and the ``governance.audit_log``
  row carry table names, row counts and the folder only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import duckdb

from cdm_pipeline.lib.catalog import (
    CUSTOMER_360,
    JOURNEY_EVENTS,
    JOURNEYS,
    MART_TABLES,
    MEMBERSHIP_HISTORY,
    ORDER_ATTRIBUTION,
    SEGMENTS,
)
from cdm_pipeline.lib.file_modes import (
    PRIVATE_DIR_MODE,
    create_private_dirs,
    private_dir,
    private_file,
    private_write_text,
)
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.personal_data.keyed_hash import key_fingerprint, keyed_hash_params, keyed_hash_sql
from cdm_pipeline.lib.warehouse import quote_ident, table_columns, table_exists

log = logging.getLogger(__name__)

AUDIT_ACTION = "analyst_export"
MANIFEST = "manifest.json"
EXPORT_KIND = "cdm_analyst_export"
FORMAT_VERSION = 1
HASH_PREFIX = "analyst"  # the parameter names keyed_hash_sql binds: $analyst_inner / $analyst_outer

Action = Literal["keep", "drop", "hash", "transform"]


@dataclass(frozen=True)
class ColumnRule:
    """What the export does with one mart column.

    ``transform`` writes ``sql(column)`` (a DuckDB expression over the quoted source column) under
    the name ``output``.
    """

    action: Action
    reason: str = ""
    sql: Callable[[str], str] | None = None
    output: str | None = None


def keep(reason: str = "") -> ColumnRule:
    return ColumnRule("keep", reason)


def drop(reason: str) -> ColumnRule:
    return ColumnRule("drop", reason)


def hashed(reason: str) -> ColumnRule:
    return ColumnRule("hash", reason)


def transform(sql: Callable[[str], str], output: str, reason: str) -> ColumnRule:
    return ColumnRule("transform", reason, sql, output)


# Reasons shared by several columns.
_CUSTOMER_ID = hashed("customer id: issued in sequence, so a plain hash is reversible; keyed, so tables still join")
_DIRECT = "direct identifier"
_NAME = drop(f"{_DIRECT}: name")
_SEGMENT = keep("segment label")
_COUNT = keep("aggregate")
_WHEN = keep("event time")
_CAMPAIGN = keep("marketing campaign or channel label")

_MARTS = {table.name: table for table in MART_TABLES}

# Every column of every mart, in table order. The export refuses a mart column missing here.
COLUMN_RULES: dict[str, dict[str, ColumnRule]] = {
    JOURNEY_EVENTS.name: {
        "customer_id": _CUSTOMER_ID,
        "event_id": hashed("embeds the source system's record id"),
        "event_kind": keep(),
        "event_type": keep(),
        "occurred_at": _WHEN,
        "event_date": _WHEN,
        "channel": _CAMPAIGN,
        "source": _CAMPAIGN,
        "medium": _CAMPAIGN,
        "campaign": _CAMPAIGN,
        "session_id": hashed("embeds the browser's client id or the login id"),
        "is_touch": keep(),
        "touch_sequence": transform(
            lambda column: f"CAST({column} AS BIGINT)", "touch_sequence",
            "not personal; HUGEINT has no Parquet type, so written as BIGINT",
        ),
        "event_sequence": keep(),
        "funnel_stage": keep(),
        "order_id": hashed("source system's order / transaction id: can be looked up"),
        "order_status": keep(),
        "order_counted": keep(),
        "amount": keep(),
        "currency": keep(),
        "revenue": keep(),
        "bounce_type": keep(),
        "page_url": drop("free-text URL: query strings carry e-mail addresses, names and tokens"),
        "attributed_by": keep("which kind of key linked the event (a label, not the key)"),
        "source_name": keep("configured source name"),
        "source_record_id": drop("source system's record id; event_id (hashed) already identifies the event"),
        "browser_key": hashed("the browser's client id (or login id)"),
        "_partition_date": keep("landing day"),
    },
    JOURNEYS.name: {
        "customer_id": _CUSTOMER_ID,
        "first_touch_at": _WHEN,
        "first_touch_channel": _CAMPAIGN,
        "first_touch_campaign": _CAMPAIGN,
        "last_touch_at": _WHEN,
        "last_touch_channel": _CAMPAIGN,
        "last_touch_campaign": _CAMPAIGN,
        "touches": _COUNT,
        "touches_by_channel": _COUNT,
        "sessions": _COUNT,
        "events": _COUNT,
        "orders": _COUNT,
        "first_purchase_at": _WHEN,
        "days_to_first_purchase": _COUNT,
        "funnel_stage": keep(),
    },
    ORDER_ATTRIBUTION.name: {
        "order_source": keep("configured source name"),
        "order_id": hashed("source system's order id: can be looked up"),
        "customer_id": _CUSTOMER_ID,
        "ordered_at": _WHEN,
        "model": keep(),
        "touch_event_id": hashed("an event_id (hashed the same way, so it joins)"),
        "touch_at": _WHEN,
        "touch_position": keep(),
        "path_touches": _COUNT,
        "channel": _CAMPAIGN,
        "campaign": _CAMPAIGN,
        "weight": keep(),
        "attributed_revenue": keep(),
    },
    CUSTOMER_360.name: {
        "customer_id": _CUSTOMER_ID,
        "first_name": _NAME,
        "last_name": _NAME,
        "email": drop(f"{_DIRECT}: e-mail address"),
        "phone": drop(f"{_DIRECT}: phone number"),
        "birth_date": transform(
            lambda column: f"CAST(year({column}) AS INTEGER)", "birth_year",
            "a full birth date nearly identifies a person; a year is shared by a cohort",
        ),
        "address_line1": drop(f"{_DIRECT}: street address"),
        "address_line2": drop(f"{_DIRECT}: street address"),
        "city": drop("with a birth year, narrows a person to a few; region and country stay"),
        "postcode": drop("a postcode covers a handful of households"),
        "region": keep("coarse location"),
        "country": keep("coarse location"),
        "company": drop("free text; a sole trader's business is their name"),
        "source_systems": keep(),
        "source_names": keep(),
        "source_records": _COUNT,
        "first_seen_at": _WHEN,
        "last_seen_at": _WHEN,
        "order_count": _COUNT,
        "revenue": _COUNT,
        "average_order_value": _COUNT,
        "first_order_date": _WHEN,
        "last_order_date": _WHEN,
        "days_since_last_order": _COUNT,
        "emails_sent_30d": _COUNT,
        "emails_opened_30d": _COUNT,
        "emails_clicked_30d": _COUNT,
        "emails_sent_90d": _COUNT,
        "emails_opened_90d": _COUNT,
        "emails_clicked_90d": _COUNT,
        "email_unsubscribed": keep("consent / deliverability flag"),
        "email_bounced": keep("consent / deliverability flag"),
        "web_sessions": _COUNT,
        "web_sessions_30d": _COUNT,
        "page_views": _COUNT,
        "last_visit_at": _WHEN,
        "abandoned_carts": _COUNT,
        "email_opt_in": keep("consent flag"),
        "email_opt_in_at": _WHEN,
        "do_not_sell": keep("consent flag"),
        "email_contactable": keep("consent flag"),
        "as_of_date": keep(),
    },
    SEGMENTS.name: {
        "customer_id": _CUSTOMER_ID,
        "as_of_date": keep(),
        "recency_days": _COUNT,
        "frequency": _COUNT,
        "monetary": _COUNT,
        "recency_score": _COUNT,
        "frequency_score": _COUNT,
        "monetary_score": _COUNT,
        "rfm_score": _SEGMENT,
        "rfm_segment": _SEGMENT,
        "lifecycle_stage": _SEGMENT,
        "engagement_tier": _SEGMENT,
        "custom_segments": _SEGMENT,
    },
    MEMBERSHIP_HISTORY.name: {
        "customer_id": _CUSTOMER_ID,
        "segment_type": _SEGMENT,
        "segment": _SEGMENT,
        "entered_on": _WHEN,
        "exited_on": _WHEN,
    },
}

# Row order of each file, by output column: by hashed id, so the order reveals nothing of the
# original (sequential) ids, and the same marts and key give the same rows in the same order.
ORDER_BY: dict[str, tuple[str, ...]] = {
    JOURNEY_EVENTS.name: ("customer_id", "event_sequence"),
    JOURNEYS.name: ("customer_id",),
    ORDER_ATTRIBUTION.name: ("order_source", "order_id", "model", "touch_position"),
    CUSTOMER_360.name: ("customer_id",),
    SEGMENTS.name: ("customer_id",),
    MEMBERSHIP_HISTORY.name: ("customer_id", "segment_type", "segment", "entered_on"),
}


class AnalystExportError(Exception):
    """An analyst export that cannot be written; the message is one line with no values."""


class ExportTargetError(AnalystExportError):
    """The target folder is a file, or holds something other than a previous analyst export."""


class MartsNotBuilt(AnalystExportError):
    """A mart is missing or empty: the pipeline has not built them yet."""


class UnreviewedColumns(AnalystExportError):
    """A mart has a column :data:`COLUMN_RULES` does not decide on (or lacks one it names)."""


@dataclass(frozen=True)
class AnalystExport:
    """What one export wrote: the folder, the as-of date and rows per table; never a value."""

    path: Path
    as_of_date: dt.date
    rows: dict[str, int]

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


# --- The rules as SQL and as a description ----------------------------------------------------


def output_columns(table: str) -> list[str]:
    """The columns of ``<table>.parquet``, in order."""
    return [
        rule.output or column
        for column, rule in COLUMN_RULES[table].items()
        if rule.action != "drop"
    ]


def select_sql(table: str) -> str:
    """The SELECT that writes ``table``: dropped columns left out, ids hashed, transforms applied.

    Bind :func:`keyed_hash_params` (prefix :data:`HASH_PREFIX`) with it.
    """
    expressions = []
    for column, rule in COLUMN_RULES[table].items():
        source = quote_ident(column)
        if rule.action == "keep":
            expressions.append(source)
        elif rule.action == "hash":
            expression = keyed_hash_sql(f"CAST({source} AS VARCHAR)", HASH_PREFIX)
            expressions.append(f"{expression} AS {source}")
        elif rule.action == "transform":
            assert rule.sql and rule.output, (table, column)
            expressions.append(f"{rule.sql(source)} AS {quote_ident(rule.output)}")
    inner = f"SELECT {', '.join(expressions)} FROM {_MARTS[table]}"
    order = ", ".join(quote_ident(column) for column in ORDER_BY[table])
    return f"SELECT * FROM ({inner}) ORDER BY {order}"


def describe_rules(table: str) -> dict[str, dict[str, str]]:
    """What the export did to ``table`` beyond keeping columns: dropped / hashed / transformed."""
    described: dict[str, dict[str, str]] = {"dropped": {}, "hashed": {}, "transformed": {}}
    for column, rule in COLUMN_RULES[table].items():
        if rule.action == "drop":
            described["dropped"][column] = rule.reason
        elif rule.action == "hash":
            described["hashed"][column] = rule.reason
        elif rule.action == "transform":
            described["transformed"][column] = f"-> {rule.output}: {rule.reason}"
    return described


def rule_counts() -> dict[str, int]:
    """Columns dropped, hashed and transformed over all tables."""
    counts = {"drop": 0, "hash": 0, "transform": 0, "keep": 0}
    for rules in COLUMN_RULES.values():
        for rule in rules.values():
            counts[rule.action] += 1
    return counts


# --- The target folder --------------------------------------------------------------------------


def check_export_target(target: Path) -> None:
    """Refuse a target the export must not replace.

    Accepted: a folder that does not exist, an empty folder, or a previous analyst export (its
    ``manifest.json`` and the files it lists, nothing else).

    Raises:
        ExportTargetError: a file, or a folder holding anything else (the message says which).
    """
    if target.exists() and not target.is_dir():
        raise ExportTargetError(f"{target} is a file, not a folder")
    if not target.is_dir():
        return
    entries = sorted(entry.name for entry in target.iterdir())
    if not entries:
        return
    manifest = _read_manifest(target / MANIFEST)
    if manifest is None:
        raise ExportTargetError(
            f"{target} is not empty and is not a previous analyst export (no {MANIFEST} written by"
            " `cdm export analyst`): choose a new or empty folder"
        )
    ours = {MANIFEST} | {str(entry.get("file")) for entry in manifest.get("tables", [])}
    others = [name for name in entries if name not in ours]
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise ExportTargetError(
            f"{target} is a previous analyst export but also holds other files ({shown}), which"
            " replacing it would delete: move them or choose another folder"
        )


def _read_manifest(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("kind") != EXPORT_KIND:
        return None
    return document


# --- Writing ----------------------------------------------------------------------------------


def check_columns(conn: duckdb.DuckDBPyConnection) -> None:
    """Every mart exists and has exactly the columns :data:`COLUMN_RULES` decides on.

    Raises:
        MartsNotBuilt: a mart is missing.
        UnreviewedColumns: a mart column without a rule, or a rule for a column the mart lacks.
    """
    problems = []
    for table, rules in COLUMN_RULES.items():
        if not table_exists(conn, _MARTS[table]):
            raise MartsNotBuilt(f"{_MARTS[table].full_name} does not exist: run the pipeline first")
        actual = table_columns(conn, _MARTS[table])
        problems += [f"{table}.{column} has no rule" for column in actual if column not in rules]
        problems += [f"{table}.{column} is gone" for column in rules if column not in actual]
    if problems:
        raise UnreviewedColumns(
            "the marts and the analyst export's column rules disagree ("
            + "; ".join(problems)
            + "): add a keep / drop / hash / transform decision in"
            " cdm_pipeline/lib/privacy/analyst_export.py, nothing was exported"
        )


def write_analyst_export(conn: duckdb.DuckDBPyConnection, target: Path, key: bytes) -> AnalystExport:
    """Write the six marts to ``target`` as Parquet with identifiers removed or hashed, and audit it.

    ``conn`` must be read-write (for the audit row) and not inside an open transaction.

    Args:
        conn: the warehouse holding the six marts.
        target: the folder to write (created, or replacing a previous analyst export).
        key: the privacy key (:func:`~cdm_pipeline.lib.personal_data.keyed_hash.privacy_key`).

    Raises:
        ExportTargetError: ``target`` holds something other than a previous analyst export.
        MartsNotBuilt: a mart is missing, or ``customer_360`` is empty.
        UnreviewedColumns: a mart column has no rule.
        AnalystExportError: a file's row count disagrees with its mart.
    """
    target = target.absolute()
    check_export_target(target)
    conn.begin()
    try:
        check_columns(conn)
        as_of = _as_of_date(conn)
        export = _write_atomically(conn, target, key, as_of)
        conn.commit()
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            conn.rollback()
        raise
    log.info("analyst export of %d rows in %d tables to %s", export.total_rows, len(export.rows), target)
    return export


def _as_of_date(conn: duckdb.DuckDBPyConnection) -> dt.date:
    row = conn.execute(f"SELECT max(as_of_date) FROM {CUSTOMER_360}").fetchone()
    if row is None or row[0] is None:
        raise MartsNotBuilt(f"{CUSTOMER_360.full_name} is empty: run the pipeline first")
    return row[0]


def _write_atomically(conn: duckdb.DuckDBPyConnection, target: Path, key: bytes, as_of: dt.date) -> AnalystExport:
    """Write every file into a hidden folder beside ``target``, audit, then swap it into place."""
    create_private_dirs(target.parent)
    token = uuid.uuid4().hex[:12]
    staging = target.with_name(f".{target.name}.analyst-export-{token}.tmp")
    staging.mkdir(mode=PRIVATE_DIR_MODE)
    private_dir(staging)  # renamed into place as the export: owner-only, whatever the umask
    try:
        rows = {table: _copy_table(conn, table, staging / f"{table}.parquet", key) for table in COLUMN_RULES}
        export = AnalystExport(path=target, as_of_date=as_of, rows=rows)
        _write_manifest(staging / MANIFEST, export, key)
        _audit(conn, export)
        _swap_into_place(staging, target, token)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return export


def _copy_table(conn: duckdb.DuckDBPyConnection, table: str, path: Path, key: bytes) -> int:
    """``COPY`` one mart to Parquet; returns the rows written (checked against the mart)."""
    expected = conn.execute(
        f"SELECT count(*) FROM {_MARTS[table]}"
    ).fetchone()[0]
    written = conn.execute(
        f"COPY ({select_sql(table)}) TO $path (FORMAT parquet, COMPRESSION zstd)",
        {**keyed_hash_params(key, HASH_PREFIX), "path": str(path)},
    ).fetchone()[0]
    if int(written) != int(expected):
        raise AnalystExportError(f"wrote {written} rows of {_MARTS[table].full_name} but it holds {expected}")
    private_file(path)
    return int(written)


def _write_manifest(path: Path, export: AnalystExport, key: bytes) -> None:
    document = {
        "kind": EXPORT_KIND,
        "format_version": FORMAT_VERSION,
        "as_of_date": export.as_of_date.isoformat(),
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "hashing": (
            "hashed columns hold the lower-case hex HMAC-SHA-256 of the original id under the"
            " deployment's privacy key (CDM_PRIVACY_KEY, not included); the same id has the same"
            " hash in every table, and in every export with the same key_fingerprint"
        ),
        "key_fingerprint": key_fingerprint(key),
        "tables": [
            {
                "table": _MARTS[table].full_name,
                "file": f"{table}.parquet",
                "rows": export.rows[table],
                "columns": output_columns(table),
                **describe_rules(table),
            }
            for table in COLUMN_RULES
        ],
    }
    private_write_text(path, json.dumps(document, indent=2) + "\n")


def _audit(conn: duckdb.DuckDBPyConnection, export: AnalystExport) -> None:
    """One ``governance.audit_log`` row: the folder and the rows per table; no values."""
    counts = rule_counts()
    tables = ", ".join(f"{table} {rows}" for table, rows in export.rows.items())
    detail = (
        f"analyst export of the marts as of {export.as_of_date} -> {export.path}; {tables};"
        f" {counts['drop']} columns dropped, {counts['hash']} hashed, {counts['transform']} transformed"
    )
    record_audit(conn, AUDIT_ACTION, None, export.total_rows, detail)


def _swap_into_place(staging: Path, target: Path, token: str) -> None:
    """Rename ``staging`` to ``target``; a previous export is moved aside first, removed after."""
    if not target.exists():
        os.rename(staging, target)
        return
    previous = target.with_name(f".{target.name}.analyst-export-{token}.old")
    os.rename(target, previous)
    try:
        os.rename(staging, target)
    except BaseException:
        os.rename(previous, target)
        raise
    shutil.rmtree(previous, ignore_errors=True)
