"""Small helpers for talking to the DuckDB warehouse safely.

Identifiers that come from config or from landed files (table and column names) cannot be bound
as SQL parameters, so they are quoted here, in one place; values are always bound parameters.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from cdm_pipeline.lib.catalog import Table

def quote_ident(name: str) -> str:
    """Quote a SQL identifier for DuckDB, whatever characters it holds."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``, both parts quoted."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def connect(
    path: Path, read_only: bool = False, settings: dict[str, str | int] | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file (creating its folder) with the settings every step relies on.

    ``settings`` are the config's ``duckdb`` section (memory limit, threads).
    """
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path), read_only=read_only, config=settings or {})
    prepare_connection(conn)
    return conn


def prepare_connection(conn: duckdb.DuckDBPyConnection) -> None:
    """Session settings that make results independent of the machine's locale and time zone."""
    conn.execute("SET TimeZone = 'UTC'")


def table_exists(conn: duckdb.DuckDBPyConnection, schema: str | Table, table: str | None = None) -> bool:
    """Whether a table (a catalogue ``Table``, or a schema and a name) exists."""
    schema, table = _parts(schema, table)
    row = conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [schema, table],
    ).fetchone()
    return bool(row and row[0])


def table_columns(conn: duckdb.DuckDBPyConnection, schema: str | Table, table: str | None = None) -> list[str]:
    """A table's columns in order (empty when it does not exist)."""
    schema, table = _parts(schema, table)
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, table],
    ).fetchall()
    return [row[0] for row in rows]


def _parts(schema: str | Table, table: str | None) -> tuple[str, str]:
    return (schema.schema, schema.name) if table is None else (schema, table)


# DuckDB quotes values in single quotes and identifiers (column names: useful, not personal) in
# double quotes.
_QUOTED_VALUE = re.compile(r"'[^']*'")


def safe_error_message(exc: BaseException) -> str:
    """The first line of a database error with quoted values replaced by ``'…'``.

    DuckDB messages quote the value they choked on ("Could not convert string 'jane@x.com'") and
    may add the whole line ("Original Line: ..."); logs and run summaries must carry neither.
    """
    text = str(exc).strip()
    first = text.splitlines()[0] if text else exc.__class__.__name__
    return scrub_values(first)


def scrub_values(text: str) -> str:
    """``text`` with every single-quoted value replaced by ``'…'`` (double-quoted names stay)."""
    return _QUOTED_VALUE.sub("'…'", text)
