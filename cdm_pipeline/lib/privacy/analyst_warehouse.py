"""The analyst warehouse: a separate DuckDB file with the marts, pseudonymous, refreshed each night.

Analysts and BI tools open this file instead of the personal warehouse. It holds the six marts
under their usual names (``marts.customer_360``, ...) with exactly the columns ``cdm export
analyst`` writes — the same :data:`~cdm_pipeline.lib.privacy.analyst_export.COLUMN_RULES` through
the same :func:`~cdm_pipeline.lib.privacy.analyst_export.select_sql`: names, contact details and
street addresses dropped, ids replaced by keyed hashes (HMAC under ``CDM_PRIVACY_KEY``), birth
dates coarsened to years. ``analyst.manifest`` says what each table is: rows, the marts' as-of
date, the key's fingerprint (ids hashed under the same key join across refreshes) and which
columns were dropped or hashed.

* **Consistent and atomic.** The marts are read in one transaction into a new file beside the
  target, which is checked (rows per table equal the marts'), closed and renamed over the previous
  one. A reader holding the old file keeps reading it; a failure leaves the previous file as it
  was. Only a previous analyst warehouse is ever replaced: any other file at the path is refused.
* **Not encrypted, owner-only.** It holds no direct identifier, and analysts must open it without
  the warehouse key. It is still personal data (pseudonymous), so it is created 0600; a group-read
  bit the operator gave the previous file (to share it with an analysts' group) is kept.
* **Audited**: one ``governance.audit_log`` row per refresh (who, rows per table), no values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.lib.catalog import ANALYST_MANIFEST, MART_TABLES
from cdm_pipeline.lib.file_modes import PRIVATE_FILE_MODE, private_dir
from cdm_pipeline.lib.governance.audit_log import record_audit
from cdm_pipeline.lib.personal_data.keyed_hash import key_fingerprint, keyed_hash_params
from cdm_pipeline.lib.privacy.analyst_export import (
    COLUMN_RULES,
    FORMAT_VERSION,
    HASH_PREFIX,
    AnalystExportError,
    MartsNotBuilt,
    check_columns,
    describe_rules,
    output_columns,
    rule_counts,
    select_sql,
)
from cdm_pipeline.lib.warehouse import quote_ident, quote_literal

log = logging.getLogger(__name__)

AUDIT_ACTION = "analyst_warehouse"
_MARTS = {table.name: table for table in MART_TABLES}
# The names the new and the previous file are attached under, in the warehouse's connection.
_NEW = "cdm_analyst_new"
_OLD = "cdm_analyst_previous"


class AnalystWarehouseError(AnalystExportError):
    """The analyst warehouse cannot be written; the message is one line with no values."""


@dataclass(frozen=True)
class AnalystWarehouse:
    """What one refresh wrote: the file, the as-of date, rows per table; never a value."""

    path: Path
    as_of_date: dt.date
    rows: dict[str, int]
    key_fingerprint: str

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def build_analyst_warehouse(conn: duckdb.DuckDBPyConnection, target: Path, key: bytes) -> AnalystWarehouse:
    """Write the pseudonymous marts to a new DuckDB file, audit it, and rename it over ``target``.

    ``conn`` is the warehouse, read-write (for the audit row), not inside a transaction.

    Raises:
        AnalystWarehouseError: ``target`` is something other than a previous analyst warehouse, or
            a table's rows disagree with its mart.
        MartsNotBuilt: a mart is missing or ``customer_360`` is empty.
        UnreviewedColumns: a mart column has no rule in the analyst export's column rules.
    """
    target = target.absolute()
    previous_mode = _previous_mode(conn, target)
    if not target.parent.exists():
        private_dir(target.parent)
    fresh = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        built = _write(conn, fresh, target, key)
        # Group read only if the operator gave it to the previous file; never anything for others.
        os.chmod(fresh, PRIVATE_FILE_MODE | (previous_mode & stat.S_IRGRP))
        _audit(conn, built)
        # The previous file's WAL (a BI tool that wrote to it) belongs to it, not to the new file.
        target.with_name(target.name + ".wal").unlink(missing_ok=True)
        os.replace(fresh, target)
    finally:
        fresh.unlink(missing_ok=True)
        fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)
    log.info("analyst warehouse of %d rows in %d tables -> %s", built.total_rows, len(built.rows), target)
    return built


def _previous_mode(conn: duckdb.DuckDBPyConnection, target: Path) -> int:
    """The mode of the previous analyst warehouse at ``target`` (0 when there is none).

    Raises:
        AnalystWarehouseError: ``target`` is a folder, or a file that is not an analyst warehouse.
    """
    if not target.exists():
        return 0
    refusal = AnalystWarehouseError(
        f"{target} exists and is not an analyst warehouse written by cdm: move it, or set"
        " security.analyst_warehouse to another path"
    )
    if not target.is_file():
        raise refusal
    try:
        conn.execute(f"ATTACH {quote_literal(str(target))} AS {_OLD} (READ_ONLY)")
    except duckdb.Error:
        raise refusal from None
    try:
        found = conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = $db AND schema_name = $schema"
            " AND table_name = $table",
            {"db": _OLD, "schema": ANALYST_MANIFEST.schema, "table": ANALYST_MANIFEST.name},
        ).fetchone()[0]
    finally:
        conn.execute(f"DETACH {_OLD}")
    if not found:
        raise refusal
    return target.stat().st_mode


def _write(conn: duckdb.DuckDBPyConnection, fresh: Path, target: Path, key: bytes) -> AnalystWarehouse:
    """Copy the marts through the analyst rules into ``fresh`` in one transaction; close it."""
    conn.execute(f"ATTACH {quote_literal(str(fresh))} AS {_NEW}")
    try:
        conn.begin()
        try:
            check_columns(conn)
            as_of = _as_of_date(conn)
            rows = {table: _copy_table(conn, table, key) for table in COLUMN_RULES}
            built = AnalystWarehouse(target, as_of, rows, key_fingerprint(key))
            _write_manifest(conn, built)
            conn.commit()
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                conn.rollback()
            raise
    finally:
        # Detaching checkpoints the new file: it is complete, with no WAL, before it is renamed.
        conn.execute(f"DETACH {_NEW}")
    return built


def _as_of_date(conn: duckdb.DuckDBPyConnection) -> dt.date:
    customers = _MARTS["customer_360"]
    row = conn.execute(f"SELECT max(as_of_date) FROM {customers}").fetchone()
    if row is None or row[0] is None:
        raise MartsNotBuilt(f"{customers.full_name} is empty: run the pipeline first")
    return row[0]


def _in_new(table) -> str:
    return f"{_NEW}.{table}"


def _copy_table(conn: duckdb.DuckDBPyConnection, table: str, key: bytes) -> int:
    mart = _MARTS[table]
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_NEW}.{quote_ident(mart.schema)}")
    conn.execute(f"CREATE TABLE {_in_new(mart)} AS {select_sql(table)}", keyed_hash_params(key, HASH_PREFIX))
    expected = conn.execute(f"SELECT count(*) FROM {mart}").fetchone()[0]
    written = conn.execute(f"SELECT count(*) FROM {_in_new(mart)}").fetchone()[0]
    if int(written) != int(expected):
        raise AnalystWarehouseError(f"wrote {written} rows of {mart.full_name} but it holds {expected}")
    return int(written)


def _write_manifest(conn: duckdb.DuckDBPyConnection, built: AnalystWarehouse) -> None:
    tables = list(COLUMN_RULES)
    rules = [describe_rules(table) for table in tables]
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_NEW}.{quote_ident(ANALYST_MANIFEST.schema)}")
    conn.execute(
        f"""CREATE TABLE {_in_new(ANALYST_MANIFEST)} AS
        SELECT
            unnest($tables) AS table_name,
            unnest($rows)::BIGINT AS row_count,
            $as_of::DATE AS as_of_date,
            $fingerprint AS key_fingerprint,
            $built_at::TIMESTAMPTZ AS built_at,
            $format_version::INTEGER AS format_version,
            unnest($columns)::VARCHAR[] AS columns,
            unnest($dropped)::VARCHAR[] AS dropped_columns,
            unnest($hashed)::VARCHAR[] AS hashed_columns""",
        {
            "tables": [_MARTS[table].full_name for table in tables],
            "rows": [built.rows[table] for table in tables],
            "as_of": built.as_of_date,
            "fingerprint": built.key_fingerprint,
            "built_at": dt.datetime.now(dt.timezone.utc),
            "format_version": FORMAT_VERSION,
            "columns": [output_columns(table) for table in tables],
            "dropped": [sorted(rule["dropped"]) for rule in rules],
            "hashed": [sorted(rule["hashed"]) for rule in rules],
        },
    )


def _audit(conn: duckdb.DuckDBPyConnection, built: AnalystWarehouse) -> None:
    """One ``governance.audit_log`` row: the file, rows per table, the rules applied; no values."""
    counts = rule_counts()
    tables = ", ".join(f"{table} {rows}" for table, rows in built.rows.items())
    record_audit(
        conn, AUDIT_ACTION, None, built.total_rows,
        f"analyst warehouse of the marts as of {built.as_of_date} -> {built.path}; {tables};"
        f" {counts['drop']} columns dropped, {counts['hash']} hashed, {counts['transform']} transformed",
    )
