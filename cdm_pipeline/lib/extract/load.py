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
from cdm_pipeline.lib.extract.readers import REJECT_COLUMNS, ROW_NUMBER, FileReadError, read_file
from cdm_pipeline.lib.warehouse import qualified, quote_ident, table_columns

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
        seen_columns: set[str] = set()
        for path in files:
            shown = str(path.relative_to(landing_dir)) if path.is_relative_to(landing_dir) else str(path)
            try:
                read = read_file(conn, source, path, shown)
            except FileReadError as exc:
                raise ExtractError(f"source {source.name!r}: {exc}") from None
            try:
                _check_mapped_columns(source, read.columns, shown)
                seen_columns.update(c.casefold() for c in read.columns)
                _add_new_columns(conn, source.name, read.columns)
                result.rows += _insert_rows(conn, raw_table, read, shown, partition_date, loaded_at)
                for error_type, count in _insert_rejects(
                    conn, rejects_table, read.rejects_table, shown, partition_date, loaded_at
                ):
                    rejects_by_error[error_type] += count
            finally:
                conn.execute(f"DROP TABLE IF EXISTS {read.rows_table}")
                conn.execute(f"DROP TABLE IF EXISTS {read.rejects_table}")
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


def _check_mapped_columns(source: SourceConfig, columns: list[str], shown: str) -> None:
    if not columns:
        return  # a zero-byte file, or JSON lines with no record: nothing to map
    present = {c.casefold() for c in columns}
    if source.format == "jsonl":
        # JSON exports leave out null fields by convention: a key absent from a whole file only
        # means "no value"; only the record id is required.
        required = [source.id_column]
    else:
        required = source.mapped_source_columns
    missing = [c for c in required if c.casefold() not in present]
    if missing:
        raise ExtractError(
            f"source {source.name!r}: {shown} has no column {missing[0]!r}"
            f" (mapped in the config; the file has {len(columns)} columns)"
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


def _insert_rows(conn, raw_table: str, read, shown: str, partition_date, loaded_at) -> int:
    columns = ", ".join(quote_ident(c) for c in read.columns)
    conn.execute(
        f"INSERT INTO {raw_table} BY NAME SELECT {columns + ', ' if columns else ''}"
        f"{ROW_NUMBER}, $file AS _source_file, $partition AS _partition_date,"
        f" $loaded_at AS _loaded_at FROM {read.rows_table} ORDER BY {ROW_NUMBER}",
        {"file": shown, "partition": partition_date, "loaded_at": loaded_at},
    )
    return conn.execute(f"SELECT count(*) FROM {read.rows_table}").fetchone()[0]


def _insert_rejects(conn, rejects_table: str, read_rejects: str, shown: str, partition_date, loaded_at):
    columns = ", ".join(REJECT_COLUMNS)
    conn.execute(
        f"INSERT INTO {rejects_table} BY NAME SELECT {columns}, $file AS _source_file,"
        f" $partition AS _partition_date, $loaded_at AS _loaded_at"
        f" FROM {read_rejects} ORDER BY {ROW_NUMBER}",
        {"file": shown, "partition": partition_date, "loaded_at": loaded_at},
    )
    return conn.execute(
        f"SELECT error_type, count(*) FROM {read_rejects} GROUP BY error_type"
    ).fetchall()

