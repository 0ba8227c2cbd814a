"""The suppression ledger: every suppression-list entry, also kept in a file outside the warehouse.

The suppression list lives in the warehouse, so a restored copy of the warehouse holds only the
entries it had when it was copied: the people erased since would come back, and the next extract
would load them again. Every entry ``suppress`` adds is therefore also appended here first
(written and fsync'd before the erasure commits: an erasure that then fails is re-applied by a
restore, never lost), and ``cdm restore`` re-applies the whole ledger to the restored copy.

One JSON object per line: the entry's kind, keyed hash, request id and time, and the fingerprint
of the key it was hashed with. No personal value. The file is owner-only (0600) and sits beside
the warehouse file (``suppression_ledger.jsonl`` in its folder), so the warehouse's working copies
(``.restoring``, ``.compacting``) share it; backups copy it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.lib.file_modes import PRIVATE_FILE_MODE, fsync_folder

LEDGER_NAME = "suppression_ledger.jsonl"
_FIELDS = ("kind", "value_hash", "request_id", "added_at", "key_fingerprint")


class LedgerError(RuntimeError):
    """The ledger cannot be read (the message names the file and line, never a value)."""


@dataclass(frozen=True)
class LedgerEntry:
    kind: str
    value_hash: str
    request_id: str | None
    added_at: str  # ISO 8601, UTC
    key_fingerprint: str


def ledger_path(warehouse: Path) -> Path:
    """The ledger of the warehouse file ``warehouse``."""
    return warehouse.parent / LEDGER_NAME


def connection_ledger(conn: duckdb.DuckDBPyConnection) -> Path | None:
    """The ledger of the database ``conn`` is on (None for an in-memory database)."""
    (path,) = conn.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return ledger_path(Path(path)) if path and path != ":memory:" else None


def read_ledger(path: Path) -> list[LedgerEntry]:
    """Every entry of the ledger, oldest first (none when the file does not exist).

    A last line without its newline is a write that died before its fsync (the erasure it
    belonged to did not commit either) and is left out.

    Raises:
        LedgerError: a complete line that is not an entry.
    """
    if not path.exists():
        return []
    entries = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline: torn
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            entries.append(LedgerEntry(**{name: record.get(name) for name in _FIELDS}))
        except (ValueError, TypeError, AttributeError):
            raise LedgerError(f"{path}: line {number} is not a suppression entry") from None
        if not (entries[-1].kind and entries[-1].value_hash and entries[-1].key_fingerprint):
            raise LedgerError(f"{path}: line {number} lacks its kind, hash or key fingerprint")
    return entries


def append_ledger(path: Path, entries: list[LedgerEntry]) -> None:
    """Append ``entries`` durably: written, fsync'd (and a new file's folder too), mode 0600."""
    if not entries:
        return
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # whatever the umask, and a file someone loosened
        text = "".join(json.dumps(asdict(entry), sort_keys=True) + "\n" for entry in entries)
        if not created and _ends_torn(path):
            text = "\n" + text  # start after a torn line, never inside it
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_folder(path.parent)


def _ends_torn(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"
