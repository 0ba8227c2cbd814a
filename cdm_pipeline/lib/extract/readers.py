"""Read a partition's landed files into temporary tables of text columns, with rejected lines.

Every format ends up the same way: a temp table holding the files' own columns as VARCHAR plus
``_source_file`` and ``_source_row``, and a temp table of the records that could not be read
(file, record, line, error). Files of one layout are read by a single DuckDB scan, which runs in
parallel across files; forcing text keeps values exactly as they landed (no leading zeros lost to
type guessing, no dates silently reinterpreted).
"""

from __future__ import annotations

import codecs
import csv
import itertools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.config import SourceConfig
from cdm_pipeline.lib.extract.encodings import (
    ScratchFolder,
    duckdb_encoding,
    guess_encoding,
    is_utf8,
    transcode_to_utf8,
)
from cdm_pipeline.lib.extract.landing import duckdb_path, shown_path
from cdm_pipeline.lib.warehouse import quote_ident, safe_error_message

FILE = "_source_file"
ROW_NUMBER = "_source_row"
# The rejects temp table has exactly these columns.
REJECT_COLUMNS = (FILE, ROW_NUMBER, "_source_line", "error_type", "error_message", "column_name", "raw_line")
METADATA_NAMES = frozenset({FILE, ROW_NUMBER, "_source_line", "_partition_date", "_loaded_at"})

_FILENAME = "_cdm_filename"  # the scan's file-name column, renamed so no source column collides
_JSON_LINE_DELIMITER = "\x1f"  # never valid unescaped inside JSON, so each line is one field
_NESTED_TYPES = ("STRUCT", "MAP", "UNION", "[]", "[")
_counter = itertools.count()
# A file with more unbalanced quotes than this is re-read no further: each costs a read of the rest
# of the file, and the rest stays rejected as one record (counted, with DuckDB's reason).
MAX_RESYNCS_PER_FILE = 100


class FileReadError(Exception):
    """A file that cannot be read at all (as opposed to a few bad lines in it).

    ``transient`` when the operating system refused (a file moved or still being copied, a
    network share that blinked): trying again later may work, unlike a broken header.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class ScanResult:
    """Rows of files sharing one layout, as a query, and the temp table of their rejects.

    ``rows_sql`` (run with ``params``) yields the files' columns as text plus ``_source_file``
    and ``_source_row``; the loader inserts from it directly, so the rows are copied once. A CSV
    scan learns its rejected records only while it runs: call :func:`finish_scan` after running
    ``rows_sql`` to collect them, to renumber the rows that followed them, and to re-read what an
    unbalanced quote swallowed.
    """

    rows_sql: str
    params: dict
    columns: list[str]
    files: list[str]  # as shown to people: relative to the landing folder
    rejects_table: str
    temp_tables: tuple[str, ...] = ()
    pending_rejects: tuple[str, str, int] | None = None  # (DuckDB rejects table, scans table, header lines)
    prefix: str = ""  # the folder the scanned paths start with, taken out of error messages
    # A CSV scan reads one file (DuckDB's multi-file scan lost whole files' rejects): that file,
    # where in it the scan starts (a scan re-reading past an unbalanced quote starts after it) and
    # the folder for such re-reads.
    path: Path | None = None
    row_offset: int = 0
    resyncs: int = 0
    scratch: ScratchFolder | None = None


def read_files(
    conn: duckdb.DuckDBPyConnection,
    source: SourceConfig,
    paths: list[Path],
    landing_dir: Path,
    scratch: ScratchFolder | None = None,
) -> list[ScanResult]:
    """Read ``paths`` with the reader for ``source.format``: one scan per file layout.

    A CSV source in an encoding DuckDB cannot read is copied to UTF-8 in ``scratch`` first
    (required then); the copies must outlive the scans, which read them when they run.
    """
    if not paths:
        return []
    shown = {str(path): shown_path(path, landing_dir) for path in paths}
    prefix = str(landing_dir) + os.sep
    try:
        if source.format == "csv":
            return _read_csv(conn, source, paths, shown, prefix, scratch)
        reader = {"jsonl": _read_jsonl, "parquet": _read_parquet}[source.format]
        return reader(conn, source, paths, shown, prefix)
    except duckdb.Error as exc:
        names = [shown[str(p)] for p in paths]
        files = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        raise FileReadError(
            f"cannot read {files}: {safe_error_message(exc)}", transient=isinstance(exc, duckdb.IOException)
        ) from None


def finish_scan(
    conn: duckdb.DuckDBPyConnection, scan: ScanResult, target: str, partition_date
) -> tuple[int, list[ScanResult]]:
    """Collect a CSV scan's rejects and renumber the rows it wrote into ``target``.

    An unbalanced quote makes DuckDB read the rest of the file (or up to the next quote) as one
    value, so every record after it is lost inside one rejected record. That record is cut back
    to its first line, its rows and rejects past it are deleted from ``target`` and the rejects,
    and the rest of the file is returned as a new scan to run the same way, numbered on from the
    broken record. Returns (rows deleted from ``target``, scans still to run).
    """
    if scan.pending_rejects is None:
        return 0, []
    raw_rejects, scans, header_lines = scan.pending_rejects
    broken = _first_swallowing_reject(conn, raw_rejects) if scan.path is not None else None
    _collect_rejects(
        conn, scan.rejects_table, raw_rejects, scans, scan.prefix, header_lines,
        shown=scan.files[0], row_offset=scan.row_offset, line_offset=scan.row_offset + 1 - header_lines,
    )
    _number_rows_around_rejects(conn, target, scan.rejects_table, partition_date, scan.row_offset)
    if broken is None or scan.scratch is None or scan.resyncs >= MAX_RESYNCS_PER_FILE:
        return 0, []
    line, record_start, first_line = broken
    resume_at = _next_line_start(scan.path, record_start, first_line)
    if resume_at is None:  # not found where DuckDB said: keep its verdict rather than guess
        return 0, []
    row = line - header_lines + scan.row_offset
    params = {"file": scan.files[0], "row": row, "partition": partition_date}
    removed = conn.execute(
        f"DELETE FROM {target} WHERE {FILE} = $file AND {ROW_NUMBER} > $row AND _partition_date = $partition",
        params,
    ).fetchone()[0]
    conn.execute(f"DELETE FROM {scan.rejects_table} WHERE {ROW_NUMBER} > $row", {"row": row})
    conn.execute(
        f"UPDATE {scan.rejects_table} SET raw_line = $line WHERE {ROW_NUMBER} = $row",
        {"line": first_line.decode("utf-8", errors="replace"), "row": row},
    )
    rest = _rest_of_file(scan.path, resume_at, scan.scratch)
    if rest is None:  # the broken line was the last one
        return int(removed), []
    resumed = _csv_scan(
        rest, scan.files[0], scan.columns, scan.params["delim"], scan.params["encoding"], scan.prefix,
        scan.scratch, header=False, row_offset=row, resyncs=scan.resyncs + 1,
    )
    return int(removed), [resumed]


def _first_swallowing_reject(conn, raw_rejects: str) -> tuple[int, int, bytes] | None:
    """The first rejected record spanning several lines: (record line, byte position, first line)."""
    found = conn.execute(
        f"SELECT line, line_byte_position, csv_line FROM {raw_rejects}"
        " WHERE regexp_matches(trim(csv_line, $breaks), '[\\r\\n]') ORDER BY line LIMIT 1",
        {"breaks": "\r\n"},
    ).fetchone()
    if found is None:
        return None
    line, position, text = found
    first = text.lstrip("\r\n").splitlines()[0].encode("utf-8")
    return int(line), int(position), first


def _next_line_start(path: Path, near: int, first_line: bytes) -> int | None:
    """Where the line after the record starting near byte ``near`` with ``first_line`` begins.

    DuckDB's byte position of a rejected record is off by one in some cases (before or after a
    line break), so the line starts close to it are tried and the text must match.
    """
    start = max(0, near - 8)
    with path.open("rb") as handle:
        handle.seek(start)
        window = handle.read(len(first_line) + 32)
    candidates = sorted(range(len(window) - len(first_line) + 1), key=lambda i: abs(start + i - near))
    for i in candidates:
        at = start + i
        if abs(at - near) > 4 or not window.startswith(first_line, i):
            continue
        before = window[i - 1:i] if i else b""
        if at and before not in (b"\n", b"\r"):
            continue
        end = i + len(first_line)
        if window[end:end + 2] == b"\r\n":
            return at + len(first_line) + 2
        if window[end:end + 1] in (b"\n", b"\r"):
            return at + len(first_line) + 1
        if end == len(window):  # the file's last line, without a line break
            return at + len(first_line)
    return None


def _rest_of_file(path: Path, offset: int, scratch: ScratchFolder) -> Path | None:
    """A copy of ``path`` from byte ``offset`` on, in ``scratch``; None if nothing is left."""
    target = scratch.path / "resync" / f"{next(_counter)}.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    with path.open("rb") as src, target.open("wb") as dst:
        src.seek(offset)
        shutil.copyfileobj(src, dst)
    if target.stat().st_size == 0:
        target.unlink()
        return None
    return target


def drop_scan(conn: duckdb.DuckDBPyConnection, scan: ScanResult) -> None:
    for table in (scan.rejects_table, *scan.temp_tables):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    if scan.pending_rejects is not None:
        conn.execute(f"DROP TABLE IF EXISTS {scan.pending_rejects[0]}")
        conn.execute(f"DROP TABLE IF EXISTS {scan.pending_rejects[1]}")


def _temp_names() -> tuple[str, str, str]:
    n = next(_counter)
    return f"_cdm_rows_{n}", f"_cdm_rejects_{n}", f"_cdm_scan_{n}"


def _shown_file_sql(column: str = _FILENAME) -> str:
    """SQL for a scanned file's name as shown to people: relative to the landing folder."""
    return f"CASE WHEN starts_with({column}, $prefix) THEN substr({column}, length($prefix) + 1) ELSE {column} END"


def check_column_names(columns: list[str], shown: str) -> None:
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise FileReadError(f"cannot read {shown}: a column has an empty name")
        if name.casefold() in seen:
            # DuckDB identifiers are case-insensitive: Email and EMAIL would collide.
            raise FileReadError(f"cannot read {shown}: duplicate column {name!r}")
        if name in METADATA_NAMES or name == _FILENAME:
            raise FileReadError(f"cannot read {shown}: column {name!r} clashes with load metadata")
        seen.add(name.casefold())


def _csv_header(path: Path, source: SourceConfig, shown: str) -> list[str]:
    encoding = source.encoding
    try:
        with path.open("rb") as handle:
            start = handle.read(len(codecs.BOM_UTF8))
    except OSError as exc:
        raise FileReadError(f"cannot read {shown}: {exc.strerror or exc.__class__.__name__}", transient=True) from None
    if start == codecs.BOM_UTF8 and not is_utf8(encoding):
        # Only UTF-8 writes this mark: read as another encoding, every accent would be garbled.
        raise FileReadError(
            f"cannot read {shown}: the file starts with a UTF-8 byte-order mark but the source's"
            f" encoding is {encoding}: set encoding: utf-8 in cdm.yaml"
        )
    # errors="replace": a bad byte further down the file is DuckDB's to reject, line by line.
    try:
        with path.open("r", encoding=encoding, errors="replace", newline="") as handle:
            lines = iter(handle)
            # The mark goes before csv parses the line: after it, a quoted first name ("Record
            # ID") would not start with its quote and would keep both quotes in its name.
            first = next(lines, "").removeprefix("\ufeff")
            header = next(csv.reader(itertools.chain([first], lines), delimiter=source.delimiter), [])
    except csv.Error as exc:
        raise FileReadError(f"cannot read {shown}: bad header ({exc})") from None
    if any("\ufffd" in name for name in header):
        guess = guess_encoding(path, encoding)
        hint = f" — is the file {guess}? set encoding: in cdm.yaml" if guess else ""
        raise FileReadError(f"cannot read {shown}: header is not valid {encoding}{hint}")
    header = [name.strip() for name in header]
    check_column_names(header, shown)
    return header


def _read_csv(
    conn,
    source: SourceConfig,
    paths: list[Path],
    shown: dict[str, str],
    prefix: str,
    scratch: ScratchFolder | None,
) -> list[ScanResult]:
    # One scan per file: DuckDB needs the column list up front (an export whose columns changed
    # between files must not be read with the wrong names), and its multi-file scan was seen to
    # drop a whole file's rejects when several files of a partition had bad lines.
    headers: list[tuple[Path, list[str]]] = []
    for path in paths:
        header = _csv_header(path, source, shown[str(path)])
        if header:  # a zero-byte file holds no records
            headers.append((path, header))
    encoding = duckdb_encoding(source.encoding)
    if encoding is None and headers:
        if scratch is None:
            raise ValueError(f"reading {source.encoding} files needs a scratch folder")
        # The copies mirror the files' paths under the scratch folder, which then takes the
        # landing folder's place as the prefix: rows and rejects name the original files.
        prefix = str(scratch.path) + os.sep
        copies = [(_transcoded_copy(path, shown[str(path)], source.encoding, scratch), header)
                  for path, header in headers]
        shown = {str(copy): shown[str(path)] for (copy, _), (path, _) in zip(copies, headers, strict=True)}
        headers = copies
        encoding = "utf-8"
    return [
        _csv_scan(path, shown[str(path)], header, source.delimiter, encoding, prefix, scratch)
        for path, header in headers
    ]


def _csv_scan(
    path: Path,
    shown: str,
    columns: list[str],
    delimiter: str,
    encoding: str,
    prefix: str,
    scratch: ScratchFolder | None,
    *,
    header: bool = True,
    row_offset: int = 0,
    resyncs: int = 0,
) -> ScanResult:
    _, rejects, scan = _temp_names()
    select = ", ".join(quote_ident(c) for c in columns)
    rows_sql = (
        f"SELECT {select}, $file AS {FILE}, ordinality + $offset AS {ROW_NUMBER}"
        f" FROM read_csv($paths, columns = $columns, header = {str(header).lower()}, auto_detect = false,"
        " delim = $delim, quote = '\"', escape = '\"', encoding = $encoding,"
        f" store_rejects = true, rejects_table = '{rejects}_raw', rejects_scan = '{scan}')"
        " WITH ORDINALITY"
    )
    params = {
        "paths": [duckdb_path(path)],
        "columns": {name: "VARCHAR" for name in columns},
        "delim": delimiter,
        "encoding": encoding,
        "file": shown,
        "offset": row_offset,
    }
    return ScanResult(
        rows_sql, params, list(columns), [shown], rejects,
        pending_rejects=(f"{rejects}_raw", scan, 1 if header else 0), prefix=prefix,
        path=path, row_offset=row_offset, resyncs=resyncs, scratch=scratch,
    )


def _transcoded_copy(path: Path, shown: str, encoding: str, scratch: ScratchFolder) -> Path:
    relative = Path(shown)
    if relative.is_absolute():  # not under the landing folder (never for a configured glob)
        relative = relative.relative_to(relative.anchor)
    target = scratch.path / relative
    try:
        transcode_to_utf8(path, target, encoding)
    except OSError as exc:
        raise FileReadError(f"cannot read {shown}: {exc.strerror or exc.__class__.__name__}", transient=True) from None
    return target


def _read_jsonl(
    conn, source: SourceConfig, paths: list[Path], shown: dict[str, str], prefix: str
) -> list[ScanResult]:
    rows, rejects, scan = _temp_names()
    lines = f"{rows}_lines"
    # Blank lines are not records, but they keep their place in the numbering (ordinality is
    # taken before the filter). The problem column is computed in the same pass.
    conn.execute(
        f"CREATE TEMP TABLE {lines} AS SELECT line, {FILE}, {ROW_NUMBER},"
        " CASE WHEN NOT json_valid(line) THEN 'INVALID JSON'"
        "      WHEN json_type(line::JSON) <> 'OBJECT' THEN 'NOT A JSON OBJECT' END AS problem"
        f" FROM (SELECT line, {_shown_file_sql()} AS {FILE},"
        f"       ordinality - min(ordinality) OVER (PARTITION BY {_FILENAME}) + 1 AS {ROW_NUMBER}"
        "       FROM read_csv($paths, columns = {'line': 'VARCHAR'}, header = false,"
        f"       auto_detect = false, delim = $delim, quote = '', escape = '', encoding = 'utf-8',"
        f"       filename = '{_FILENAME}', store_rejects = true, rejects_table = '{rejects}_raw',"
        f"       rejects_scan = '{scan}') WITH ORDINALITY)"
        " WHERE trim(line) <> ''",
        {"paths": [duckdb_path(p) for p in paths], "delim": _JSON_LINE_DELIMITER, "prefix": prefix},
    )
    _collect_rejects(conn, rejects, f"{rejects}_raw", scan, prefix, header_lines=0)
    _number_rows_around_rejects(conn, lines, rejects)
    conn.execute(
        f"INSERT INTO {rejects} SELECT {FILE}, {ROW_NUMBER}, {ROW_NUMBER}, problem,"
        " CASE problem WHEN 'INVALID JSON' THEN 'line is not valid JSON'"
        "      ELSE 'line holds JSON that is not an object' END, NULL, line"
        f" FROM {lines} WHERE problem IS NOT NULL"
    )
    # Every key of every record becomes a column, in order of first appearance.
    keys = [
        row[0]
        for row in conn.execute(
            f"SELECT key FROM (SELECT unnest(json_keys(line::JSON)) AS key, {FILE}, {ROW_NUMBER}"
            f" FROM {lines} WHERE problem IS NULL) GROUP BY key ORDER BY min(({FILE}, {ROW_NUMBER})), key"
        ).fetchall()
    ]
    check_column_names(keys, ", ".join(shown[str(p)] for p in paths))
    # JSON pointers ('/key', with ~ and / escaped) address keys holding any character.
    pointers = ["/" + key.replace("~", "~0").replace("/", "~1") for key in keys]
    select = "".join(f"vals[{i + 1}] AS {quote_ident(key)}, " for i, key in enumerate(keys))
    rows_sql = (
        f"SELECT {select}{FILE}, {ROW_NUMBER}"
        f" FROM (SELECT json_extract_string(line, $pointers) AS vals, {FILE}, {ROW_NUMBER}"
        f" FROM {lines} WHERE problem IS NULL)"
    )
    return [
        ScanResult(
            rows_sql, {"pointers": pointers}, keys,
            [shown[str(p)] for p in paths], rejects, temp_tables=(lines,), prefix=prefix,
        )
    ]


def _read_parquet(
    conn, source: SourceConfig, paths: list[Path], shown: dict[str, str], prefix: str
) -> list[ScanResult]:
    _, rejects, _ = _temp_names()
    files = [duckdb_path(p) for p in paths]
    described = conn.execute(
        "DESCRIBE SELECT * FROM read_parquet($paths, union_by_name = true)", {"paths": files}
    ).fetchall()
    columns = [row[0] for row in described]
    check_column_names(columns, ", ".join(shown[str(p)] for p in paths))
    select = []
    for name, column_type, *_ in described:
        ident = quote_ident(name)
        if any(marker in column_type for marker in _NESTED_TYPES):
            select.append(f"to_json({ident})::VARCHAR AS {ident}")
        else:
            select.append(f"{ident}::VARCHAR AS {ident}")
    rows_sql = (
        f"SELECT {', '.join(select)}, {_shown_file_sql()} AS {FILE}, file_row_number + 1 AS {ROW_NUMBER}"
        f" FROM read_parquet($paths, union_by_name = true, file_row_number = true,"
        f" filename = '{_FILENAME}')"
    )
    _create_empty_rejects(conn, rejects)
    return [
        ScanResult(
            rows_sql, {"paths": files, "prefix": prefix}, columns, [shown[str(p)] for p in paths], rejects,
            prefix=prefix,
        )
    ]


def parquet_file_columns(conn: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    """The top-level columns of one parquet file (reads the footer only)."""
    return [row[0] for row in conn.execute(
        "DESCRIBE SELECT * FROM read_parquet($path)", {"path": duckdb_path(path)}
    ).fetchall()]


def _create_empty_rejects(conn, rejects: str) -> None:
    conn.execute(
        f"CREATE TEMP TABLE {rejects} ({FILE} VARCHAR, {ROW_NUMBER} BIGINT, _source_line BIGINT,"
        " error_type VARCHAR, error_message VARCHAR, column_name VARCHAR, raw_line VARCHAR)"
    )


def _collect_rejects(
    conn, rejects: str, raw_rejects: str, scans: str, prefix: str, header_lines: int,
    *, shown: str | None = None, row_offset: int = 0, line_offset: int = 0,
) -> None:
    """One row per rejected record from DuckDB's reject tables, which are then dropped.

    DuckDB numbers ``line`` by record (the header counts as line 1), so a value with quoted line
    breaks does not shift the numbers: record position = line - header lines. A record can fail
    several ways (one error per extra column): the first error in the record names it. A scan of
    one file names it ``shown``; a scan starting part-way into its file (after an unbalanced
    quote) numbers on from ``row_offset``, its lines from ``line_offset``.
    """
    file_sql = "$shown" if shown is not None else _shown_file_sql("s.file_path")
    conn.execute(
        f"CREATE TEMP TABLE {rejects} AS"
        f" SELECT DISTINCT ON (s.file_path, e.line) {file_sql} AS {FILE},"
        f" e.line::BIGINT - $header + $row_offset AS {ROW_NUMBER}, e.line::BIGINT + $line_offset AS _source_line,"
        " e.error_type::VARCHAR AS error_type, e.error_message, e.column_name,"
        " trim(e.csv_line, $breaks) AS raw_line"  # DuckDB keeps the break before a CRLF file's line
        f" FROM {raw_rejects} AS e JOIN {scans} AS s USING (scan_id, file_id)"
        " ORDER BY s.file_path, e.line, e.byte_position",
        {
            "header": header_lines, "row_offset": row_offset, "line_offset": line_offset, "breaks": "\r\n",
            **({"shown": shown} if shown is not None else {"prefix": prefix}),
        },
    )
    conn.execute(f"DROP TABLE {raw_rejects}")
    conn.execute(f"DROP TABLE {scans}")


def _number_rows_around_rejects(conn, rows: str, rejects: str, partition_date=None, row_offset: int = 0) -> None:
    """Renumber rows so ``_source_row`` counts the rejected records too.

    DuckDB's ordinality counts only the rows it returned; a row after a rejected record would
    otherwise point one record too early in the file. Afterwards the rows and the rejects of a
    file together number its records 1..n without a gap. With ``partition_date``, ``rows`` is the
    raw table and only that partition's rows are touched; with ``row_offset`` only the rows past
    it (a scan that started part-way into its file).
    """
    if not conn.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0]:
        return
    in_partition = "" if partition_date is None else " AND _partition_date = $partition"
    params = {"offset": row_offset} | ({} if partition_date is None else {"partition": partition_date})
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {rejects}_positions AS
        WITH bad AS (SELECT {FILE}, count(*) AS n FROM {rejects} GROUP BY ALL),
        good AS (
            SELECT {FILE}, max({ROW_NUMBER}) AS n FROM {rows}
            WHERE {FILE} IN (SELECT {FILE} FROM bad) AND {ROW_NUMBER} > $offset{in_partition} GROUP BY ALL
        ),
        positions AS (
            SELECT {FILE}, unnest(range($offset + 1, good.n + bad.n + 1)) AS position
            FROM bad JOIN good USING ({FILE})
        )
        SELECT {FILE}, position,
               row_number() OVER (PARTITION BY {FILE} ORDER BY position) + $offset AS ordinal
        FROM positions ANTI JOIN {rejects} AS r
            ON r.{FILE} = positions.{FILE} AND r.{ROW_NUMBER} = positions.position
        """,
        params,
    )
    conn.execute(
        f"UPDATE {rows} SET {ROW_NUMBER} = p.position FROM {rejects}_positions AS p"
        f" WHERE {rows}.{FILE} = p.{FILE} AND {rows}.{ROW_NUMBER} = p.ordinal"
        f" AND {rows}.{ROW_NUMBER} > $offset{in_partition}",
        params,
    )
    conn.execute(f"DROP TABLE {rejects}_positions")
