"""``governance.quality_results``: every quality result ever evaluated, one row per expectation.

Append-only, so "how did email validity move over the last 30 nights" is one query. Rows carry
counts and short observed values only — never the unexpected values themselves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdm_pipeline.lib.warehouse import qualified, quote_ident

SCHEMA, TABLE = "governance", "quality_results"
COLUMNS = {
    "run_id": "VARCHAR NOT NULL",
    "table_name": "VARCHAR NOT NULL",
    "expectation": "VARCHAR NOT NULL",
    "expectation_type": "VARCHAR NOT NULL",
    "column_name": "VARCHAR",
    "severity": "VARCHAR NOT NULL",
    "success": "BOOLEAN NOT NULL",
    "unexpected_count": "BIGINT",
    "element_count": "BIGINT",
    "unexpected_percent": "DOUBLE",
    "observed_value": "VARCHAR",
    "partition_start": "DATE",
    "partition_end": "DATE",
    "evaluated_at": "TIMESTAMPTZ NOT NULL",
}


@dataclass(frozen=True)
class QualityRow:
    table_name: str
    expectation: str
    expectation_type: str
    column_name: str | None
    severity: str
    success: bool
    unexpected_count: int | None
    element_count: int | None
    unexpected_percent: float | None
    observed_value: str | None


def ensure_table(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(SCHEMA)}")
    body = ", ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS.items())
    conn.execute(f"CREATE TABLE IF NOT EXISTS {qualified(SCHEMA, TABLE)} ({body})")


def append_results(
    conn: duckdb.DuckDBPyConnection,
    run_id: str,
    rows: list[QualityRow],
    partition_start: dt.date | None,
    partition_end: dt.date | None,
    evaluated_at: dt.datetime,
) -> None:
    ensure_table(conn)
    if not rows:
        return
    conn.executemany(
        f"INSERT INTO {qualified(SCHEMA, TABLE)} VALUES ({', '.join('?' for _ in COLUMNS)})",
        [
            [run_id, r.table_name, r.expectation, r.expectation_type, r.column_name, r.severity,
             r.success, r.unexpected_count, r.element_count, r.unexpected_percent, r.observed_value,
             partition_start, partition_end, evaluated_at]
            for r in rows
        ],
    )


# The latest run per table, one line per expectation summed over the partitions it validated.
LATEST_PER_TABLE = f"""
WITH latest AS (
    SELECT table_name, arg_max(run_id, evaluated_at) AS run_id
    FROM {qualified(SCHEMA, TABLE)} GROUP BY table_name
)
SELECT q.table_name, q.expectation, any_value(q.severity), bool_and(q.success),
       sum(q.unexpected_count), sum(q.element_count), min(q.partition_start),
       max(q.partition_end), max(q.evaluated_at), q.run_id
FROM {qualified(SCHEMA, TABLE)} AS q JOIN latest USING (table_name, run_id)
GROUP BY q.table_name, q.expectation, q.run_id
ORDER BY q.table_name, any_value(q.severity), q.expectation
"""
