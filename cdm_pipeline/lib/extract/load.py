"""Load one daily partition of one source into ``raw.<source>``, replacing it atomically.

Re-running a partition deletes exactly that partition's rows and inserts the new ones inside one
transaction, so a crash half-way leaves the previous version intact and a re-run on the same
files produces the same rows. Lines that cannot be parsed go to ``quarantine.<source>_rejects``
with file, line and error; the good rows of the same file still load.
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cdm_pipeline.config import SourceConfig
from cdm_pipeline.lib.extract.readers import (
    FILE,
    REJECT_COLUMNS,
    ROW_NUMBER,
    FileReadError,
    ScanResult,
    drop_scan,
    finish_scan,
    parquet_file_columns,
    read_files,
    shown_path,
)
from cdm_pipeline.lib.warehouse import qualified, quote_ident, safe_error_message, table_columns

logger = logging.getLogger(__name__)

RAW_SCHEMA = "raw"
QUARANTINE_SCHEMA = "quarantine"
METADATA_COLUMNS = ("_source_file", "_source_row", "_partition_date", "_loaded_at")


class ExtractError(Exception):
    """A partition that cannot be loaded: a missing mapped column, an unreadable file, ..."""


@dataclass
class PartitionLoad:
    """What loading one partition did, in counts only (no values: they may be personal)."""

    source: str
    partition_date: dt.date
    files: int = 0
    rows: int = 0
    rejects: int = 0
    rejects_by_error: dict[str, int] = field(default_factory=dict)
    missing_optional_columns: list[str] = field(default_factory=list)


def rejects_table_name(source_name: str) -> str:
    return f"{source_name}_rejects"


def partition_files(source: SourceConfig, landing_dir: Path, partition_date: dt.date) -> list[Path]:
    """The files of one partition, in a stable order (the load order decides row order)."""
    pattern = source.glob_for(landing_dir, partition_date)
    return sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())


def load_partition(
    conn: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    landing_dir: Path,
    partition_date: dt.date,
    loaded_at: dt.datetime,
) -> PartitionLoad:
    """Replace one partition of ``raw.<source>`` and its rejects from the landed files.

    Raises:
        ExtractError: a snapshot source with no file, an unreadable file, or a file without a
            column the config maps. Nothing is written in that case.
    """
    files = partition_files(source, landing_dir, partition_date)
    if source.is_snapshot and not files:
        raise ExtractError(
            f"source {source.name!r}: path {source.path!r} matches no file under {landing_dir}"
            " (a snapshot source needs its file for every partition)"
        )
    result = PartitionLoad(source.name, partition_date, files=len(files))
    rejects_by_error: Counter[str] = Counter()
    raw_table = qualified(RAW_SCHEMA, source.name)
    rejects_table = qualified(QUARANTINE_SCHEMA, rejects_table_name(source.name))

    conn.execute("BEGIN TRANSACTION")
    try:
        _ensure_tables(conn, source)
        conn.execute(f"DELETE FROM {raw_table} WHERE _partition_date = ?", [partition_date])
        conn.execute(f"DELETE FROM {rejects_table} WHERE _partition_date = ?", [partition_date])
        if source.format == "parquet":
            _check_parquet_columns(conn, source, files, landing_dir)
        try:
            scans = read_files(conn, source, files, landing_dir)
        except FileReadError as exc:
            raise ExtractError(f"source {source.name!r}: {exc}") from None
        seen_columns: set[str] = set()
        for scan in scans:
            if source.format != "jsonl":
                _check_mapped_columns(source, scan)
            seen_columns.update(c.casefold() for c in scan.columns)
            _add_new_columns(conn, source.name, scan.columns)
            result.rows += _insert_rows(conn, raw_table, scan, partition_date, loaded_at)
            finish_scan(conn, scan, raw_table, partition_date)
            for error_type, count in _insert_rejects(
                conn, rejects_table, scan.rejects_table, partition_date, loaded_at
            ):
                rejects_by_error[error_type] += count
            drop_scan(conn, scan)  # on failure, ROLLBACK removes the temp tables with the rest
        if source.format == "jsonl":
            _check_json_ids(conn, source, raw_table, partition_date)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    result.rejects = sum(rejects_by_error.values())
    result.rejects_by_error = dict(sorted(rejects_by_error.items()))
    if source.format == "jsonl" and result.rows:
        result.missing_optional_columns = [
            c for c in source.mapped_source_columns if c.casefold() not in seen_columns
        ]
    logger.info(
        "loaded %s partition %s: %d files, %d rows, %d rejects",
        source.name, partition_date, result.files, result.rows, result.rejects,
    )
    return result


def _ensure_tables(conn: duckdb.DuckDBPyConnection, source: SourceConfig) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(RAW_SCHEMA)}")
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(QUARANTINE_SCHEMA)}")
    # The mapped columns exist from the start, so staging can read an empty source.
    mapped = "".join(f"{quote_ident(c)} VARCHAR, " for c in source.mapped_source_columns)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified(RAW_SCHEMA, source.name)} ({mapped}"
        "_source_file VARCHAR NOT NULL, _source_row BIGINT NOT NULL,"
        " _partition_date DATE NOT NULL, _loaded_at TIMESTAMPTZ NOT NULL)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified(QUARANTINE_SCHEMA, rejects_table_name(source.name))}"
        " (_source_file VARCHAR NOT NULL, _source_row BIGINT NOT NULL, _source_line BIGINT,"
        " error_type VARCHAR NOT NULL,"
        " error_message VARCHAR, column_name VARCHAR, raw_line VARCHAR,"
        " _partition_date DATE NOT NULL, _loaded_at TIMESTAMPTZ NOT NULL)"
    )


def _check_mapped_columns(source: SourceConfig, scan: ScanResult) -> None:
    present = {c.casefold() for c in scan.columns}
    missing = [c for c in source.mapped_source_columns if c.casefold() not in present]
    if missing:
        raise ExtractError(
            f"source {source.name!r}: {scan.files[0]} has no column {missing[0]!r}"
            f" (mapped in the config; the file has {len(scan.columns)} columns)"
        )


def _check_json_ids(conn, source: SourceConfig, raw_table: str, partition_date) -> None:
    # JSON exports leave out null fields by convention: a key absent from a whole file only means
    # "no value". The record id is different: a file whose records never carry it is broken.
    without_id = conn.execute(
        f"SELECT {FILE} FROM {raw_table} WHERE _partition_date = ? GROUP BY {FILE}"
        f" HAVING count({quote_ident(source.id_column)}) = 0 ORDER BY {FILE} LIMIT 1",
        [partition_date],
    ).fetchone()
    if without_id:
        raise ExtractError(
            f"source {source.name!r}: {without_id[0]} has no {source.id_column!r} in any record"
            " (the id_column in the config)"
        )


def _check_parquet_columns(
    conn: duckdb.DuckDBPyConnection, source: SourceConfig, files: list[Path], landing_dir: Path
) -> None:
    # The partition is read with union_by_name, which would fill a missing column with nulls:
    # check each file's own schema first.
    for path in files:
        shown = shown_path(path, landing_dir)
        try:
            present = {c.casefold() for c in parquet_file_columns(conn, path)}
        except duckdb.Error as exc:
            raise ExtractError(f"source {source.name!r}: cannot read {shown}: {safe_error_message(exc)}") from None
        missing = [c for c in source.mapped_source_columns if c.casefold() not in present]
        if missing:
            raise ExtractError(
                f"source {source.name!r}: {shown} has no column {missing[0]!r}"
                f" (mapped in the config; the file has {len(present)} columns)"
            )


def _add_new_columns(conn: duckdb.DuckDBPyConnection, source_name: str, columns: list[str]) -> None:
    """Raw keeps every column a source ever sent; a new one is added, never dropped."""
    existing = {c.casefold() for c in table_columns(conn, RAW_SCHEMA, source_name)}
    for column in columns:
        if column.casefold() not in existing:
            conn.execute(
                f"ALTER TABLE {qualified(RAW_SCHEMA, source_name)} ADD COLUMN {quote_ident(column)} VARCHAR"
            )
            existing.add(column.casefold())


def _insert_rows(conn, raw_table: str, scan: ScanResult, partition_date, loaded_at) -> int:
    columns = "".join(f"{quote_ident(c)}, " for c in scan.columns)
    inserted = conn.execute(
        f"INSERT INTO {raw_table} BY NAME SELECT {columns}{FILE}, {ROW_NUMBER},"
        " $partition AS _partition_date, $loaded_at AS _loaded_at"
        f" FROM ({scan.rows_sql})",
        {**scan.params, "partition": partition_date, "loaded_at": loaded_at},
    ).fetchone()
    return int(inserted[0]) if inserted else 0


def _insert_rejects(conn, rejects_table: str, scan_rejects: str, partition_date, loaded_at):
    columns = ", ".join(REJECT_COLUMNS)
    conn.execute(
        f"INSERT INTO {rejects_table} BY NAME SELECT {columns},"
        " $partition AS _partition_date, $loaded_at AS _loaded_at"
        f" FROM {scan_rejects} ORDER BY {FILE}, {ROW_NUMBER}",
        {"partition": partition_date, "loaded_at": loaded_at},
    )
    return conn.execute(f"SELECT error_type, count(*) FROM {scan_rejects} GROUP BY error_type").fetchall()
