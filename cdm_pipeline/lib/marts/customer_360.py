"""``marts.customer_360``: one row per golden customer with everything the business knows of them.

Golden attributes, the systems that know the customer, orders and revenue, e-mail engagement
over the last 30 and 90 days, web activity, and consent. Windows end on the marts' as-of date
(the latest landed day) and include it.

Consent is the most recent statement from any source: a contact record's ``email_opt_in`` /
``do_not_sell`` (at the record's update time) or an e-mail event that opts in or out
(unsubscribe, spam complaint, re-subscribe). When two statements share a time, the opt-out wins.
A statement whose time is implausible (after the day its record was landed, or after the as-of
day for events; staging flags such contact records ``future_*``) has no time to trust: it ranks
below every dated statement, so a mistyped 2099 never outvotes a real unsubscribe.
"""

from __future__ import annotations

import datetime as dt

import duckdb

from cdm_pipeline.lib.catalog import CUSTOMER_360, GOLDEN, JOURNEY_EVENTS, XREF, staging_table
from cdm_pipeline.lib.marts.inputs import build_table
from cdm_pipeline.lib.staging.rules import FUTURE_TIME_FLAGS, future_time_sql

_EVENTS, _CUSTOMER_360 = build_table(JOURNEY_EVENTS), build_table(CUSTOMER_360)
_CONTACTS = staging_table("contacts")

OPT_OUT_EVENTS = ("unsubscribe", "unsubscribed", "spam_complaint", "complaint", "opt_out")
OPT_IN_EVENTS = ("subscribe", "subscribed", "resubscribe", "opt_in")
# A soft bounce is a full mailbox; only a permanent failure makes an address undeliverable.
HARD_BOUNCE_TYPES = ("hard", "permanent", "hardbounce", "hard_bounce")

_CUSTOMER_360_SQL = f"""
CREATE OR REPLACE TABLE {_CUSTOMER_360} AS
WITH events AS (
    SELECT * FROM {_EVENTS}
), stated_contacts AS (
    SELECT x.customer_id, c.email_opt_in, c.do_not_sell, c._partition_date,
        coalesce(c.updated_at, c.created_at, c._partition_date::TIMESTAMPTZ) AS stated_at,
        -- Dated: no future time flagged by staging, nor one staged before that rule.
        NOT list_has_any(c.quality_flags, $future_flags)
            AND {future_time_sql("coalesce(c.updated_at, c.created_at)", "c._partition_date")} IS NOT TRUE
            AS dated
    FROM {_CONTACTS} c
    JOIN {XREF} x USING (source_name, source_record_id)
    WHERE c.email_opt_in IS NOT NULL OR c.do_not_sell IS NOT NULL
), contact_versions AS (
    -- An undated statement counts as of its landing day, ranked below every dated one.
    SELECT customer_id, email_opt_in, do_not_sell, dated,
        CASE WHEN dated THEN stated_at ELSE _partition_date::TIMESTAMPTZ END AS stated_at
    FROM stated_contacts
), email_statements AS (
    SELECT customer_id, email_opt_in, stated_at, dated FROM contact_versions WHERE email_opt_in IS NOT NULL
    UNION ALL
    SELECT customer_id, list_contains($opt_in_events, event_type), occurred_at,
        {future_time_sql("occurred_at", "$as_of")} IS NOT TRUE
    FROM events
    WHERE event_kind = 'email'
      AND (list_contains($opt_in_events, event_type) OR list_contains($opt_out_events, event_type))
), email_consent AS (
    -- Latest dated statement wins; at the same instant an opt-out beats an opt-in.
    SELECT customer_id,
        arg_max(email_opt_in, [dated::BIGINT, epoch_us(stated_at), (NOT email_opt_in)::BIGINT]) AS email_opt_in,
        max(stated_at) FILTER (WHERE dated) AS email_opt_in_at
    FROM email_statements GROUP BY customer_id
), sale_consent AS (
    SELECT customer_id,
        arg_max(do_not_sell, [dated::BIGINT, epoch_us(stated_at), do_not_sell::BIGINT]) AS do_not_sell
    FROM contact_versions WHERE do_not_sell IS NOT NULL GROUP BY customer_id
), orders AS (
    SELECT customer_id,
        count(*) AS order_count,
        sum(revenue) AS revenue,
        sum(revenue) / nullif(count(revenue), 0) AS average_order_value,
        min(event_date) AS first_order_date,
        max(event_date) AS last_order_date
    FROM events WHERE event_kind = 'order' AND order_counted
    GROUP BY customer_id
), email AS (
    SELECT customer_id,
        count(*) FILTER (WHERE event_type = 'sent' AND event_date > $as_of - 30) AS emails_sent_30d,
        count(*) FILTER (WHERE event_type = 'open' AND event_date > $as_of - 30) AS emails_opened_30d,
        count(*) FILTER (WHERE event_type = 'click' AND event_date > $as_of - 30) AS emails_clicked_30d,
        count(*) FILTER (WHERE event_type = 'sent' AND event_date > $as_of - 90) AS emails_sent_90d,
        count(*) FILTER (WHERE event_type = 'open' AND event_date > $as_of - 90) AS emails_opened_90d,
        count(*) FILTER (WHERE event_type = 'click' AND event_date > $as_of - 90) AS emails_clicked_90d,
        bool_or(list_contains($opt_out_events, event_type)) AS ever_opted_out,
        max(occurred_at) FILTER (
            WHERE event_type = 'bounce' AND list_contains($hard_bounces, lower(bounce_type))
        ) AS last_hard_bounce_at,
        max(occurred_at) FILTER (WHERE event_type IN ('open', 'click')) AS last_engaged_at
    FROM events WHERE event_kind = 'email'
    GROUP BY customer_id
), web AS (
    SELECT customer_id,
        count(DISTINCT session_id) AS web_sessions,
        count(DISTINCT session_id) FILTER (WHERE event_date > $as_of - 30) AS web_sessions_30d,
        count(*) FILTER (WHERE event_type = 'page_view') AS page_views,
        max(occurred_at) AS last_visit_at
    FROM events WHERE event_kind = 'web'
    GROUP BY customer_id
), carts AS (
    -- A session that reached the cart or checkout and ended without a purchase.
    SELECT customer_id, count(*) AS abandoned_carts
    FROM (
        SELECT customer_id, session_id
        FROM events WHERE event_kind = 'web'
        GROUP BY customer_id, session_id
        HAVING bool_or(funnel_stage IN ('cart', 'checkout')) AND NOT bool_or(funnel_stage = 'purchase')
    )
    GROUP BY customer_id
), seen AS (
    SELECT customer_id, min(occurred_at) AS first_event_at, max(occurred_at) AS last_event_at
    FROM events GROUP BY customer_id
)
SELECT
    g.customer_id, g.first_name, g.last_name, g.email, g.phone, g.birth_date,
    g.address_line1, g.address_line2, g.city, g.postcode, g.region, g.country, g.company,
    g.source_systems, g.source_names, g.record_count AS source_records,
    least(g.created_at, s.first_event_at, g.first_seen::TIMESTAMPTZ) AS first_seen_at,
    greatest(g.updated_at, s.last_event_at, g.last_seen::TIMESTAMPTZ) AS last_seen_at,
    coalesce(o.order_count, 0) AS order_count,
    coalesce(o.revenue, 0)::DOUBLE AS revenue,
    o.average_order_value::DOUBLE AS average_order_value,
    o.first_order_date, o.last_order_date,
    $as_of - o.last_order_date AS days_since_last_order,
    coalesce(e.emails_sent_30d, 0) AS emails_sent_30d,
    coalesce(e.emails_opened_30d, 0) AS emails_opened_30d,
    coalesce(e.emails_clicked_30d, 0) AS emails_clicked_30d,
    coalesce(e.emails_sent_90d, 0) AS emails_sent_90d,
    coalesce(e.emails_opened_90d, 0) AS emails_opened_90d,
    coalesce(e.emails_clicked_90d, 0) AS emails_clicked_90d,
    coalesce(e.ever_opted_out AND ec.email_opt_in IS NOT TRUE, false) AS email_unsubscribed,
    coalesce(e.last_hard_bounce_at > coalesce(e.last_engaged_at, '-infinity'::TIMESTAMPTZ), false) AS email_bounced,
    coalesce(w.web_sessions, 0) AS web_sessions,
    coalesce(w.web_sessions_30d, 0) AS web_sessions_30d,
    coalesce(w.page_views, 0) AS page_views,
    w.last_visit_at,
    coalesce(ca.abandoned_carts, 0) AS abandoned_carts,
    ec.email_opt_in, ec.email_opt_in_at,
    sc.do_not_sell,
    g.email IS NOT NULL AND coalesce(ec.email_opt_in, false)
        AND NOT coalesce(e.last_hard_bounce_at > coalesce(e.last_engaged_at, '-infinity'::TIMESTAMPTZ), false)
        AS email_contactable,
    $as_of::DATE AS as_of_date
FROM {GOLDEN} g
LEFT JOIN seen s USING (customer_id)
LEFT JOIN orders o USING (customer_id)
LEFT JOIN email e USING (customer_id)
LEFT JOIN web w USING (customer_id)
LEFT JOIN carts ca USING (customer_id)
LEFT JOIN email_consent ec USING (customer_id)
LEFT JOIN sale_consent sc USING (customer_id)
"""


def build_customer_360(conn: duckdb.DuckDBPyConnection, as_of: dt.date) -> int:
    """Replace ``marts.customer_360``; returns its row count (one per golden customer)."""
    conn.execute(
        _CUSTOMER_360_SQL,
        {
            "as_of": as_of,
            "future_flags": list(FUTURE_TIME_FLAGS),
            "opt_in_events": list(OPT_IN_EVENTS),
            "opt_out_events": list(OPT_OUT_EVENTS),
            "hard_bounces": list(HARD_BOUNCE_TYPES),
        },
    )
    return conn.execute(f"SELECT count(*) FROM {_CUSTOMER_360}").fetchall()[0][0]
