"""Which daily partitions have landed files, and a fingerprint of each partition's files.

The landing sensor asks for a run when a partition's fingerprint is new or has changed: a file
that arrives late, or is replaced, starts one more run; the same files never start a second one.
The fingerprint covers every dated source's files of the day (relative path, size, modification
time), so it changes exactly when something the run would read changes.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import re
from pathlib import Path

from cdm_pipeline.config import DATE_PLACEHOLDER, CdmConfig

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def landed_partitions(config: CdmConfig) -> dict[dt.date, str]:
    """``{partition date: fingerprint}`` for every date some dated source has files for."""
    files: dict[dt.date, list[tuple[str, int, int]]] = {}
    for source in config.sources:
        if source.is_snapshot:
            continue  # read again for every partition: its arrival says nothing about a day
        before, _, after = source.path.partition(DATE_PLACEHOLDER)
        pattern = str(config.landing_dir / (before + "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]" + after))
        prefix = str(config.landing_dir / before)
        for name in glob.glob(pattern, recursive=True):
            path = Path(name)
            if not path.is_file():
                continue
            match = _DATE.match(name[len(prefix):].lstrip("/"))
            try:
                day = dt.date.fromisoformat(match.group(0)) if match else None
            except ValueError:
                day = None  # 2026-13-45: not a partition
            if day is None:
                continue
            stat = path.stat()
            files.setdefault(day, []).append(
                (path.relative_to(config.landing_dir).as_posix(), stat.st_size, stat.st_mtime_ns)
            )
    return {day: _fingerprint(entries) for day, entries in sorted(files.items())}


def _fingerprint(entries: list[tuple[str, int, int]]) -> str:
    digest = hashlib.sha256()
    for relative, size, mtime in sorted(entries):
        digest.update(f"{relative}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()
