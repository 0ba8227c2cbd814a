"""``governance.quality_results``: every quality result ever evaluated, one row per expectation.

Append-only, so "how did email validity move over the last 30 nights" is one query. Rows carry
counts and short observed values only — never the unexpected values themselves.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb

from cdm_pipeline.lib.catalog import QUALITY_RESULTS, ensure


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


def append_results(
    conn: duckdb.DuckDBPyConnection,
    run_id: str,
    rows: list[QualityRow],
    partition_start: dt.date | None,
    partition_end: dt.date | None,
    evaluated_at: dt.datetime,
) -> None:
    ensure(conn, QUALITY_RESULTS)
    if not rows:
        return
    conn.executemany(
        f"INSERT INTO {QUALITY_RESULTS} VALUES ({', '.join('?' for _ in QUALITY_RESULTS.columns)})",
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
    FROM {QUALITY_RESULTS} GROUP BY table_name
)
SELECT q.table_name, q.expectation, any_value(q.severity), bool_and(q.success),
       sum(q.unexpected_count), sum(q.element_count), min(q.partition_start),
       max(q.partition_end), max(q.evaluated_at), q.run_id
FROM {QUALITY_RESULTS} AS q JOIN latest USING (table_name, run_id)
GROUP BY q.table_name, q.expectation, q.run_id
ORDER BY q.table_name, any_value(q.severity), q.expectation
"""
