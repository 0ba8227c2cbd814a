"""Telling a full disk apart from other write errors, and saying which disk it is.

A full disk surfaces as DuckDB's "Could not write file "...": No space left on device" (or a
short write, "Could not write all bytes"), or as an ``OSError`` with ``ENOSPC``. The transaction
is gone by then, so the caller's ``ROLLBACK`` fails too ("cannot rollback - no transaction is
active") and that second error is the one raised, with the first only as its context. The
functions here look through the whole chain, so the full disk is what gets reported, and a step
can refuse to retry what no retry can fix.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

_OUT_OF_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_OUT_OF_SPACE_TEXTS = ("no space left on device", "disk quota exceeded", "could not write all bytes")
# DuckDB's "Could not write file" / "could not truncate file" end with the OS's reason. Counted as
# a full disk unless that reason is another one: no permission is not no space.
_WRITE_FAILED = re.compile(r"could not (?:write|truncate)", re.IGNORECASE)
_OTHER_REASONS = (
    "permission denied", "read-only file system", "bad file descriptor", "input/output error", "is a directory",
    "operation not permitted", "no such file or directory",
)
_QUOTED_PATH = re.compile(r'"(/[^"]+)"')


def is_out_of_space_text(text: str) -> bool:
    """Whether an error message says the disk (or the user's quota on it) is full."""
    lowered = text.casefold()
    if any(marker in lowered for marker in _OUT_OF_SPACE_TEXTS):
        return True
    return bool(_WRITE_FAILED.search(text)) and not any(reason in lowered for reason in _OTHER_REASONS)


def _chain(exc: BaseException) -> Iterable[BaseException]:
    """``exc`` and every exception it was raised from or while handling, nearest first."""
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


def out_of_space_error(exc: BaseException) -> BaseException | None:
    """The out-of-space error in ``exc``'s chain (``exc`` itself, its cause or context), if any."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in _OUT_OF_SPACE_ERRNOS:
            return error
        if is_out_of_space_text(str(error)):
            return error
    return None


def full_disk_message(folder: Path | None) -> str:
    """One plain line: which disk is full and how much room it has now.

    "Now": DuckDB gives back what the failed transaction had written (its WAL), so the free space
    measured after the failure can look ample; the total says how small the disk is.
    """
    if folder is None:
        return "a disk the step writes to is full (no space left on device): make room there, then run again"
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None:
        room = "free space unknown"
    else:
        usage = shutil.disk_usage(existing)
        room = f"{usage.free:,} bytes free of {usage.total:,} now"
    return f"the disk holding {folder} is full (a write found no space left; {room}): make room there, then run again"


def folder_named_in(error: BaseException | str) -> Path | None:
    """The folder of the file an error names (an ``OSError``'s filename or DuckDB's quoted path)."""
    if isinstance(error, OSError) and error.filename:
        return Path(str(error.filename)).parent
    match = _QUOTED_PATH.search(str(error))
    return Path(match.group(1)).parent if match else None


def describe_full_disk(exc: BaseException, fallback_folder: Path | None) -> str | None:
    """``full_disk_message`` for the disk of the file ``exc`` failed to write (or ``fallback_folder``),
    or ``None`` when ``exc`` is not (and does not hide) an out-of-space error."""
    error = out_of_space_error(exc)
    if error is None:
        return None
    return full_disk_message(folder_named_in(error) or fallback_folder)


def describe_full_disk_in_texts(texts: Iterable[str]) -> str | None:
    """``describe_full_disk`` for errors known only by their messages (a run's event log)."""
    for text in texts:
        if is_out_of_space_text(text):
            return full_disk_message(folder_named_in(text))
    return None


def why_warehouse_failed(exc: BaseException, warehouse: Path) -> str:
    """One line on why the warehouse could not be read or written: a full disk named as such, a
    lock by the lock's own message, anything else by class and first line (values masked)."""
    from cdm_pipeline.lib.warehouse import WarehouseLocked, safe_error_message

    full_disk = describe_full_disk(exc, warehouse.parent)
    if full_disk is not None:
        return full_disk
    if isinstance(exc, WarehouseLocked):
        return str(exc)
    return f"{exc.__class__.__name__}: {safe_error_message(exc)}"
