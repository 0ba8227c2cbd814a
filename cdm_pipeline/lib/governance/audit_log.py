"""``governance.audit_log``: one row per privacy action, identity override or audience export.

Rows say what happened, when, under which request and to how many rows; never a personal value.
The table is declared in the catalogue (``catalog.AUDIT_LOG``).
"""

from __future__ import annotations

import datetime as dt

import duckdb

from cdm_pipeline.lib.catalog import AUDIT_LOG, ensure


def ensure_audit_log(conn: duckdb.DuckDBPyConnection) -> None:
    """Create ``governance.audit_log`` when missing (every writer of an audit row calls this first)."""
    ensure(conn, AUDIT_LOG)


def record_audit(
    conn: duckdb.DuckDBPyConnection, action: str, request_id: str | None, rows_affected: int, detail: str
) -> None:
    """Append one audit row, now (``detail``: counts, names and paths, never a personal value)."""
    ensure_audit_log(conn)
    conn.execute(
        f"INSERT INTO {AUDIT_LOG} (occurred_at, action, request_id, rows_affected, detail) VALUES (?, ?, ?, ?, ?)",
        [dt.datetime.now(dt.timezone.utc), action, request_id, rows_affected, detail],
    )
