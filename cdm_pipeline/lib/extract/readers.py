"""Read one landed file into a temporary table of text columns, with its rejected lines.

Every format ends up the same way: a temp table holding the file's own columns as VARCHAR plus
``_source_row``, and a temp table of the lines that could not be read (line number, error). Using
DuckDB's readers keeps this fast; forcing text keeps values exactly as they landed (no leading
zeros lost to type guessing, no dates silently reinterpreted).
"""

from __future__ import annotations

import codecs
import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.config import SourceConfig
from cdm_pipeline.lib.warehouse import quote_ident

# Columns every file read produces: the rows table has these besides the file's columns.
ROW_NUMBER = "_source_row"
# The rejects temp table has exactly these columns.
REJECT_COLUMNS = (ROW_NUMBER, "_source_line", "error_type", "error_message", "column_name", "raw_line")

_JSON_LINE_DELIMITER = "\x1f"  # never valid unescaped inside JSON, so each line is one field
_NESTED_TYPES = ("STRUCT", "MAP", "UNION", "[]", "[")
_counter = itertools.count()


class FileReadError(Exception):
    """A file that cannot be read at all (as opposed to a few bad lines in it)."""


@dataclass(frozen=True)
class FileRead:
    """Temp tables holding one file's rows and rejected lines, and the file's column names."""

    rows_table: str
    rejects_table: str
    columns: list[str]


def read_file(conn: duckdb.DuckDBPyConnection, source: SourceConfig, path: Path, shown: str) -> FileRead:
    """Read ``path`` with the reader for ``source.format``; ``shown`` names it in errors."""
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[source.format]
    try:
        return reader(conn, source, path, shown)
    except duckdb.Error as exc:
        raise FileReadError(f"cannot read {shown}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    # DuckDB errors can quote the offending line ("Original Line: ..."), which may hold
    # personal data: keep only the first line, which names the problem.
    return str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__


def _temp_names() -> tuple[str, str, str]:
    n = next(_counter)
    return f"_cdm_rows_{n}", f"_cdm_rejects_{n}", f"_cdm_scan_{n}"


def _csv_header(path: Path, source: SourceConfig, shown: str) -> list[str]:
    # errors="replace": a bad byte further down the file is DuckDB's to reject, line by line.
    try:
        with path.open("r", encoding=source.encoding, errors="replace", newline="") as handle:
            header = next(csv.reader(handle, delimiter=source.delimiter), [])
    except csv.Error as exc:
        raise FileReadError(f"cannot read {shown}: bad header ({exc})") from None
    if any("\ufffd" in name for name in header):
        raise FileReadError(f"cannot read {shown}: header is not valid {source.encoding}")
    if header and header[0].startswith(codecs.BOM_UTF8.decode("utf-8")):
        header[0] = header[0][1:]
    header = [name.strip() for name in header]
    _check_column_names(header, shown)
    return header


def _check_column_names(columns: list[str], shown: str) -> None:
    seen: set[str] = set()
    for name in columns:
        if not name:
            raise FileReadError(f"cannot read {shown}: a column has an empty name")
        if name.casefold() in seen:
            # DuckDB identifiers are case-insensitive: Email and EMAIL would collide.
            raise FileReadError(f"cannot read {shown}: duplicate column {name!r}")
        if name.startswith("_source_") or name in ("_partition_date", "_loaded_at"):
            raise FileReadError(f"cannot read {shown}: column {name!r} clashes with load metadata")
        seen.add(name.casefold())


def _read_csv(conn, source: SourceConfig, path: Path, shown: str) -> FileRead:
    rows, rejects, scan = _temp_names()
    header = _csv_header(path, source, shown)
    if not header:  # an empty file: no header, no rows
        _create_empty(conn, rows, rejects, [])
        return FileRead(rows, rejects, [])
    select = ", ".join(quote_ident(c) for c in header)
    conn.execute(
        f"CREATE TEMP TABLE {rows} AS SELECT {select}, ordinality AS {ROW_NUMBER}"
        " FROM read_csv($path, columns = $columns, header = true, auto_detect = false,"
        " delim = $delim, quote = '\"', escape = '\"', encoding = $encoding,"
        f" store_rejects = true, rejects_table = '{rejects}_raw', rejects_scan = '{scan}')"
        " WITH ORDINALITY",
        {
            "path": str(path),
            "columns": {name: "VARCHAR" for name in header},
            "delim": source.delimiter,
            "encoding": source.encoding,
        },
    )
    _collect_rejects(conn, rejects, scan, header_lines=1)
    _number_rows_around_rejects(conn, rows, rejects)
    return FileRead(rows, rejects, header)


def _read_jsonl(conn, source: SourceConfig, path: Path, shown: str) -> FileRead:
    rows, rejects, scan = _temp_names()
    lines = f"{rows}_lines"
    conn.execute(
        f"CREATE TEMP TABLE {lines} AS SELECT line, ordinality AS {ROW_NUMBER}"
        " FROM read_csv($path, columns = {'line': 'VARCHAR'}, header = false, auto_detect = false,"
        " delim = $delim, quote = '', escape = '', encoding = 'utf-8',"
        f" store_rejects = true, rejects_table = '{rejects}_raw', rejects_scan = '{scan}')"
        " WITH ORDINALITY",
        {"path": str(path), "delim": _JSON_LINE_DELIMITER},
    )
    _collect_rejects(conn, rejects, scan, header_lines=0)
    _number_rows_around_rejects(conn, lines, rejects)
    # Blank lines keep their place in the numbering (above) but are not records.
    conn.execute(f"DELETE FROM {lines} WHERE line IS NULL OR trim(line) = ''")
    conn.execute(
        f"INSERT INTO {rejects} SELECT {ROW_NUMBER}, {ROW_NUMBER},"
        " CASE WHEN json_valid(line) THEN 'NOT A JSON OBJECT' ELSE 'INVALID JSON' END,"
        " CASE WHEN json_valid(line) THEN 'line holds JSON that is not an object'"
        "      ELSE 'line is not valid JSON' END, NULL, line"
        f" FROM {lines} WHERE NOT json_valid(line) OR json_type(line::JSON) <> 'OBJECT'"
    )
    conn.execute(
        f"DELETE FROM {lines} WHERE NOT json_valid(line) OR json_type(line::JSON) <> 'OBJECT'"
    )
    keys = [
        row[0]
        for row in conn.execute(
            f"SELECT key FROM (SELECT unnest(json_keys(line::JSON)) AS key, {ROW_NUMBER} FROM {lines})"
            " GROUP BY key ORDER BY min(" + ROW_NUMBER + "), key"
        ).fetchall()
    ]
    _check_column_names(keys, shown)
    # JSON pointers ('/key', with ~ and / escaped) address keys holding any character.
    pointers = ["/" + key.replace("~", "~0").replace("/", "~1") for key in keys]
    select = ", ".join(f"vals[{i + 1}] AS {quote_ident(key)}" for i, key in enumerate(keys))
    conn.execute(
        f"CREATE TEMP TABLE {rows} AS SELECT {select + ', ' if select else ''}{ROW_NUMBER}"
        f" FROM (SELECT json_extract_string(line, $pointers) AS vals, {ROW_NUMBER} FROM {lines})",
        {"pointers": pointers},
    )
    conn.execute(f"DROP TABLE {lines}")
    return FileRead(rows, rejects, keys)


def _read_parquet(conn, source: SourceConfig, path: Path, shown: str) -> FileRead:
    rows, rejects, _ = _temp_names()
    described = conn.execute(
        "DESCRIBE SELECT * FROM read_parquet($path)", {"path": str(path)}
    ).fetchall()
    columns = [row[0] for row in described]
    _check_column_names(columns, shown)
    select = []
    for name, column_type, *_ in described:
        ident = quote_ident(name)
        if any(marker in column_type for marker in _NESTED_TYPES):
            select.append(f"to_json({ident})::VARCHAR AS {ident}")
        else:
            select.append(f"{ident}::VARCHAR AS {ident}")
    conn.execute(
        f"CREATE TEMP TABLE {rows} AS SELECT {', '.join(select)}, file_row_number + 1 AS {ROW_NUMBER}"
        " FROM read_parquet($path, file_row_number = true) ORDER BY file_row_number",
        {"path": str(path)},
    )
    _create_empty(conn, None, rejects, [])
    return FileRead(rows, rejects, columns)


def _create_empty(conn, rows: str | None, rejects: str, columns: list[str]) -> None:
    if rows is not None:
        cols = "".join(f"{quote_ident(c)} VARCHAR, " for c in columns)
        conn.execute(f"CREATE TEMP TABLE {rows} ({cols}{ROW_NUMBER} BIGINT)")
    conn.execute(
        f"CREATE TEMP TABLE {rejects} ({ROW_NUMBER} BIGINT, _source_line BIGINT, error_type VARCHAR,"
        " error_message VARCHAR, column_name VARCHAR, raw_line VARCHAR)"
    )


def _collect_rejects(conn, rejects: str, scan: str, header_lines: int) -> None:
    """One row per rejected record from DuckDB's reject tables, which are then dropped.

    DuckDB numbers ``line`` by record (the header counts as line 1), so a value with quoted line
    breaks does not shift the numbers: record position = line - header lines. A record can fail
    several ways (one error per extra column): the first error in the record names it.
    """
    conn.execute(
        f"CREATE TEMP TABLE {rejects} AS"
        f" SELECT DISTINCT ON (line) line::BIGINT - $header AS {ROW_NUMBER}, line::BIGINT AS _source_line,"
        " error_type::VARCHAR AS error_type, error_message, column_name, csv_line AS raw_line"
        f" FROM {rejects}_raw ORDER BY line, byte_position",
        {"header": header_lines},
    )
    conn.execute(f"DROP TABLE {rejects}_raw")
    conn.execute(f"DROP TABLE {scan}")


def _number_rows_around_rejects(conn, rows: str, rejects: str) -> None:
    """Renumber rows so ``_source_row`` counts the rejected records too.

    DuckDB's ordinality counts only the rows it returned; a row after a rejected record would
    otherwise point one record too early in the file. Afterwards the rows and the rejects of a
    file together number its records 1..n without a gap.
    """
    rejected = conn.execute(f"SELECT count(*) FROM {rejects}").fetchone()[0]
    if not rejected:
        return
    returned = conn.execute(f"SELECT count(*) FROM {rows}").fetchone()[0]
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {rows}_positions AS
        SELECT position, row_number() OVER (ORDER BY position) AS ordinal
        FROM range(1, $total + 1) AS r(position)
        WHERE position NOT IN (SELECT {ROW_NUMBER} FROM {rejects})
        """,
        {"total": returned + rejected},
    )
    conn.execute(
        f"UPDATE {rows} SET {ROW_NUMBER} = p.position FROM {rows}_positions AS p"
        f" WHERE {rows}.{ROW_NUMBER} = p.ordinal"
    )
    conn.execute(f"DROP TABLE {rows}_positions")
