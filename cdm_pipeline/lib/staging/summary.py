"""Counts of staged and quarantined rows for a range of partitions (for run summaries)."""

from __future__ import annotations

import datetime as dt

import duckdb

from cdm_pipeline.lib.catalog import quarantine_table, staging_table
from cdm_pipeline.lib.staging.columns import KINDS
from cdm_pipeline.lib.warehouse import table_exists


def count_staged_rows(
    conn: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date
) -> list[tuple[str, int, int]]:
    """(kind, staged rows, quarantined rows) between two partition dates, for existing tables."""
    out = []
    for kind in KINDS:
        if not table_exists(conn, staging_table(kind)):
            continue
        staged, held = (
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE _partition_date BETWEEN ? AND ?", [first, last]
            ).fetchone()[0]
            if table_exists(conn, table) else 0
            for table in (staging_table(kind), quarantine_table(kind))
        )
        out.append((kind, staged, held))
    return out


def count_quarantined_by_reason(
    conn: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date
) -> list[tuple[str, str, int]]:
    """(source, reason, rows) held back between two partition dates, largest first per source."""
    out = []
    for kind in KINDS:
        if not table_exists(conn, quarantine_table(kind)):
            continue
        out += conn.execute(
            f"""SELECT source_name, quarantine_reason, count(*) FROM {quarantine_table(kind)}
            WHERE _partition_date BETWEEN ? AND ? GROUP BY ALL""",
            [first, last],
        ).fetchall()
    return sorted(out, key=lambda row: (row[0], -row[2], row[1]))
