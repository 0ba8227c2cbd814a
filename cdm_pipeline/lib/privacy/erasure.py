"""Erasure that really erases: a person's rows leave every layer, and their bytes leave the file.

One request (an e-mail, a phone or a customer id) becomes a ``DataSubject`` (``subject.py``).
Then, in order:

1. their identifiers go on the suppression list as keyed hashes, so no later extract, re-run or
   backfill of old partitions loads them again;
2. their rows are deleted from raw (the rows behind their staged and quarantined rows), the
   quarantine's rejected lines (matched on the values in the text), staging, quarantine,
   identity and the marts;
3. identity is resolved again (the customers they touched lose the records) and the marts are
   rebuilt, so golden records, segments and journeys no longer carry them;
4. audience files under ``exports.dir`` lose the lines with their hashed e-mail or phone, and
   earlier access-request documents about them are deleted;
5. one ``governance.audit_log`` row records the counts.

DuckDB keeps deleted rows in the file's blocks until they are overwritten, so the caller then
rewrites the warehouse (``compact_warehouse``): a fresh file with only the live rows replaces the
old one, under the old one's lock. The erasure's transaction also records that a rewrite is owed
(``governance.compaction_pending``), so a process killed before rewriting is made good by the next
one (``compact_if_pending``). Only counts leave this module.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import (
    COMPACTION_PENDING,
    CUSTOMER_360,
    GRAPH_NODES,
    ID_ASSIGNMENTS,
    IGNORED_IDENTIFIERS,
    LINKAGE_INPUT,
    MART_TABLES,
    OVERRIDES_APPLIED,
    XREF,
    ensure,
    quarantine_table,
    raw_table,
    rejects_table,
    staging_table,
)
from cdm_pipeline.lib.encryption import Encryption, EncryptionError, warehouse_encryption
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.identity.records import close_work_area
from cdm_pipeline.lib.identity.resolve import resolve_identities
from cdm_pipeline.lib.identity.run_ids import erasure_resolution_id
from cdm_pipeline.lib.marts.build import build_marts
from cdm_pipeline.lib.personal_data.suppression import suppress
from cdm_pipeline.lib.privacy.analyst_warehouse import build_analyst_warehouse
from cdm_pipeline.lib.privacy.subject import (
    REJECTS_MATCH_SQL,
    SUBJECT_LINEAGE,
    SUBJECT_RECORDS,
    DataSubject,
    audience_hashes,
    mark_subject_lineage,
    staging_match_sql,
)
from cdm_pipeline.lib.sealed_files import SUFFIX as SEALED_SUFFIX
from cdm_pipeline.lib.sealed_files import read_sealed
from cdm_pipeline.lib.staging.columns import KINDS
from cdm_pipeline.lib.warehouse import (
    COMMAND_LOCK_WAIT,
    open_warehouse,
    quote_ident,
    rewrite_warehouse,
    table_columns,
    table_exists,
)

logger = logging.getLogger(__name__)


@dataclass
class ErasureResult:
    request_id: str
    customers: int
    records: int
    rows_deleted: dict[str, int] = field(default_factory=dict)
    suppression_entries: int = 0
    export_lines_removed: int = 0
    access_documents_removed: int = 0
    seconds: float = 0.0

    @property
    def total_rows(self) -> int:
        return sum(self.rows_deleted.values())


def erase_subject(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, subject: DataSubject, request_id: str,
    key: bytes, run_id: str | None = None, rebuild: bool = True,
) -> ErasureResult:
    """Remove the subject from the warehouse and the audience files (not yet from the file's bytes).

    ``find_subject`` must have run on this connection (its temporary tables are used here).
    ``rebuild=False`` leaves re-resolution and the marts to the caller (``rebuild_after_erasure``),
    so a batch of requests resolves once, not once per person.
    """
    started = time.monotonic()
    result = ErasureResult(request_id, len(subject.customer_ids), len(subject.records))
    entries = (
        [("email", e) for e in subject.emails] + [("phone", p) for p in subject.phones]
        + [("record", f"{s}:{r}") for s, r in subject.records]
    )
    # The identity stage's work area holds the last run's copies of the records (in memory, on
    # this connection): gone before anything else, rebuilt by the next resolution.
    close_work_area(conn)
    # Suppression and every deletion commit together: a crash half-way leaves the person whole
    # (and findable by the same request), never half-erased.
    conn.execute("BEGIN TRANSACTION")
    try:
        result.suppression_entries = suppress(conn, key, entries, request_id, region=config.default_region)
        deleted = result.rows_deleted
        # Every raw row ended in staging or quarantine, which keep its file and line: the subject's
        # raw rows are exactly those behind their staged rows.
        mark_subject_lineage(conn, config)
        for source in config.sources:
            raw = raw_table(source.name)
            if table_exists(conn, raw):
                behind = f"""SELECT 1 FROM {SUBJECT_LINEAGE} l WHERE l.source_name = $source
                        AND l._source_file = r._source_file AND l._source_row = r._source_row
                        AND l._partition_date = r._partition_date"""
                sql = f"DELETE FROM {raw} r WHERE EXISTS ({behind})"
                if source.group_rows:
                    # A grouped record (an order's line items) points at its first row; the
                    # other rows of the same id in that partition are the same record.
                    id_column = quote_ident(source.id_column)
                    sql += f""" OR (r._partition_date, trim(r.{id_column})) IN (
                        SELECT (r._partition_date, trim(r.{id_column})) FROM {raw} r WHERE EXISTS ({behind}))"""
                deleted[raw.full_name] = _delete(conn, sql, {"source": source.name})
            rejects = rejects_table(source.name)
            if table_exists(conn, rejects):
                deleted[rejects.full_name] = _delete(conn, f"DELETE FROM {rejects} WHERE {REJECTS_MATCH_SQL}")
        for kind in KINDS:
            for table in (staging_table(kind), quarantine_table(kind)):
                if table_exists(conn, table):
                    deleted[table.full_name] = _delete(
                        conn, f"DELETE FROM {table} t WHERE {staging_match_sql(config, kind)}"
                    )
        _delete_identity_rows(conn, subject, deleted)
        # Committed with the deletions: until the file is rewritten their bytes are still in it,
        # and whoever opens the warehouse next (a privacy command, the nightly governance step)
        # finishes the job even if this process dies now.
        ensure(conn, COMPACTION_PENDING)
        conn.execute(f"INSERT INTO {COMPACTION_PENDING} VALUES (?, ?)", [request_id, dt.datetime.now(dt.timezone.utc)])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if rebuild:
        rebuild_after_erasure(conn, config, run_id or erasure_resolution_id(request_id), key)
    result.export_lines_removed = scrub_audience_files(config.exports.dir, subject)
    result.access_documents_removed = remove_access_documents(
        config.privacy.access_dir, subject, warehouse_encryption(config)
    )
    result.seconds = time.monotonic() - started
    _audit(conn, result)
    return result


def rebuild_after_erasure(conn: duckdb.DuckDBPyConnection, config: CdmConfig, run_id: str, key: bytes) -> None:
    """Resolve identity again and rebuild the marts, so nothing derived still carries the person;
    then refresh the analyst warehouse, if there is one: its rows are pseudonymous, not anonymous,
    so an erased person's must not wait for the next night."""
    if table_exists(conn, XREF):
        resolve_identities(conn, config, run_id)
        if table_exists(conn, staging_table("orders")):
            build_marts(conn, config)
    target = config.security.analyst_warehouse
    if target is not None and target.exists() and table_exists(conn, CUSTOMER_360):
        build_analyst_warehouse(conn, target, key)


def _delete(conn: duckdb.DuckDBPyConnection, sql: str, params: dict | None = None) -> int:
    return int(conn.execute(sql, params or {}).fetchall()[0][0])


def _delete_identity_rows(conn: duckdb.DuckDBPyConnection, subject: DataSubject, deleted: dict[str, int]) -> None:
    """Rows that re-resolution would not rewrite: history kept across runs, and hashed values."""
    for table in (XREF, ID_ASSIGNMENTS, OVERRIDES_APPLIED, LINKAGE_INPUT):
        if not table_exists(conn, table):
            continue
        columns = set(table_columns(conn, table))
        pairs = [("source_name", "source_record_id")] if "source_name" in columns else [
            (f"source_name_{side}", f"source_record_id_{side}") for side in ("l", "r")
            if f"source_name_{side}" in columns
        ]
        condition = " OR ".join(
            f"EXISTS (SELECT 1 FROM {SUBJECT_RECORDS} r WHERE r.source_name = t.{s} AND r.source_record_id = t.{i})"
            for s, i in pairs
        )
        deleted[table.full_name] = _delete(conn, f"DELETE FROM {table} t WHERE {condition}")
    if table_exists(conn, GRAPH_NODES):
        # The graph keeps the record's internal id, so the next resolution sees it removed and
        # re-clusters what it joined (identity/incremental.py); its source id goes now.
        kept = {"record_id", "identifier_type", "cluster_id", "source_name", "source_record_id"}
        values = [c for c in table_columns(conn, GRAPH_NODES) if c not in kept and not c.endswith("_fingerprint")]
        deleted[GRAPH_NODES.full_name] = _delete(
            conn,
            f"""UPDATE {GRAPH_NODES} t SET source_name = '', source_record_id = 'erased:' || record_id
                {''.join(f', {quote_ident(c)} = NULL' for c in values)}
            WHERE EXISTS (SELECT 1 FROM {SUBJECT_RECORDS} r
                          WHERE r.source_name = t.source_name AND r.source_record_id = t.source_record_id)""",
        )
    if table_exists(conn, IGNORED_IDENTIFIERS):
        hashes = sorted(audience_hashes(subject))  # identity keeps ignored values as plain SHA-256
        deleted[IGNORED_IDENTIFIERS.full_name] = _delete(
            conn, f"DELETE FROM {IGNORED_IDENTIFIERS} WHERE list_contains($h, value_sha256)", {"h": hashes}
        )
    for table in MART_TABLES:
        if table_exists(conn, table) and "customer_id" in table_columns(conn, table):
            deleted[table.full_name] = _delete(
                conn, f"DELETE FROM {table} WHERE list_contains($ids, customer_id)",
                {"ids": subject.customer_ids},
            )


def scrub_audience_files(folder: Path, subject: DataSubject) -> int:
    """Remove the subject's hashed e-mail and phone lines from every audience file; lines removed."""
    if not folder.exists():
        return 0
    hashes = audience_hashes(subject)
    removed = 0
    for path in sorted(folder.rglob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        kept = [row for row in rows if not hashes.intersection(row)]
        if len(kept) == len(rows):
            continue
        removed += len(rows) - len(kept)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle, lineterminator="\n").writerows(kept)
        os.replace(temporary, path)
    return removed


def remove_access_documents(folder: Path, subject: DataSubject, encryption: Encryption | None = None) -> int:
    """Delete earlier access-request documents about the subject (they hold all their data).

    Sealed documents (``<id>.json.enc``, written under a warehouse key) are read with ``encryption``.
    """
    if not folder.exists():
        return 0
    values = subject.emails + subject.phones
    removed = 0
    for path in sorted([*folder.glob("*.json"), *folder.glob("*.json" + SEALED_SUFFIX)]):
        if path.name.endswith(SEALED_SUFFIX):
            if encryption is None:
                continue  # without the key nobody can read it: nothing to erase from it now
            try:
                content = read_sealed(path, encryption)
            except EncryptionError:
                # Sealed under a key retired without `rotate-key` re-sealing it: unreadable to anyone here.
                logger.warning("an access document cannot be opened with the warehouse key; left in place")
                continue
        else:
            content = path.read_bytes()
        text = content.decode("utf-8", errors="replace")
        if any(value in text for value in values):
            path.unlink()
            removed += 1
    return removed


def _audit(conn: duckdb.DuckDBPyConnection, result: ErasureResult) -> None:
    detail = (
        f"{result.customers} customers, {result.records} records; "
        f"{result.total_rows} rows deleted in {sum(1 for n in result.rows_deleted.values() if n)} tables;"
        f" {result.suppression_entries} identifiers suppressed; {result.export_lines_removed} audience lines"
        f" and {result.access_documents_removed} access documents removed"
    )
    record_audit(conn, "privacy_erasure", result.request_id, result.total_rows, detail)


def compact_warehouse(
    path: Path, settings: Mapping[str, str | int], encryption: Encryption | None = None,
    lock_wait: float = COMMAND_LOCK_WAIT,
) -> tuple[int, int]:
    """Rewrite the warehouse file with only its live rows; returns its size before and after.

    Deleted rows stay in a DuckDB file's blocks until they happen to be overwritten; copying the
    database into a fresh file (and replacing the old one) is the only way to be sure their bytes
    are gone. ``lib.warehouse.rewrite_warehouse`` does it under the old file's lock, with the
    config's ``duckdb`` ``settings`` (memory limit, threads: the copy is the heaviest statement
    the product runs), and renames only after the copy is checked, so a failure on the way leaves
    the old file as it was, with the pending rewrite still recorded; a run that wrote in between
    keeps its rows (they are copied too).
    """

    def clear_marker(conn: duckdb.DuckDBPyConnection, alias: str) -> None:
        memory_limit, threads = conn.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads')"
        ).fetchone()
        logger.info("rewrote the warehouse file (memory_limit %s, threads %s)", memory_limit, threads)
        if table_exists(conn, COMPACTION_PENDING):
            conn.execute(f"DELETE FROM {quote_ident(alias)}.{COMPACTION_PENDING}")

    return rewrite_warehouse(
        path, settings=settings, encryption=encryption, target_encryption=encryption, lock_wait=lock_wait,
        on_copied=clear_marker,
    )


def compact_if_pending(
    path: Path, settings: Mapping[str, str | int], encryption: Encryption | None = None,
    lock_wait: float = COMMAND_LOCK_WAIT,
) -> bool:
    """Rewrite the warehouse when an erasure committed but its rewrite never happened."""
    if not path.exists():
        return False
    with open_warehouse(path, settings=settings, read_only=True, encryption=encryption, lock_wait=lock_wait) as conn:
        pending = table_exists(conn, COMPACTION_PENDING) and bool(
            conn.execute(f"SELECT count(*) FROM {COMPACTION_PENDING}").fetchone()[0]
        )
    if pending:
        compact_warehouse(path, settings, encryption, lock_wait)
    return pending
