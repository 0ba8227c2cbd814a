"""Owner-only permissions for the files that hold personal data, whatever the umask.

Two layers, because either alone leaves a gap:

* :func:`private_umask` at every process entry point (``cdm``'s ``main`` and the Dagster code
  location, whose step, webserver and daemon processes inherit it): everything the pipeline
  creates — the warehouse and its WAL, DuckDB spill files, run storage, reports, the model, backups
  — is born 0600 / 0700, including files written by libraries (DuckDB, SQLite, Dagster) that
  take no mode argument.
* :func:`private_file` / :func:`private_dir` / :func:`tighten` where a known personal-data file or
  folder is written: a file created 0644 by an earlier version (or by a process started with
  another umask) is tightened the next time it is written, not only files created from now on.

A folder that already existed is tightened only when it is the folder asked for, never its
parents: those may be a home folder or ``/tmp``. Nothing here imports the rest of the package.
"""

from __future__ import annotations

import os
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700
# Group and other get nothing; the owner's bits come from the creating call (0666 / 0777).
PRIVATE_UMASK = 0o077


def private_umask() -> int:
    """Make every file this process (and its children) creates owner-only; returns the old umask.

    Bits the old umask already cleared stay cleared (a stricter umask is kept).
    """
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def private_dir(path: Path | str) -> Path:
    """Create ``path`` (and missing parents) owner-only, and tighten ``path`` itself if it existed.

    For the pipeline's own folders (exports, access requests, backups, run storage); for a folder a
    user named on the command line use :func:`create_private_dirs`, which changes nothing existing.
    """
    path = Path(path)
    if not create_private_dirs(path):
        os.chmod(path, PRIVATE_DIR_MODE)
    return path


def create_private_dirs(path: Path | str) -> list[Path]:
    """``mkdir -p`` with every folder it creates owner-only; existing folders keep their mode.

    Returns the folders created, outermost first.
    """
    path = Path(path)
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    missing.reverse()
    for folder in missing:
        # exist_ok: another process may create it between the check and here.
        folder.mkdir(mode=PRIVATE_DIR_MODE, exist_ok=True)
        os.chmod(folder, PRIVATE_DIR_MODE)  # mkdir's mode is filtered by the umask
    return missing


def private_file(path: Path | str) -> Path:
    """Make an existing file owner-only (0600); a missing file is left missing."""
    path = Path(path)
    try:
        os.chmod(path, PRIVATE_FILE_MODE)
    except FileNotFoundError:
        pass
    return path


def tighten(path: Path | str) -> None:
    """A DuckDB file and its WAL owner-only (0600), those that exist; call after connecting."""
    path = Path(path)
    private_file(path)
    private_file(path.with_name(path.name + ".wal"))


def private_write_text(path: Path | str, text: str) -> None:
    """Write a new file created 0600 from the start (not chmod-ed after, so never readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
    finally:
        if fd >= 0:
            os.close(fd)


def fsync_folder(path: Path | str) -> None:
    """Make a file's creation or rename in the folder ``path`` durable: until the folder itself is
    synced, a crash can bring back the old name (or lose the new file)."""
    folder = os.open(path, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
