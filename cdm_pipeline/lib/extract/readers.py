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
    ``rows_sql`` to collect them and to renumber the rows that followed them.
    """

    rows_sql: str
    params: dict
    columns: list[str]
    files: list[str]  # as shown to people: relative to the landing folder
    rejects_table: str
    temp_tables: tuple[str, ...] = ()
    pending_rejects: tuple[str, str, int] | None = None  # (DuckDB rejects table, scans table, header lines)


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


def finish_scan(conn: duckdb.DuckDBPyConnection, scan: ScanResult, target: str, partition_date) -> None:
    """Collect a CSV scan's rejects and renumber the rows it wrote into ``target``."""
    if scan.pending_rejects is None:
        return
    raw_rejects, scans, header_lines = scan.pending_rejects
    _collect_rejects(conn, scan.rejects_table, raw_rejects, scans, scan.params["prefix"], header_lines)
    _number_rows_around_rejects(conn, target, scan.rejects_table, partition_date)


def drop_scan(conn: duckdb.DuckDBPyConnection, scan: ScanResult) -> None:
    for table in (scan.rejects_table, *scan.temp_tables):
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    if scan.pending_rejects is not None:
        conn.execute(f"DROP TABLE IF EXISTS {scan.pending_rejects[0]}")
        conn.execute(f"DROP TABLE IF EXISTS {scan.pending_rejects[1]}")


def shown_path(path: Path, landing_dir: Path) -> str:
    """A file's path as shown to people: relative to the landing folder."""
    return str(path.relative_to(landing_dir)) if path.is_relative_to(landing_dir) else str(path)


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
    # One scan per distinct header (usually one): DuckDB needs the column list up front, and an
    # export whose columns changed between files must not be read with the wrong names.
    layouts: dict[tuple[str, ...], list[Path]] = {}
    for path in paths:
        header = tuple(_csv_header(path, source, shown[str(path)]))
        if header:  # a zero-byte file holds no records
            layouts.setdefault(header, []).append(path)
    encoding = duckdb_encoding(source.encoding)
    if encoding is None and layouts:
        if scratch is None:
            raise ValueError(f"reading {source.encoding} files needs a scratch folder")
        # The copies mirror the files' paths under the scratch folder, which then takes the
        # landing folder's place as the prefix: rows and rejects name the original files.
        prefix = str(scratch.path) + os.sep
        copies: dict[str, str] = {}
        for header, group in layouts.items():
            layouts[header] = [_transcoded_copy(path, shown[str(path)], source.encoding, scratch) for path in group]
            copies.update(zip((str(copy) for copy in layouts[header]), (shown[str(p)] for p in group), strict=True))
        shown = copies
        encoding = "utf-8"
    results = []
    for header, group in layouts.items():
        _, rejects, scan = _temp_names()
        select = ", ".join(quote_ident(c) for c in header)
        rows_sql = (
            f"SELECT {select}, {_shown_file_sql()} AS {FILE},"
            f" ordinality - min(ordinality) OVER (PARTITION BY {_FILENAME}) + 1 AS {ROW_NUMBER}"
            " FROM read_csv($paths, columns = $columns, header = true, auto_detect = false,"
            " delim = $delim, quote = '\"', escape = '\"', encoding = $encoding,"
            f" filename = '{_FILENAME}', store_rejects = true,"
            f" rejects_table = '{rejects}_raw', rejects_scan = '{scan}')"
            " WITH ORDINALITY"
        )
        params = {
            "paths": [str(p) for p in group],
            "columns": {name: "VARCHAR" for name in header},
            "delim": source.delimiter,
            "encoding": encoding,
            "prefix": prefix,
        }
        results.append(
            ScanResult(
                rows_sql, params, list(header), [shown[str(p)] for p in group], rejects,
                pending_rejects=(f"{rejects}_raw", scan, 1),
            )
        )
    return results


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
        {"paths": [str(p) for p in paths], "delim": _JSON_LINE_DELIMITER, "prefix": prefix},
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
            [shown[str(p)] for p in paths], rejects, temp_tables=(lines,),
        )
    ]


def _read_parquet(
    conn, source: SourceConfig, paths: list[Path], shown: dict[str, str], prefix: str
) -> list[ScanResult]:
    _, rejects, _ = _temp_names()
    files = [str(p) for p in paths]
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
    return [ScanResult(rows_sql, {"paths": files, "prefix": prefix}, columns, [shown[f] for f in files], rejects)]


def parquet_file_columns(conn: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    """The top-level columns of one parquet file (reads the footer only)."""
    return [row[0] for row in conn.execute(
        "DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)}
    ).fetchall()]


def _create_empty_rejects(conn, rejects: str) -> None:
    conn.execute(
        f"CREATE TEMP TABLE {rejects} ({FILE} VARCHAR, {ROW_NUMBER} BIGINT, _source_line BIGINT,"
        " error_type VARCHAR, error_message VARCHAR, column_name VARCHAR, raw_line VARCHAR)"
    )


def _collect_rejects(
    conn, rejects: str, raw_rejects: str, scans: str, prefix: str, header_lines: int
) -> None:
    """One row per rejected record from DuckDB's reject tables, which are then dropped.

    DuckDB numbers ``line`` by record (the header counts as line 1), so a value with quoted line
    breaks does not shift the numbers: record position = line - header lines. A record can fail
    several ways (one error per extra column): the first error in the record names it.
    """
    conn.execute(
        f"CREATE TEMP TABLE {rejects} AS"
        f" SELECT DISTINCT ON (s.file_path, e.line) {_shown_file_sql('s.file_path')} AS {FILE},"
        f" e.line::BIGINT - $header AS {ROW_NUMBER}, e.line::BIGINT AS _source_line,"
        " e.error_type::VARCHAR AS error_type, e.error_message, e.column_name, e.csv_line AS raw_line"
        f" FROM {raw_rejects} AS e JOIN {scans} AS s USING (scan_id, file_id)"
        " ORDER BY s.file_path, e.line, e.byte_position",
        {"header": header_lines, "prefix": prefix},
    )
    conn.execute(f"DROP TABLE {raw_rejects}")
    conn.execute(f"DROP TABLE {scans}")


def _number_rows_around_rejects(conn, rows: str, rejects: str, partition_date=None) -> None:
    """Renumber rows so ``_source_row`` counts the rejected records too.

    DuckDB's ordinality counts only the rows it returned; a row after a rejected record would
    otherwise point one record too early in the file. Afterwards the rows and the rejects of a
    file together number its records 1..n without a gap. With ``partition_date``, ``rows`` is the
    raw table and only that partition's rows are touched.
    """
    if not conn.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0]:
        return
    in_partition = "" if partition_date is None else " AND _partition_date = $partition"
    params = {} if partition_date is None else {"partition": partition_date}
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {rejects}_positions AS
        WITH bad AS (SELECT {FILE}, count(*) AS n FROM {rejects} GROUP BY ALL),
        good AS (
            SELECT {FILE}, max({ROW_NUMBER}) AS n FROM {rows}
            WHERE {FILE} IN (SELECT {FILE} FROM bad){in_partition} GROUP BY ALL
        ),
        positions AS (
            SELECT {FILE}, unnest(range(1, good.n + bad.n + 1)) AS position
            FROM bad JOIN good USING ({FILE})
        )
        SELECT {FILE}, position,
               row_number() OVER (PARTITION BY {FILE} ORDER BY position) AS ordinal
        FROM positions ANTI JOIN {rejects} AS r
            ON r.{FILE} = positions.{FILE} AND r.{ROW_NUMBER} = positions.position
        """,
        params,
    )
    conn.execute(
        f"UPDATE {rows} SET {ROW_NUMBER} = p.position FROM {rejects}_positions AS p"
        f" WHERE {rows}.{FILE} = p.{FILE} AND {rows}.{ROW_NUMBER} = p.ordinal{in_partition}",
        params,
    )
    conn.execute(f"DROP TABLE {rejects}_positions")
