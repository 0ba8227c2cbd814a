"""``governance.audit_log``: one row per privacy action, identity override or audience export.

Rows say what happened, when, under which request and to how many rows; never a personal value.
"""

from __future__ import annotations

import duckdb

AUDIT_LOG = "governance.audit_log"


def ensure_audit_log(conn: duckdb.DuckDBPyConnection) -> None:
    """Create ``governance.audit_log`` when missing."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS governance")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {AUDIT_LOG} (occurred_at TIMESTAMPTZ NOT NULL,
            action VARCHAR NOT NULL, request_id VARCHAR, rows_affected BIGINT, detail VARCHAR)"""
    )
