"""Small helpers for talking to the DuckDB warehouse safely, and the one way to open it.

Identifiers that come from config or from landed files (table and column names) cannot be bound
as SQL parameters, so they are quoted here, in one place; values are always bound parameters.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from cdm_pipeline.lib.encryption import (
    Encryption,
    EncryptionError,
    enable_crypto,
    is_encrypted_file,
    warehouse_encryption,
)
from cdm_pipeline.lib.file_modes import fsync_folder, tighten

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
    lock_wait: float = COMMAND_LOCK_WAIT, encryption: Encryption | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse file, opened the one way every step and command opens it; always closed after.

    The connection gets the config's ``duckdb`` settings (``settings``: memory limit, threads) and
    the session settings results depend on (``prepare_connection``). Opening for writing creates
    the file's folder. A lock held by another process is waited for, with backoff, for
    ``lock_wait`` seconds (``PIPELINE_LOCK_WAIT`` for pipeline steps, ``COMMAND_LOCK_WAIT`` for
    commands), then raises :class:`WarehouseLocked`. With ``encryption`` the file is a DuckDB
    encrypted database (``lib/encryption.py``); a plain file then is refused, and so is an
    encrypted one without it.
    """
    conn = connect(path, settings=settings, read_only=read_only, lock_wait=lock_wait, encryption=encryption)
    try:
        yield conn
    finally:
        # Also when the body failed: the next step or command needs the file lock.
        conn.close()


def open_config_warehouse(
    config: CdmConfig, *, read_only: bool = False, lock_wait: float = COMMAND_LOCK_WAIT
) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    """``open_warehouse`` on the config's warehouse with its ``duckdb`` settings and its key, if any."""
    return open_warehouse(
        config.warehouse, settings=config.duckdb.connection_settings(), read_only=read_only, lock_wait=lock_wait,
        encryption=warehouse_encryption(config),
    )


def connect(
    path: Path, read_only: bool = False, settings: Mapping[str, str | int] | None = None, *,
    lock_wait: float = NO_LOCK_WAIT, encryption: Encryption | None = None,
) -> duckdb.DuckDBPyConnection:
    """``open_warehouse``'s connection for a caller that closes it itself (tests, fixtures).

    Prefer ``open_warehouse``: it cannot leave the file locked. Without ``settings`` the
    connection has DuckDB's defaults; without ``lock_wait`` a held lock fails at once.
    """
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    delays = _backoff(lock_wait)
    while True:
        # A file swapped in while this process waited for the lock (an erasure's rewrite, a
        # restore) must not be missed: the swapper holds the old file's lock until after the
        # rename, so a connection that got the lock on the old file sees a different inode at
        # the path afterwards, and opens again. Otherwise its writes would go to an unlinked file.
        before = _inode(path)
        try:
            conn = _open(path, read_only, settings or {}, encryption)
        except duckdb.IOException as exc:
            if not _is_lock_conflict(exc):
                raise
            delay = next(delays, None)
            if delay is None:
                raise WarehouseLocked(path) from exc
            time.sleep(delay)
            continue
        if before is None or _inode(path) == before:
            break
        conn.close()
    if not read_only:
        # Owner-only whatever the umask of whoever created the file (a DuckDB shell, an old release).
        tighten(path)
    try:
        prepare_connection(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _open(
    path: Path, read_only: bool, settings: Mapping[str, str | int], encryption: Encryption | None
) -> duckdb.DuckDBPyConnection:
    if encryption is None:
        try:
            return duckdb.connect(str(path), read_only=read_only, config=dict(settings))
        except duckdb.Error as exc:
            if "without a key" in str(exc):
                raise EncryptionError(
                    f"the warehouse {path} is encrypted: set CDM_WAREHOUSE_KEY or CDM_WAREHOUSE_KEY_FILE"
                    " (or security.key_file) to its key"
                ) from None
            raise
    if not read_only and path.exists() and is_encrypted_file(path) is False:
        raise EncryptionError(
            f"the warehouse {path} is not encrypted but a key is configured: run `cdm warehouse encrypt`"
            " to encrypt it, or unset the key"
        )
    # An encrypted file is attached to an in-memory database under the name a plain connection
    # would give it (the file's stem), and made the default, so every query reads the same.
    config = dict(settings)
    if encryption.extension_directory is not None:
        config["extension_directory"] = str(encryption.extension_directory)
    conn = duckdb.connect(":memory:", config=config)
    try:
        if not read_only:
            enable_crypto(conn, encryption)
        # Spill files next to the warehouse (as for a plain file), encrypted like it.
        conn.execute("SET temp_directory = $dir", {"dir": str(path) + ".tmp"})
        conn.execute("SET temp_file_encryption = true")
        alias = quote_ident(path.stem)
        options = f"ENCRYPTION_KEY {quote_literal(encryption.key)}" + (", READ_ONLY" if read_only else "")
        try:
            conn.execute(f"ATTACH {quote_literal(str(path))} AS {alias} ({options})")
        except duckdb.Error as exc:
            # DuckDB may quote the statement in its error: the key must not reach a log.
            text = str(exc).replace(encryption.key, "…")
            if "Wrong encryption key" in text:
                raise EncryptionError(f"the warehouse {path} is encrypted with a different key") from None
            if "is not encrypted" in text:
                raise EncryptionError(
                    f"the warehouse {path} is not encrypted but a key is configured: run"
                    " `cdm warehouse encrypt` to encrypt it, or unset the key"
                ) from None
            raise type(exc)(text) from None
        conn.execute(f"USE {alias}")
    except BaseException:
        conn.close()
        raise
    return conn


REWRITE_ALIAS = "cdm_rewrite"


def rewrite_warehouse(
    path: Path, *, settings: Mapping[str, str | int], encryption: Encryption | None,
    target_encryption: Encryption | None, lock_wait: float = COMMAND_LOCK_WAIT,
    on_copied: Callable[[duckdb.DuckDBPyConnection, str], None] | None = None,
) -> tuple[int, int]:
    """Copy the warehouse into a fresh file and put that in its place; returns the sizes before and after.

    The one way the file is rewritten: an erasure's compaction (only live rows survive, so deleted
    bytes leave the disk), ``cdm warehouse encrypt`` / ``decrypt`` / ``rotate-key`` (the fresh file
    is written under ``target_encryption``). Everything happens while this process holds the old
    file's lock, including the rename: a process waiting for the lock then opens the new file
    (``connect`` checks the inode), never the old one, so no committed write is lost.
    The copy is checked table by table (row counts); then ``on_copied(conn, alias)`` may change it
    (e.g. clear the pending-compaction marker); the rename comes last, so
    any failure leaves the old file as it was.
    """
    fresh = path.with_name(path.name + ".rewriting")
    for leftover in (fresh, _wal(fresh)):
        leftover.unlink(missing_ok=True)
    before = path.stat().st_size
    with open_warehouse(path, settings=settings, lock_wait=lock_wait, encryption=encryption) as conn:
        (source,) = conn.execute("SELECT current_database()").fetchone()
        conn.execute("CHECKPOINT")
        options = ""
        if target_encryption is not None:
            enable_crypto(conn, target_encryption)
            options = f" (ENCRYPTION_KEY {quote_literal(target_encryption.key)})"
        attached = False
        try:
            conn.execute(f"ATTACH {quote_literal(str(fresh))} AS {REWRITE_ALIAS}{options}")
            attached = True
            conn.execute(f"COPY FROM DATABASE {quote_ident(source)} TO {REWRITE_ALIAS}")
            _check_copy(conn, source, REWRITE_ALIAS)
            if on_copied is not None:
                on_copied(conn, REWRITE_ALIAS)
            conn.execute(f"DETACH {REWRITE_ALIAS}")  # checkpoints the fresh file: no WAL left
            attached = False
        except BaseException as exc:
            if attached:
                conn.execute(f"DETACH {REWRITE_ALIAS}")
            for leftover in (fresh, _wal(fresh)):
                leftover.unlink(missing_ok=True)
            if target_encryption is not None and isinstance(exc, duckdb.Error):
                raise type(exc)(str(exc).replace(target_encryption.key, "…")) from None
            raise
        if _wal(path).exists() and _wal(path).stat().st_size:
            conn.execute("CHECKPOINT")
        _replace(fresh, path)
    return before, path.stat().st_size


def _check_copy(conn: duckdb.DuckDBPyConnection, source: str, target: str) -> None:
    """Every table of ``source`` is in ``target`` with as many rows (views and macros copy as DDL)."""
    tables = conn.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = $db"
        " AND NOT temporary",
        {"db": source},
    ).fetchall()
    copied = {
        (schema, table) for schema, table in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = $db", {"db": target}
        ).fetchall()
    }
    for schema, table in tables:
        if (schema, table) not in copied:
            raise RuntimeError(f"the rewritten warehouse lacks {schema}.{table}")
        counts = conn.execute(
            f"SELECT (SELECT count(*) FROM {quote_ident(source)}.{qualified(schema, table)}),"
            f" (SELECT count(*) FROM {quote_ident(target)}.{qualified(schema, table)})"
        ).fetchone()
        if counts[0] != counts[1]:
            raise RuntimeError(f"the rewritten warehouse has {counts[1]} rows in {schema}.{table}, not {counts[0]}")


def replace_warehouse_file(path: Path, fresh: Path, *, lock_wait: float = COMMAND_LOCK_WAIT) -> None:
    """Put a complete, closed DuckDB file (``fresh``, e.g. a restored backup) in place of the warehouse.

    Takes the old file's lock the way DuckDB does (an exclusive POSIX lock on the file), so no run
    or command is writing, and renames while holding it; a process that waited opens the new file.
    Works when the old file cannot be opened (corrupt, another key). The old file's WAL belongs to
    the old file: it is removed before the rename, never replayed into the new one.
    """
    if _wal(fresh).exists():
        raise RuntimeError(f"{fresh} still has a WAL: close (checkpoint) it before swapping it in")
    if not path.exists():
        _replace(fresh, path)
        return
    import fcntl

    fd = os.open(path, os.O_RDWR)
    try:
        delays = _backoff(lock_wait)
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                delay = next(delays, None)
                if delay is None:
                    raise WarehouseLocked(path) from None
                time.sleep(delay)
        _wal(path).unlink(missing_ok=True)
        _replace(fresh, path)
    finally:
        os.close(fd)  # releases the lock, on the old (now unlinked) file


def _replace(fresh: Path, path: Path) -> None:
    os.replace(fresh, path)
    fsync_folder(path.parent)  # a crash must not bring the old file back


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


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
