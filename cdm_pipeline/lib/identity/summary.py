"""Figures of an identity-resolution run, for the CLI summary (counts only, never values)."""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.catalog import RESOLUTION_RUNS
from cdm_pipeline.lib.warehouse import table_exists


def identity_run_figures(conn: duckdb.DuckDBPyConnection, run_id: str) -> dict | None:
    """The ``identity.resolution_runs`` row of a Dagster run, or None when it did not resolve."""
    if not table_exists(conn, RESOLUTION_RUNS):
        return None
    cursor = conn.execute(f"SELECT * FROM {RESOLUTION_RUNS} WHERE run_id = ?", [run_id])
    columns = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    return dict(zip(columns, rows[-1], strict=True)) if rows else None
