"""``governance.extract_log``: one row per partition an extract step loaded, with its run.

The raw tables say which partition a row belongs to, not which run loaded it; the run report
needs "what did last night's run land", so every load appends its counts here (in the same
transaction as the rows it counts).
"""

from __future__ import annotations

import datetime as dt

import duckdb

from cdm_pipeline.lib.catalog import EXTRACT_LOG, ensure


def record_extract(
    conn: duckdb.DuckDBPyConnection,
    run_id: str | None,
    source_name: str,
    partition_date: dt.date,
    files: int,
    rows_loaded: int,
    rejected_lines: int,
    suppressed_rows: int,
    loaded_at: dt.datetime,
) -> None:
    """Append one partition's load (a load outside a Dagster run has no run id)."""
    ensure(conn, EXTRACT_LOG)
    conn.execute(
        f"INSERT INTO {EXTRACT_LOG} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, source_name, partition_date, files, rows_loaded, rejected_lines, suppressed_rows, loaded_at],
    )
