"""``governance.extract_log``: one row per partition an extract step loaded, with its run.

The raw tables say which partition a row belongs to, not which run loaded it; the run report
needs "what did last night's run land", so every load appends its counts here (in the same
transaction as the rows it counts).
"""

from __future__ import annotations

import datetime as dt

import duckdb

EXTRACT_LOG = "governance.extract_log"


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
    conn.execute("CREATE SCHEMA IF NOT EXISTS governance")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {EXTRACT_LOG} (run_id VARCHAR, source_name VARCHAR NOT NULL,
        partition_date DATE NOT NULL, files INTEGER NOT NULL, rows_loaded BIGINT NOT NULL,
        rejected_lines BIGINT NOT NULL, suppressed_rows BIGINT NOT NULL, loaded_at TIMESTAMPTZ NOT NULL)"""
    )
    conn.execute(
        f"INSERT INTO {EXTRACT_LOG} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [run_id, source_name, partition_date, files, rows_loaded, rejected_lines, suppressed_rows, loaded_at],
    )
