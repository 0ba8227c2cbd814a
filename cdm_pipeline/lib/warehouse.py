"""Small helpers for talking to the DuckDB warehouse safely, and the one way to open it.

Identifiers that come from config or from landed files (table and column names) cannot be bound
as SQL parameters, so they are quoted here, in one place; values are always bound parameters.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from cdm_pipeline.config import CdmConfig
    from cdm_pipeline.lib.catalog import Table

def quote_ident(name: str) -> str:
    """Quote a SQL identifier for DuckDB, whatever characters it holds."""
    if "\x00" in name:
        raise ValueError("identifier contains a NUL character")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A SQL string literal, for the one place a value cannot be bound: staging's column-reading
    fragments (lib/staging/mapping.py), which are SQL expressions reused inside many statements
    and views. Everywhere else a value is a ``$param``."""
    return "'" + text.replace("'", "''") + "'"


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``, both parts quoted."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


# How long an open waits for a lock held by another process, in seconds of sleep (backoff from
# 0.2 s, doubling, at most 5 s apart). A pipeline step waits long: a process that is exiting, or a
# person's short read-only session, lets go within moments, and a step that gives up costs a
# Dagster retry. A `cdm` command waits only for the first case: a run holds the warehouse for
# minutes, and the person at the terminal wants the one-line refusal now, not after half a minute.
PIPELINE_LOCK_WAIT = 25.0
COMMAND_LOCK_WAIT = 1.5
NO_LOCK_WAIT = 0.0


class WarehouseLocked(duckdb.IOException):
    """Another process holds the warehouse file's lock (still, after waiting ``lock_wait``)."""

    def __init__(self, path: Path):
        super().__init__(
            f"the warehouse {path} is in use by another process (a run in progress, the UI or a DuckDB"
            " session?); try again when it has finished"
        )
        self.path = path


@contextmanager
def open_warehouse(
    path: Path, *, settings: Mapping[str, str | int], read_only: bool = False,
    lock_wait: float = COMMAND_LOCK_WAIT,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse file, opened the one way every step and command opens it; always closed after.

    The connection gets the config's ``duckdb`` settings (``settings``: memory limit, threads) and
    the session settings results depend on (``prepare_connection``). Opening for writing creates
    the file's folder. A lock held by another process is waited for, with backoff, for
    ``lock_wait`` seconds (``PIPELINE_LOCK_WAIT`` for pipeline steps, ``COMMAND_LOCK_WAIT`` for
    commands), then raises :class:`WarehouseLocked`.
    """
    conn = connect(path, settings=settings, read_only=read_only, lock_wait=lock_wait)
    try:
        yield conn
    finally:
        # Also when the body failed: the next step or command needs the file lock.
        conn.close()


def open_config_warehouse(
    config: CdmConfig, *, read_only: bool = False, lock_wait: float = COMMAND_LOCK_WAIT
) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    """``open_warehouse`` on the config's warehouse with the config's ``duckdb`` settings."""
    return open_warehouse(
        config.warehouse, settings=config.duckdb.connection_settings(), read_only=read_only, lock_wait=lock_wait
    )


def connect(
    path: Path, read_only: bool = False, settings: Mapping[str, str | int] | None = None, *,
    lock_wait: float = NO_LOCK_WAIT,
) -> duckdb.DuckDBPyConnection:
    """``open_warehouse``'s connection for a caller that closes it itself (tests, fixtures).

    Prefer ``open_warehouse``: it cannot leave the file locked. Without ``settings`` the
    connection has DuckDB's defaults; without ``lock_wait`` a held lock fails at once.
    """
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    delays = _backoff(lock_wait)
    while True:
        try:
            conn = duckdb.connect(str(path), read_only=read_only, config=dict(settings or {}))
            break
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                raise WarehouseLocked(path) from exc
            time.sleep(delay)
    try:
        prepare_connection(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _backoff(total: float) -> Iterator[float]:
    """Sleeps of 0.2 s, doubling, at most 5 s, adding up to ``total``."""
    delay, waited = 0.2, 0.0
    while waited < total:
        step = min(delay, 5.0, total - waited)
        yield step
        waited += step
        delay *= 2


def _is_lock_conflict(exc: duckdb.IOException) -> bool:
    # 'Could not set lock on file "...": Conflicting lock is held in ... (PID n)'. Other I/O
    # errors (a missing file opened read-only, no permission) would fail again: no waiting.
    return "Could not set lock" in str(exc) or "Conflicting lock" in str(exc)


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
