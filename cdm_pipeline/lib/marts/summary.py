"""Figures of the marts and the audience files they fed, for the CLI summary (counts only)."""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.catalog import CUSTOMER_360, JOURNEY_EVENTS, ORDER_ATTRIBUTION, SEGMENTS
from cdm_pipeline.lib.warehouse import table_exists


def marts_figures(conn: duckdb.DuckDBPyConnection) -> dict | None:
    """Row counts, as-of date and segment sizes of the marts, or None when they were never built."""
    if not table_exists(conn, SEGMENTS):
        return None
    figures = conn.execute(
        f"""SELECT
            (SELECT max(as_of_date) FROM {SEGMENTS}) AS as_of,
            (SELECT count(*) FROM {CUSTOMER_360}) AS customers,
            (SELECT count(*) FROM {JOURNEY_EVENTS}) AS events,
            (SELECT count(DISTINCT session_id) FROM {JOURNEY_EVENTS}) AS sessions,
            (SELECT count(DISTINCT (order_source, order_id)) FROM {ORDER_ATTRIBUTION}) AS orders,
            (SELECT count(*) FROM {CUSTOMER_360} WHERE email_contactable) AS contactable"""
    ).fetchall()[0]
    result = dict(zip(("as_of", "customers", "events", "sessions", "orders", "contactable"), figures, strict=True))
    result["lifecycle"] = conn.execute(
        f"SELECT lifecycle_stage, count(*) FROM {SEGMENTS} GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    return result
