"""Load one daily partition of one source into ``raw.<source>``, replacing it atomically.

Re-running a partition deletes exactly that partition's rows and inserts the new ones inside one
transaction, so a crash half-way leaves the previous version intact and a re-run on the same
files produces the same rows. Lines that cannot be parsed go to ``quarantine.<source>_rejects``
with file, line and error; the good rows of the same file still load.

A partition that was loaded before never shrinks silently: a re-load with fewer rows or fewer
files than the table holds (a file missing for a moment, or cut short while copied) fails and
keeps the rows, unless the caller allows it (``cdm run --allow-shrink``). A file that changes
while it is read is not loaded either.

Rows and rejected lines of erased people (``governance.suppression_list``) are dropped before
they are inserted, so a re-run or a backfill of an old partition does not bring them back. The
list holds keyed hashes only: while it is empty nothing changes and no key is needed; once it
has entries, a partition cannot load without ``$CDM_PRIVACY_KEY`` rather than load unsuppressed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cdm_pipeline.config import CdmConfig, SourceConfig
from cdm_pipeline.lib.catalog import ensure, raw_table, rejects_table
from cdm_pipeline.lib.extract.encodings import guess_encoding, scratch_folder
from cdm_pipeline.lib.extract.landing import (
    OUTSIDE_LANDING,
    OUTSIDE_LANDING_REASON,
    changed_files,
    file_states,
    landed_files,
    shown_path,
)
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
)
from cdm_pipeline.lib.governance.extract_log import record_extract
from cdm_pipeline.lib.personal_data.keyed_hash import MissingPrivacyKey, privacy_key
from cdm_pipeline.lib.personal_data.suppression import (
    check_privacy_key,
    has_suppressions,
    record_suppressed_rows,
    reject_suppression_predicate,
    suppression_predicate,
)
from cdm_pipeline.lib.warehouse import quote_ident, safe_error_message

logger = logging.getLogger(__name__)


class ExtractError(Exception):
    """A partition that cannot be loaded: a missing mapped column, an unreadable file, ...

    ``transient`` errors (the file system refused a read) are worth retrying; the others are in
    the files or the config and would fail the same way again.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass
class PartitionLoad:
    """What loading one partition did, in counts only (no values: they may be personal)."""

    source: str
    partition_date: dt.date
    files: int = 0
    rows: int = 0
    rejects: int = 0
    rejects_by_error: dict[str, int] = field(default_factory=dict)
    # Mapped columns some file lacked, read as nulls: a JSON key no record carried, or a column
    # the config marks ``required: false``.
    missing_optional_columns: list[str] = field(default_factory=list)
    suppressed: int = 0  # rows and rejected lines dropped by the suppression list
    # One line per file with lines that did not decode, naming the encoding (counts, no values).
    encoding_warnings: list[str] = field(default_factory=list)
    # Files matched but not read: they resolve outside the landing folder (each one a reject row).
    refused_files: list[str] = field(default_factory=list)
    # (rows, files) the partition held before this load made it smaller, when that was allowed.
    shrank_from: tuple[int, int] | None = None

    @property
    def records(self) -> int:
        """Records landed, read or not (rows of erased people not counted)."""
        return self.rows + self.rejects

    @property
    def rejected_share(self) -> float:
        return self.rejects / self.records if self.records else 0.0


def partition_files(source: SourceConfig, landing_dir: Path, partition_date: dt.date) -> list[Path]:
    """The files of one partition to read, in a stable order (the load order decides row order).

    Files resolving outside the landing folder are left out (:func:`load_partition` reports them).
    """
    return landed_files(source, landing_dir, partition_date).files


def load_partition(
    conn: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    landing_dir: Path,
    partition_date: dt.date,
    loaded_at: dt.datetime,
    *,
    config: CdmConfig | None = None,
    run_id: str | None = None,
    allow_shrink: bool = False,
) -> PartitionLoad:
    """Replace one partition of ``raw.<source>`` and its rejects from the landed files.

    Rows and rejected lines matching ``governance.suppression_list`` are not inserted (counted
    in ``suppressed``). With an empty or absent list nothing else changes: no key is needed and
    the only cost is a lookup of the list.

    Args:
        conn: The warehouse connection.
        source: The source to load.
        landing_dir: The folder the source's ``path`` is relative to.
        partition_date: The day to replace.
        loaded_at: The ``_loaded_at`` of the inserted rows.
        config: The project config. Needed only once the suppression list has entries: it says
            which contacts sources an order's or event's ids refer to, and the default region.
        run_id: The Dagster run loading it, recorded in ``governance.extract_log``.
        allow_shrink: Replace a loaded partition with fewer rows or files than it holds (the
            operator says the smaller files are right). Without it that fails, nothing written.

    A dated source with no file for the day loads zero rows (``files == 0``): the raw asset's
    check warns about it, as the file may still arrive.

    Raises:
        ExtractError: a snapshot source with no file, an unreadable file, or a file without a
            column the config maps; a non-empty suppression list without ``$CDM_PRIVACY_KEY``
            (or without ``config``); a re-load that would shrink the partition; a file that
            changed while it was read. Nothing is written in that case.
    """
    landed = landed_files(source, landing_dir, partition_date)
    files = landed.files
    if source.is_snapshot and not files:
        if landed.refused:
            raise ExtractError(
                f"source {source.name!r}: {landed.refused[0]}: {OUTSIDE_LANDING_REASON}"
                " (a snapshot source needs its file for every partition)"
            )
        raise ExtractError(
            f"source {source.name!r}: path {source.path!r} matches no file under {landing_dir}"
            " (a snapshot source needs its file for every partition)"
        )
    # Taken before any byte is read: a file still being written shows a different size after.
    states = file_states(files)
    result = PartitionLoad(source.name, partition_date, files=len(files), refused_files=landed.refused)
    rejects_by_error: Counter[str] = Counter()
    raw = raw_table(source.name)
    rejects = rejects_table(source.name)

    missing: set[str] = set()
    conn.execute("BEGIN TRANSACTION")
    try:
        with scratch_folder(conn) as scratch:
            # Read inside the transaction: the partition is filtered by the list it commits with.
            suppression = _Suppression.for_source(conn, source, config)
            _ensure_tables(conn, source)
            before = _stored_counts(conn, source, partition_date)
            conn.execute(f"DELETE FROM {raw} WHERE _partition_date = ?", [partition_date])
            conn.execute(f"DELETE FROM {rejects} WHERE _partition_date = ?", [partition_date])
            if source.format == "parquet":
                missing.update(_check_parquet_columns(conn, source, files, landing_dir))
            try:
                scans = deque(read_files(conn, source, files, landing_dir, scratch))
            except FileReadError as exc:
                raise ExtractError(f"source {source.name!r}: {exc}", transient=exc.transient) from None
            seen_columns: set[str] = set()
            while scans:
                scan = scans.popleft()
                if source.format != "jsonl":
                    _check_mapped_columns(source, scan)
                present = {c.casefold() for c in scan.columns}
                seen_columns.update(present)
                if source.format == "csv":
                    missing.update(c for c in source.optional_source_columns if c.casefold() not in present)
                ensure(conn, raw_table(source.name, scan.columns))  # a column first sent today
                try:
                    inserted, dropped = _insert_rows(
                        conn, str(raw), scan, partition_date, loaded_at, suppression
                    )
                    # Rows past an unbalanced quote are taken back and read again by a new scan.
                    removed, resumed = finish_scan(conn, scan, str(raw), partition_date)
                except duckdb.Error as exc:
                    raise _scan_error(source, scan, exc) from None
                scans.extend(resumed)
                result.rows += inserted - removed
                result.suppressed += dropped
                counts, dropped = _insert_rejects(
                    conn, str(rejects), scan.rejects_table, partition_date, loaded_at, suppression
                )
                for error_type, count in counts:
                    rejects_by_error[error_type] += count
                result.suppressed += dropped
                result.encoding_warnings += _encoding_warnings(conn, source, scan, landing_dir)
                drop_scan(conn, scan)  # on failure, ROLLBACK removes the temp tables with the rest
        if source.format == "jsonl":
            _check_json_keys(conn, source, str(raw), partition_date)
        if landed.refused:
            _insert_refused(conn, str(rejects), landed.refused, partition_date, loaded_at)
            rejects_by_error[OUTSIDE_LANDING] += len(landed.refused)
        changed = changed_files(states)
        if changed:
            raise ExtractError(
                f"source {source.name!r}: {shown_path(changed[0], landing_dir)} changed while it was read"
                " (size or modification time); nothing was loaded, try again once the file is complete",
                transient=True,
            )
        after = _stored_counts(conn, source, partition_date)
        if after.smaller_than(before):
            if not allow_shrink:
                raise ExtractError(
                    f"source {source.name!r}: partition {partition_date} would shrink from {before} to {after};"
                    " the loaded rows are kept (if the smaller files are right, re-run with --allow-shrink)",
                    transient=True,  # a file missing for a moment may be back on the retry
                )
            result.shrank_from = (before.rows, before.files)
        if suppression is not None:
            record_suppressed_rows(conn, source.name, partition_date, result.suppressed, loaded_at)
        record_extract(
            conn, run_id, source.name, partition_date, result.files, result.rows,
            sum(rejects_by_error.values()), result.suppressed, loaded_at,
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    result.rejects = sum(rejects_by_error.values())
    result.rejects_by_error = dict(sorted(rejects_by_error.items()))
    if source.format == "jsonl" and result.rows:
        missing.update(
            c for c in source.mapped_source_columns + source.optional_source_columns
            if c.casefold() not in seen_columns
        )
    result.missing_optional_columns = sorted(missing)
    logger.info(
        "loaded %s partition %s: %d files, %d rows, %d rejects, %d suppressed",
        source.name, partition_date, result.files, result.rows, result.rejects, result.suppressed,
    )
    if result.refused_files:
        logger.warning(
            "%s partition %s: %d file(s) resolve outside the landing folder and were not read",
            source.name, partition_date, len(result.refused_files),
        )
    if result.shrank_from:
        logger.warning(
            "%s partition %s shrank from %d rows in %d files to %d rows (allowed)",
            source.name, partition_date, *result.shrank_from, result.rows,
        )
    for warning in result.encoding_warnings:
        logger.warning("%s", warning)
    return result


@dataclass(frozen=True)
class _StoredCounts:
    """What a partition holds: loaded rows, and files with a row or a reject in it."""

    rows: int
    files: int

    def smaller_than(self, before: _StoredCounts) -> bool:
        return self.rows < before.rows or self.files < before.files

    def __str__(self) -> str:
        rows = "row" if self.rows == 1 else "rows"
        files = "file" if self.files == 1 else "files"
        return f"{self.rows} {rows} in {self.files} {files}"


def _stored_counts(conn, source: SourceConfig, partition_date: dt.date) -> _StoredCounts:
    # The tables themselves, not governance.extract_log: they are what a smaller load would
    # replace, and they already leave out rows erased since.
    rows, files = conn.execute(
        f"SELECT (SELECT count(*) FROM {raw_table(source.name)} WHERE _partition_date = $day),"
        f" (SELECT count(DISTINCT {FILE}) FROM (SELECT {FILE} FROM {raw_table(source.name)}"
        f" WHERE _partition_date = $day UNION ALL SELECT {FILE} FROM {rejects_table(source.name)}"
        " WHERE _partition_date = $day))",
        {"day": partition_date},
    ).fetchone()
    return _StoredCounts(int(rows), int(files))


def _insert_refused(conn, rejects: str, refused: list[str], partition_date, loaded_at) -> None:
    """One reject row per refused file (record 0: the file itself), so the refusal is counted."""
    conn.executemany(
        f"INSERT INTO {rejects} ({FILE}, {ROW_NUMBER}, error_type, error_message, _partition_date, _loaded_at)"
        " VALUES (?, 0, ?, ?, ?, ?)",
        [[name, OUTSIDE_LANDING, OUTSIDE_LANDING_REASON, partition_date, loaded_at] for name in refused],
    )


def _ensure_tables(conn: duckdb.DuckDBPyConnection, source: SourceConfig) -> None:
    # The mapped columns exist from the start, so staging can read an empty source, and so do
    # the optional ones, which no file may ever carry. A column mapped since the table was made
    # is added too.
    ensure(conn, raw_table(source.name, source.mapped_source_columns + source.optional_source_columns))
    ensure(conn, rejects_table(source.name))


def _check_mapped_columns(source: SourceConfig, scan: ScanResult) -> None:
    present = {c.casefold() for c in scan.columns}
    missing = [c for c in source.mapped_source_columns if c.casefold() not in present]
    if missing:
        raise ExtractError(
            f"source {source.name!r}: {scan.files[0]} has no column {missing[0]!r}"
            f" (mapped in the config; the file has {len(scan.columns)} columns)"
        )


def _check_json_keys(conn, source: SourceConfig, raw_table: str, partition_date) -> None:
    # JSON exports leave out null fields by convention: a key absent from a whole file only means
    # "no value". The record id and the list to explode are different: a file whose records
    # never carry them is broken (or the config names the wrong key). Both are columns of the
    # raw table from the start (_ensure_tables).
    for key, role in ((source.id_column, "the id_column"), (source.explode, "the column to explode")):
        if key is None:  # ids generated in staging (id_from), or nothing to explode
            continue
        without = conn.execute(
            f"SELECT {FILE} FROM {raw_table} WHERE _partition_date = ? GROUP BY {FILE}"
            f" HAVING count({quote_ident(key)}) = 0 ORDER BY {FILE} LIMIT 1",
            [partition_date],
        ).fetchone()
        if without:
            raise ExtractError(
                f"source {source.name!r}: {without[0]} has no {key!r} in any record ({role} in the config)"
            )


def _check_parquet_columns(
    conn: duckdb.DuckDBPyConnection, source: SourceConfig, files: list[Path], landing_dir: Path
) -> set[str]:
    """Fail on a file without a required mapped column; return the optional ones some file lacks."""
    # The partition is read with union_by_name, which would fill a missing column with nulls:
    # check each file's own schema first.
    absent: set[str] = set()
    for path in files:
        shown = shown_path(path, landing_dir)
        try:
            present = {c.casefold() for c in parquet_file_columns(conn, path)}
        except duckdb.Error as exc:
            raise ExtractError(
                f"source {source.name!r}: cannot read {shown}: {safe_error_message(exc)}",
                transient=isinstance(exc, duckdb.IOException),
            ) from None
        missing = [c for c in source.mapped_source_columns if c.casefold() not in present]
        if missing:
            raise ExtractError(
                f"source {source.name!r}: {shown} has no column {missing[0]!r}"
                f" (mapped in the config; the file has {len(present)} columns)"
            )
        absent.update(c for c in source.optional_source_columns if c.casefold() not in present)
    return absent


_ENCODING_ERRORS = ("INVALID ENCODING", "INVALID UNICODE")  # DuckDB 2.0's name, and earlier ones'


def _encoding_warnings(conn, source: SourceConfig, scan: ScanResult, landing_dir: Path) -> list[str]:
    """One message per file with lines that did not decode: the count, the file, the encoding.

    Read as the wrong encoding, a file rejects every line with an accent; a bare reject count
    would not say why, so the message names the encoding and, when the bytes suggest one, the
    encoding the file is probably in.
    """
    bad = conn.execute(
        f"SELECT {FILE}, count(*) FROM {scan.rejects_table} WHERE error_type IN $types"
        f" GROUP BY {FILE} ORDER BY {FILE}",
        {"types": list(_ENCODING_ERRORS)},
    ).fetchall()
    return [
        encoding_warning(source.name, file, lines, source.encoding, guess_encoding(landing_dir / file, source.encoding))
        for file, lines in bad
    ]


def encoding_warning(source_name: str, file: str, lines: int, encoding: str, guess: str | None) -> str:
    """``crm: 37 lines of a.csv are not valid utf-8 — is the file windows-1252? set encoding: ...``"""
    counted = f"{lines} line of {file} is" if lines == 1 else f"{lines} lines of {file} are"
    if guess:
        return f"{source_name}: {counted} not valid {encoding} — is the file {guess}? set encoding: in cdm.yaml"
    return (
        f"{source_name}: {counted} not valid {encoding} (corrupt lines; if the file is in another"
        " encoding, set encoding: in cdm.yaml)"
    )


def _scan_error(source: SourceConfig, scan: ScanResult, exc: duckdb.Error) -> ExtractError:
    # A scan fails as a whole only when a file cannot be read at all (bad lines are rejected one
    # by one); the first line of DuckDB's message, values scrubbed, with transcoded copies'
    # paths shown as the files they came from.
    message = safe_error_message(exc)
    if scan.prefix:
        message = message.replace(scan.prefix, "")
    files = ", ".join(scan.files[:3]) + (" ..." if len(scan.files) > 3 else "")
    return ExtractError(
        f"source {source.name!r}: cannot read {files}: {message}",
        transient=isinstance(exc, duckdb.IOException),
    )


@dataclass(frozen=True)
class _Suppression:
    """The suppression list as applied to one source's partition (None when the list is empty)."""

    conn: duckdb.DuckDBPyConnection
    config: CdmConfig
    source: SourceConfig
    key: bytes

    @classmethod
    def for_source(
        cls, conn: duckdb.DuckDBPyConnection, source: SourceConfig, config: CdmConfig | None
    ) -> _Suppression | None:
        if not has_suppressions(conn):
            return None
        try:
            key = privacy_key()
            check_privacy_key(conn, key)  # another key's hashes match nobody: refused, like no key
        except MissingPrivacyKey as exc:
            # Loading without the key would land the rows of people who were erased.
            raise ExtractError(f"source {source.name!r}: {exc}") from None
        if config is None:
            raise ExtractError(
                f"source {source.name!r}: the suppression list has entries; load_partition needs"
                " the project config to apply it"
            )
        return cls(conn, config, source, key)

    def rows(self, relation: str, columns: list[str]) -> tuple[str, dict]:
        return suppression_predicate(
            self.conn, self.config, self.source, self.key, relation=relation, columns=columns
        )

    def rejects(self) -> tuple[str, dict]:
        return reject_suppression_predicate(self.conn, self.source, self.key)


_HELD_ROWS = "_cdm_suppression_rows"


def _insert_rows(
    conn, raw_table: str, scan: ScanResult, partition_date, loaded_at, suppression: _Suppression | None
) -> tuple[int, int]:
    """Insert a scan's rows; returns (rows inserted, rows dropped by the suppression list)."""
    columns = "".join(f"{quote_ident(c)}, " for c in scan.columns)
    insert = (
        f"INSERT INTO {raw_table} BY NAME SELECT {columns}{FILE}, {ROW_NUMBER},"
        " $partition AS _partition_date, $loaded_at AS _loaded_at"
    )
    when = {"partition": partition_date, "loaded_at": loaded_at}
    predicate, params = suppression.rows(_HELD_ROWS, scan.columns) if suppression else ("false", {})
    if predicate == "false":  # no list, or no listed kind applies to this source's columns
        inserted = conn.execute(f"{insert} FROM ({scan.rows_sql})", {**scan.params, **when}).fetchone()
        return (int(inserted[0]) if inserted else 0), 0
    # The rows are held in a temp table first, so the distinct values of each identifier column
    # are hashed once (not once per row) and the scan's size is known. Dropped rows never reach
    # the warehouse file; the temp table goes with the transaction.
    conn.execute(f"CREATE TEMP TABLE {_HELD_ROWS} AS {scan.rows_sql}", scan.params)
    scanned = conn.execute(f"SELECT count(*) FROM {_HELD_ROWS}").fetchone()[0]
    inserted = conn.execute(
        f"{insert} FROM {_HELD_ROWS} WHERE NOT {predicate}", {**params, **when}
    ).fetchone()
    conn.execute(f"DROP TABLE {_HELD_ROWS}")
    inserted = int(inserted[0]) if inserted else 0
    return inserted, int(scanned) - inserted


def _insert_rejects(
    conn, rejects_table: str, scan_rejects: str, partition_date, loaded_at, suppression: _Suppression | None
) -> tuple[list[tuple[str, int]], int]:
    """Insert a scan's rejects; returns (count per error type inserted, lines suppressed)."""
    columns = ", ".join(REJECT_COLUMNS)
    predicate, params = suppression.rejects() if suppression else ("false", {})
    filtering = predicate != "false"
    kept = f" WHERE NOT {predicate}" if filtering else ""
    conn.execute(
        f"INSERT INTO {rejects_table} BY NAME SELECT {columns},"
        " $partition AS _partition_date, $loaded_at AS _loaded_at"
        f" FROM {scan_rejects}{kept} ORDER BY {FILE}, {ROW_NUMBER}",
        {**params, "partition": partition_date, "loaded_at": loaded_at},
    )
    if not filtering:
        counts = conn.execute(f"SELECT error_type, count(*) FROM {scan_rejects} GROUP BY error_type")
        return counts.fetchall(), 0
    # The lines are few: testing them again costs less than holding the verdicts.
    rows = conn.execute(
        f"SELECT error_type, {predicate} AS dropped, count(*) FROM {scan_rejects} GROUP BY ALL", params
    ).fetchall()
    counts: Counter[str] = Counter()
    dropped = 0
    for error_type, is_dropped, count in rows:
        if is_dropped:
            dropped += count
        else:
            counts[error_type] += count
    return sorted(counts.items()), dropped
