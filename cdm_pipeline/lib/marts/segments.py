"""``marts.customer_segments``: one row per customer with RFM scores, lifecycle, engagement, custom segments.

RFM looks at counted orders in the last ``rfm_window_days``. Each of recency, frequency and
monetary value is scored 1-5 by quintile among the customers who ordered in the window: a
customer's score is ``1 + floor(5 * (rank - 1) / n)`` with equal values sharing the lowest rank,
so equal behaviour always gets an equal score (``ntile`` would split ties arbitrarily). Recency
is inverted: the most recent buyers score 5. The named segment comes from a fixed grid of
recency against the frequency-monetary score ``(F + M + 1) // 2`` (``RFM_GRID``), the usual
reading of the standard segment table, which has overlaps and gaps when applied literally.

Lifecycle stages count days back from the as-of date (``marts.lifecycle``): ``prospect`` (never
ordered), ``new`` (first order under ``new_days`` ago), ``active`` (last order under
``active_days`` ago), ``at_risk``, ``lapsed``, then ``churned``.

Engagement tiers: ``highly_engaged`` (clicked an e-mail or visited in the last 30 days),
``engaged`` (opened or clicked an e-mail, or visited, in the last 90), ``disengaged`` (mailed in
the last 90 days without a reaction, or a visitor not seen for 90 days) and ``inactive``.

Custom segments are the config's ``segments``: conditions compiled by ``conditions.py`` into SQL
over known columns with bound values, never pasted text.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import CUSTOMER_360, JOURNEY_EVENTS, SEGMENTS
from cdm_pipeline.lib.marts.conditions import compile_condition
from cdm_pipeline.lib.marts.inputs import build_table

_EVENTS, _CUSTOMER_360, _SEGMENTS = build_table(JOURNEY_EVENTS), build_table(CUSTOMER_360), build_table(SEGMENTS)
_GRID = "_marts_rfm_grid"

# Rows: recency score 5 (most recent) to 1; columns: FM score 1 to 5.
RFM_GRID: dict[int, tuple[str, str, str, str, str]] = {
    5: ("New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"),
    4: ("Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Champions"),
    3: ("About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"),
    2: ("Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose Them"),
    1: ("Lost", "Lost", "At Risk", "Can't Lose Them", "Can't Lose Them"),
}

def _segments_sql(custom_segments: str) -> str:
    """The build of the segments; ``custom_segments`` is the list expression of ``_custom_segments_sql``."""
    return f"""
CREATE OR REPLACE TABLE {_SEGMENTS} AS
WITH window_orders AS (
    SELECT customer_id,
        $as_of - max(event_date) AS recency_days,
        count(*) AS frequency,
        coalesce(sum(revenue), 0)::DOUBLE AS monetary
    FROM {_EVENTS}
    WHERE event_kind = 'order' AND order_counted AND event_date > $as_of - $rfm_window_days
    GROUP BY customer_id
), scored AS (
    SELECT *,
        1 + floor(5 * (rank() OVER (ORDER BY recency_days DESC) - 1) / count(*) OVER ())::INTEGER AS recency_score,
        1 + floor(5 * (rank() OVER (ORDER BY frequency) - 1) / count(*) OVER ())::INTEGER AS frequency_score,
        1 + floor(5 * (rank() OVER (ORDER BY monetary) - 1) / count(*) OVER ())::INTEGER AS monetary_score
    FROM window_orders
), rfm AS (
    SELECT s.*, s.recency_score::VARCHAR || s.frequency_score || s.monetary_score AS rfm_score,
        g.segment AS rfm_segment
    FROM scored s
    JOIN {_GRID} g ON g.r = s.recency_score AND g.fm = (s.frequency_score + s.monetary_score + 1) // 2
), base AS (
    SELECT c.*,
        r.recency_days, r.frequency, r.monetary, r.recency_score, r.frequency_score,
        r.monetary_score, r.rfm_score, r.rfm_segment,
        CASE
            WHEN c.order_count = 0 THEN 'prospect'
            WHEN $as_of - c.first_order_date < $new_days THEN 'new'
            WHEN c.days_since_last_order < $active_days THEN 'active'
            WHEN c.days_since_last_order < $at_risk_days THEN 'at_risk'
            WHEN c.days_since_last_order < $lapsed_days THEN 'lapsed'
            ELSE 'churned'
        END AS lifecycle_stage,
        CASE
            WHEN c.emails_clicked_30d > 0 OR c.web_sessions_30d > 0 THEN 'highly_engaged'
            WHEN c.emails_opened_90d > 0 OR c.emails_clicked_90d > 0
                OR c.last_visit_at >= ($as_of - 89)::TIMESTAMPTZ THEN 'engaged'
            WHEN c.emails_sent_90d > 0 OR c.last_visit_at IS NOT NULL THEN 'disengaged'
            ELSE 'inactive'
        END AS engagement_tier
    FROM {_CUSTOMER_360} c
    LEFT JOIN rfm r USING (customer_id)
)
SELECT customer_id, $as_of::DATE AS as_of_date,
    recency_days, frequency, monetary, recency_score, frequency_score, monetary_score,
    rfm_score, rfm_segment, lifecycle_stage, engagement_tier,
    {custom_segments} AS custom_segments
FROM base
"""


def build_customer_segments(conn: duckdb.DuckDBPyConnection, config: CdmConfig, as_of: dt.date) -> int:
    """Replace ``marts.customer_segments`` from customer_360 and the journey events."""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {_GRID} (r INTEGER, fm INTEGER, segment VARCHAR)")
    conn.executemany(
        f"INSERT INTO {_GRID} VALUES (?, ?, ?)",
        [(r, fm, name) for r, row in RFM_GRID.items() for fm, name in enumerate(row, start=1)],
    )
    custom, params = _custom_segments_sql(config)
    lifecycle = config.marts.lifecycle
    conn.execute(
        _segments_sql(custom),
        {
            **params,
            "as_of": as_of,
            "rfm_window_days": config.marts.rfm_window_days,
            "new_days": lifecycle.new_days,
            "active_days": lifecycle.active_days,
            "at_risk_days": lifecycle.at_risk_days,
            "lapsed_days": lifecycle.lapsed_days,
        },
    )
    return conn.execute(f"SELECT count(*) FROM {_SEGMENTS}").fetchall()[0][0]


def _custom_segments_sql(config: CdmConfig) -> tuple[str, dict[str, object]]:
    """A list expression naming the custom segments each row is in, and its bound values."""
    if not config.segments:
        return "[]::VARCHAR[]", {}
    parts, params = [], {}
    for index, segment in enumerate(config.segments):
        compiled = compile_condition(segment.where, param_prefix=f"seg{index}")
        params.update(compiled.params)
        params[f"seg{index}_name"] = segment.name
        parts.append(f"CASE WHEN {compiled.sql} THEN $seg{index}_name END")
    return f"list_filter([{', '.join(parts)}], lambda s: s IS NOT NULL)", params
