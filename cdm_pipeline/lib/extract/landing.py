"""Which landed files a partition reads, and whether they held still while it read them.

A landing folder is written by other systems (an SFTP drop, a sync job), so its names and
links are not trusted: a link that resolves outside the folder is refused rather than read
(it could pull any file the pipeline's user can read into the warehouse), and a name holding
glob characters (``a[1].csv``) is passed to DuckDB escaped, as DuckDB expands every path it
is given as a pattern.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from cdm_pipeline.config import SourceConfig

OUTSIDE_LANDING = "OUTSIDE LANDING FOLDER"  # the error_type of a refused file's reject row
OUTSIDE_LANDING_REASON = "the file resolves to a path outside the landing folder: not read"


@dataclass(frozen=True)
class LandedFiles:
    """A partition's files: those to read, and those refused (paths relative to the landing folder)."""

    files: list[Path]
    refused: list[str]


def landed_files(source: SourceConfig, landing_dir: Path, partition_date: dt.date) -> LandedFiles:
    """The files of one partition in a stable order (the load order decides row order).

    Only the configured path is a pattern: the landing folder's own path is escaped, so a folder
    named ``exports[2026]`` matches itself.
    """
    pattern = source.glob_for(Path(glob.escape(str(landing_dir))), partition_date)
    root = landing_dir.resolve()
    files: list[Path] = []
    refused: list[str] = []
    for name in sorted(glob.glob(pattern, recursive=True)):
        path = Path(name)
        if not path.is_file():
            continue
        if path.resolve().is_relative_to(root):
            files.append(path)
        else:
            refused.append(shown_path(path, landing_dir))
    return LandedFiles(files, refused)


def shown_path(path: Path, landing_dir: Path) -> str:
    """A file's path as shown to people: relative to the landing folder."""
    return str(path.relative_to(landing_dir)) if path.is_relative_to(landing_dir) else str(path)


def duckdb_path(path: Path | str) -> str:
    """``path`` as DuckDB's file readers take it: they expand ``*``, ``?`` and ``[...]``."""
    return glob.escape(str(path))


@dataclass(frozen=True)
class FileState:
    """What says a file is the same file with the same bytes: checked before and after reading."""

    size: int
    mtime_ns: int
    inode: int
    device: int
    target: str  # where the path resolves to: a link swapped while the file was read changes it


def file_state(path: Path) -> FileState | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return FileState(stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, str(path.resolve()))


def file_states(paths: list[Path]) -> dict[Path, FileState | None]:
    return {path: file_state(path) for path in paths}


def changed_files(before: dict[Path, FileState | None]) -> list[Path]:
    """The files whose size, modification time, identity or link target differ from ``before``."""
    return [path for path, state in before.items() if file_state(path) != state]
