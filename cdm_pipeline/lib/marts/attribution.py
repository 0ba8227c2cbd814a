"""``marts.order_attribution``: one row per counted order, attribution model and touch in its window.

A touch (a web session or an e-mail click, ``journey_events.py``) is credited to an order when
it happened in the ``attribution_lookback_days`` before the order, at or before its time. The
models share the credit out so that weights sum to 1 per order and model:

* ``first_touch``: all of it to the earliest touch in the window;
* ``last_touch``: all of it to the latest;
* ``linear``: equal shares;
* ``position_based``: 40% first, 40% last, 20% shared by the touches between (with two touches
  50/50, with one 100%).

An order with no touch in its window (a shop or phone order from someone never seen online)
gets one row per model with weight 1 and channel ``no_touch``, so revenue totals per model always
equal total revenue. Every touch of a path has a row under every model (weight 0 where the model
gives it nothing), so one query compares a touch's credit across models.
"""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.catalog import JOURNEY_EVENTS, ORDER_ATTRIBUTION
from cdm_pipeline.lib.marts.inputs import build_table

_EVENTS, _ATTRIBUTION = build_table(JOURNEY_EVENTS), build_table(ORDER_ATTRIBUTION)
MODELS = ("first_touch", "last_touch", "linear", "position_based")
NO_TOUCH_CHANNEL = "no_touch"

_ORDER_ATTRIBUTION_SQL = f"""
CREATE OR REPLACE TABLE {_ATTRIBUTION} AS
WITH orders AS (
    SELECT customer_id, source_name, order_id, occurred_at AS ordered_at, revenue
    FROM {_EVENTS}
    WHERE event_kind = 'order' AND order_counted
), touches AS (
    SELECT customer_id, event_id, occurred_at, channel, campaign
    FROM {_EVENTS} WHERE is_touch
), paths AS (
    SELECT o.*, t.event_id AS touch_event_id, t.occurred_at AS touch_at, t.channel, t.campaign,
        row_number() OVER path AS touch_position,
        count(t.event_id) OVER (PARTITION BY o.source_name, o.order_id) AS path_touches
    FROM orders o
    LEFT JOIN touches t ON t.customer_id = o.customer_id
        AND t.occurred_at <= o.ordered_at
        AND t.occurred_at > o.ordered_at - to_days($lookback_days)
    WINDOW path AS (PARTITION BY o.source_name, o.order_id ORDER BY t.occurred_at, t.event_id)
), models AS (
    SELECT unnest($models) AS model
), weighted AS (
    SELECT p.*, m.model,
        CASE
            WHEN p.path_touches = 0 THEN 1.0
            WHEN m.model = 'first_touch' THEN (p.touch_position = 1)::INTEGER::DOUBLE
            WHEN m.model = 'last_touch' THEN (p.touch_position = p.path_touches)::INTEGER::DOUBLE
            WHEN m.model = 'linear' THEN 1.0 / p.path_touches
            WHEN p.path_touches = 1 THEN 1.0
            WHEN p.path_touches = 2 THEN 0.5
            WHEN p.touch_position IN (1, p.path_touches) THEN 0.4
            ELSE 0.2 / (p.path_touches - 2)
        END AS weight
    FROM paths p CROSS JOIN models m
)
SELECT source_name AS order_source, order_id, customer_id, ordered_at, model,
    touch_event_id, touch_at,
    CASE WHEN path_touches > 0 THEN touch_position END AS touch_position,
    path_touches,
    coalesce(channel, $no_touch) AS channel, campaign,
    weight, revenue * weight AS attributed_revenue
FROM weighted
"""


def build_order_attribution(conn: duckdb.DuckDBPyConnection, lookback_days: int) -> int:
    """Replace ``marts.order_attribution``; returns the number of orders attributed."""
    conn.execute(
        _ORDER_ATTRIBUTION_SQL,
        {"lookback_days": lookback_days, "models": list(MODELS), "no_touch": NO_TOUCH_CHANNEL},
    )
    return conn.execute(
        f"SELECT count(DISTINCT (order_source, order_id)) FROM {_ATTRIBUTION}"
    ).fetchall()[0][0]
