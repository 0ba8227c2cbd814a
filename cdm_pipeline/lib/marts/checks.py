"""The marts' checks, run on the published tables right after a build.

Plain results (pass or fail, the counts that decided it, one line saying why); the Dagster layer
(``defs/marts/assets.py``) reports them as asset checks. Counts only, never a customer's values.
"""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.catalog import CUSTOMER_360, GOLDEN, ORDER_ATTRIBUTION, SEGMENTS
from cdm_pipeline.lib.check_results import CheckResult

ONE_ROW_CHECK = "one_row_per_customer"
WEIGHTS_CHECK = "weights_sum_to_one"

# An order's weights under one model may differ from 1 by rounding, no more.
WEIGHT_TOLERANCE = 1e-9


def check_marts(conn: duckdb.DuckDBPyConnection) -> list[CheckResult]:
    """Every golden customer has one row in customer_360 and in customer_segments, and attribution
    weights sum to 1 per order and model."""
    golden, c360, c360_distinct, segments, segments_distinct, bad_orders = conn.execute(
        f"""SELECT
            (SELECT count(*) FROM {GOLDEN}),
            (SELECT count(*) FROM {CUSTOMER_360}),
            (SELECT count(DISTINCT customer_id) FROM {CUSTOMER_360}),
            (SELECT count(*) FROM {SEGMENTS}),
            (SELECT count(DISTINCT customer_id) FROM {SEGMENTS}),
            (SELECT count(*) FROM (SELECT order_source, order_id, model FROM {ORDER_ATTRIBUTION}
                GROUP BY ALL HAVING abs(sum(weight) - 1) > $tolerance))""",
        {"tolerance": WEIGHT_TOLERANCE},
    ).fetchall()[0]
    one_row = golden == c360 == c360_distinct == segments == segments_distinct
    return [
        CheckResult(
            ONE_ROW_CHECK, one_row,
            {"golden_customers": golden, "customer_360_rows": c360, "customer_segments_rows": segments},
            f"{golden} golden customers, one row each"
            if one_row
            else f"{golden} golden customers: {c360} rows ({c360_distinct} customers) in {CUSTOMER_360.full_name},"
            f" {segments} rows ({segments_distinct} customers) in {SEGMENTS.full_name}",
        ),
        CheckResult(
            WEIGHTS_CHECK, bad_orders == 0,
            {"order_models_not_summing_to_one": bad_orders},
            "every order's weights sum to 1 under every model"
            if bad_orders == 0
            else f"{bad_orders} order and model pairs whose weights do not sum to 1",
        ),
    ]
