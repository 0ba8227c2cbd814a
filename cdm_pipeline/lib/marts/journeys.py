"""``marts.customer_journeys``: one row per customer with events, summarising their path to purchase.

First and last touch (channel, campaign), touches per channel, days from the first touch to the
first counted order, and the furthest funnel stage reached: ``repeat_customer`` (two or more
orders), ``customer``, ``checkout``, ``cart``, ``visit`` or ``known`` (only e-mail or CRM activity).
"""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.catalog import JOURNEY_EVENTS, JOURNEYS
from cdm_pipeline.lib.marts.inputs import build_table

_EVENTS, _JOURNEYS = build_table(JOURNEY_EVENTS), build_table(JOURNEYS)

_CUSTOMER_JOURNEYS_SQL = f"""
CREATE OR REPLACE TABLE {_JOURNEYS} AS
WITH touches AS (
    SELECT customer_id,
        arg_min(channel, touch_sequence) AS first_touch_channel,
        arg_min(campaign, touch_sequence) AS first_touch_campaign,
        min(occurred_at) AS first_touch_at,
        arg_max(channel, touch_sequence) AS last_touch_channel,
        arg_max(campaign, touch_sequence) AS last_touch_campaign,
        max(occurred_at) AS last_touch_at,
        count(*) AS touches
    FROM {_EVENTS} WHERE is_touch
    GROUP BY customer_id
), per_channel AS (
    SELECT customer_id, map_from_entries(list((channel, n) ORDER BY channel)) AS touches_by_channel
    FROM (SELECT customer_id, channel, count(*) AS n FROM {_EVENTS} WHERE is_touch GROUP BY ALL)
    GROUP BY customer_id
), activity AS (
    SELECT customer_id,
        count(*) AS events,
        count(DISTINCT session_id) AS sessions,
        count(*) FILTER (WHERE event_kind = 'order' AND order_counted) AS orders,
        min(occurred_at) FILTER (WHERE event_kind = 'order' AND order_counted) AS first_purchase_at,
        bool_or(funnel_stage = 'checkout') AS reached_checkout,
        bool_or(funnel_stage = 'cart') AS reached_cart,
        bool_or(funnel_stage = 'visit') AS reached_visit
    FROM {_EVENTS}
    GROUP BY customer_id
)
SELECT a.customer_id,
    t.first_touch_at, t.first_touch_channel, t.first_touch_campaign,
    t.last_touch_at, t.last_touch_channel, t.last_touch_campaign,
    coalesce(t.touches, 0) AS touches,
    coalesce(c.touches_by_channel, MAP {{}}::MAP(VARCHAR, BIGINT)) AS touches_by_channel,
    a.sessions, a.events, a.orders, a.first_purchase_at,
    -- Only a purchase that follows a touch has a touch-to-purchase time.
    CASE WHEN a.first_purchase_at >= t.first_touch_at
        THEN date_diff('day', t.first_touch_at, a.first_purchase_at) END AS days_to_first_purchase,
    CASE
        WHEN a.orders >= 2 THEN 'repeat_customer'
        WHEN a.orders = 1 THEN 'customer'
        WHEN a.reached_checkout THEN 'checkout'
        WHEN a.reached_cart THEN 'cart'
        WHEN a.reached_visit THEN 'visit'
        ELSE 'known'
    END AS funnel_stage
FROM activity a
LEFT JOIN touches t USING (customer_id)
LEFT JOIN per_channel c USING (customer_id)
"""

FUNNEL_STAGES = ("known", "visit", "cart", "checkout", "customer", "repeat_customer")


def build_customer_journeys(conn: duckdb.DuckDBPyConnection) -> int:
    """Replace ``marts.customer_journeys`` from the journey events; returns its row count."""
    conn.execute(_CUSTOMER_JOURNEYS_SQL)
    return conn.execute(f"SELECT count(*) FROM {_JOURNEYS}").fetchall()[0][0]
