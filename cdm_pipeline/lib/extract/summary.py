"""Counts of what the raw layer holds for a range of partitions (for run summaries)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import SUPPRESSED_ROWS, raw_table, rejects_table
from cdm_pipeline.lib.warehouse import table_exists


@dataclass(frozen=True)
class SourceCounts:
    source: str
    rows: int
    rejects: int


def count_raw_rows(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, first: dt.date, last: dt.date
) -> list[SourceCounts]:
    """Rows and rejected lines per source between two partition dates (inclusive)."""
    counts = []
    for source in config.sources:
        numbers = []
        for table in (raw_table(source.name), rejects_table(source.name)):
            if not table_exists(conn, table):
                numbers.append(0)
                continue
            numbers.append(
                conn.execute(
                    f"SELECT count(*) FROM {table}"
                    " WHERE _partition_date BETWEEN ? AND ?",
                    [first, last],
                ).fetchone()[0]
            )
        counts.append(SourceCounts(source.name, numbers[0], numbers[1]))
    return counts


def count_suppressed_rows(conn: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date) -> int:
    """Rows of erased people the extract dropped between two partition dates (inclusive)."""
    if not table_exists(conn, SUPPRESSED_ROWS):
        return 0
    return int(conn.execute(
        f"SELECT coalesce(sum(suppressed_rows), 0) FROM {SUPPRESSED_ROWS}"
        " WHERE partition_date BETWEEN ? AND ?", [first, last],
    ).fetchone()[0])
