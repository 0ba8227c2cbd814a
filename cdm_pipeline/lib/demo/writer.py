"""Landing files on disk: one file per (family, day, chunk), plus the streamed ground truth.

Layout (``{chunk}`` is the 4-digit chunk number, so every chunk adds one file per day folder):

* ``crm/contacts/{date}/contacts_{chunk}.csv`` and ``crm/orders/{date}/orders_{chunk}.csv``
* ``email/subscribers/{date}/subscribers_{chunk}.jsonl`` and ``email/events/{date}/events_{chunk}.jsonl``
* ``web/events/{date}/events_{chunk}.parquet``

A file is written for every day even when it has no rows (CSV: header only; JSONL: empty;
Parquet: schema only), so a loader sees every partition of the period. Text files use ``\\n``
line ends and UTF-8 (apart from the deliberately broken lines), so output is byte-identical
across runs and platforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import corrupt

GROUND_TRUTH_SCHEMA = pa.schema([
    ("source_name", pa.string()), ("source_record_id", pa.string()), ("person_id", pa.string()),
])


@dataclass(frozen=True)
class Family:
    """One kind of landing file."""

    source: str  # key in DemoSummary.rows
    folder: str  # relative to the output directory
    stem: str
    suffix: str


CONTACTS = Family("crm_contacts", "crm/contacts", "contacts", "csv")
ORDERS = Family("crm_orders", "crm/orders", "orders", "csv")
SUBSCRIBERS = Family("email_subscribers", "email/subscribers", "subscribers", "jsonl")
EMAIL_EVENTS = Family("email_events", "email/events", "events", "jsonl")
WEB_EVENTS = Family("web_events", "web/events", "events", "parquet")
FAMILIES = (CONTACTS, ORDERS, SUBSCRIBERS, EMAIL_EVENTS, WEB_EVENTS)
OWNED = ("crm", "email", "web")  # top-level folders this generator owns (and deletes)


def file_path(out_dir: Path, family: Family, date: str, chunk: int) -> Path:
    return out_dir / family.folder / date / f"{family.stem}_{chunk:04d}.{family.suffix}"


def by_day(day: np.ndarray, key: np.ndarray, days: int) -> list[np.ndarray]:
    """Row indices per partition, each sorted by ``key`` (ties keep generation order)."""
    order = np.lexsort((key, day))
    bounds = np.searchsorted(day[order], np.arange(days + 1))
    return [order[bounds[d]:bounds[d + 1]] for d in range(days)]


def _frame(columns: dict[str, np.ndarray], rows: np.ndarray, null_empty: bool) -> pd.DataFrame:
    data = {}
    for name, values in columns.items():
        series = pd.Series(np.asarray(values)[rows].astype(str), dtype="str")
        data[name] = series.mask(series == "") if null_empty else series
    return pd.DataFrame(data, columns=list(columns))


def write_csv(
    path: Path,
    columns: dict[str, np.ndarray],
    rows: np.ndarray,
    broken: np.ndarray | None = None,
) -> int:
    """CSV with header (minimal quoting); rows flagged in ``broken`` are replaced by bad lines."""
    text = _frame(columns, rows, null_empty=False).to_csv(index=False, lineterminator="\n")
    data = text.encode("utf-8")
    bad = np.flatnonzero(broken[rows]) if broken is not None else np.zeros(0, dtype=np.int64)
    if bad.size:
        # One record per line (no field holds a line break), so record i is line i + 1.
        lines = data.split(b"\n")
        names = list(columns)
        for i in bad.tolist():
            fields = [str(columns[c][rows[i]]) for c in names]
            lines[i + 1] = corrupt.broken_csv_line(
                fields, int(broken[rows[i]]), names.index("Street"), names.index("FirstName")
            )
        data = b"\n".join(lines)
    path.write_bytes(data)
    return int(rows.size)


def write_jsonl(
    path: Path,
    columns: dict[str, np.ndarray],
    rows: np.ndarray,
    broken: np.ndarray | None = None,
) -> int:
    """One JSON object per line, empty values as null; ``broken`` rows are cut off mid-line."""
    if rows.size == 0:
        path.write_bytes(b"")
        return 0
    text = _frame(columns, rows, null_empty=True).to_json(orient="records", lines=True, force_ascii=False)
    text = text.replace("\\/", "/")  # pandas escapes '/', which JSON allows but nobody writes
    bad = np.flatnonzero(broken[rows]) if broken is not None else np.zeros(0, dtype=np.int64)
    if bad.size:
        lines = text.split("\n")
        for i in bad.tolist():
            lines[i] = corrupt.truncated_json(lines[i])
        text = "\n".join(lines)
    path.write_bytes(text.encode("utf-8"))
    return int(rows.size)


def write_parquet(path: Path, table: pa.Table, rows: np.ndarray) -> int:
    pq.write_table(table.take(pa.array(rows, pa.int64())), path, compression="zstd")
    return int(rows.size)


class GroundTruthWriter:
    """Streams ``(source_name, source_record_id, person_id)`` rows chunk by chunk.

    Written under a temporary name and renamed when complete, so an interrupted run never
    leaves a truncated ground truth that looks valid.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._writer = pq.ParquetWriter(self._tmp, GROUND_TRUTH_SCHEMA, compression="zstd")
        self.rows = 0

    def write(self, source: str, record_ids: np.ndarray, person_ids: np.ndarray) -> None:
        n = int(record_ids.size)
        if n == 0:
            return
        table = pa.table(
            {
                "source_name": pa.array(np.full(n, source)),
                "source_record_id": pa.array(np.asarray(record_ids).astype(str)),
                "person_id": pa.array(np.asarray(person_ids).astype(str)),
            },
            schema=GROUND_TRUTH_SCHEMA,
        )
        self._writer.write_table(table)
        self.rows += n

    def close(self, ok: bool = True) -> None:
        self._writer.close()
        if ok:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)
