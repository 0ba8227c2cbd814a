"""``marts.customer_journey_events``: every order, e-mail event and web event of a known customer.

Each event is attributed through the identity graph, most specific key first:

* orders by ``contact_id`` and e-mail events by ``subscriber_id`` (record ids of a contacts
  source: ``contacts_source``, else the contacts sources of the same system);
* web events by login (``user_id``), then by browser (``client_id``): a browser joins a customer
  once it is seen with a login or a typed address, and then *all* its events do, including
  those before the login;
* failing those, by an e-mail address that belongs to exactly one customer.

Web sessions are cut at ``session_timeout_minutes`` of inactivity on one browser (not at
midnight, and not by the source's own session id). A session is one marketing touch, its channel
read from the landing event's UTM tags or referrer; an e-mail click is a touch unless an e-mail
session on the site starts right after it (the same touch seen twice).

The table is rebuilt from all of staging every night, so an event that lands days late, or a
browser stitched to a person long after its first visit, is in the next night's table.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.catalog import JOURNEY_EVENTS, MARTS, XREF, Table, staging_table
from cdm_pipeline.lib.identity.records import CLIENT_PREFIX, USER_PREFIX
from cdm_pipeline.lib.marts.inputs import EXCLUDED_STATUSES, LINKS, RATES, build_table
from cdm_pipeline.lib.warehouse import quote_ident

_EVENTS = build_table(JOURNEY_EVENTS)
_CONTACTS, _ORDERS, _EMAIL_EVENTS, _WEB_EVENTS = (
    staging_table(kind) for kind in ("contacts", "orders", "email_events", "web_events")
)

# GA4 event names by funnel stage; other web events are on no stage.
FUNNEL_STAGES = {
    "visit": ("page_view", "session_start", "view_item", "view_item_list", "search"),
    "cart": ("add_to_cart", "view_cart", "remove_from_cart"),
    "checkout": ("begin_checkout", "add_shipping_info", "add_payment_info"),
    "purchase": ("purchase",),
}
SEARCH_ENGINES = r"(^|\.)(google|bing|yahoo|duckduckgo|baidu|yandex|ecosia|ask|aol|naver)\."
SOCIAL_SITES = (
    r"(^|\.)(facebook|instagram|t|twitter|x|linkedin|tiktok|pinterest|reddit|youtube|snapchat"
    r"|threads)\.(com|co|net)"
)

# The channel of a session from its landing event: UTM medium first, then the referrer's host.
_CHANNEL = """CASE
    WHEN medium IN ('cpc', 'ppc', 'paidsearch', 'paid_search', 'sem') THEN 'paid_search'
    WHEN medium IN ('paid_social', 'paidsocial', 'social_paid', 'paid-social') THEN 'paid_social'
    WHEN medium IN ('social', 'social-network', 'social_network', 'social-media', 'sm') THEN 'organic_social'
    WHEN medium = 'organic' THEN 'organic_search'
    WHEN medium IN ('email', 'e-mail', 'newsletter') THEN 'email'
    WHEN medium IN ('affiliate', 'affiliates') THEN 'affiliate'
    WHEN medium IN ('display', 'banner', 'cpm', 'cpv', 'video') THEN 'display'
    WHEN medium = 'referral' THEN 'referral'
    WHEN medium IN ('(none)', 'none') OR source = '(direct)' THEN 'direct'
    WHEN medium IS NOT NULL THEN 'other'
    WHEN referrer_host IS NULL OR referrer_host = page_host THEN 'direct'
    WHEN regexp_matches(referrer_host, $search_engines) THEN 'organic_search'
    WHEN regexp_matches(referrer_host, $social_sites) THEN 'organic_social'
    ELSE 'referral'
END"""

_FUNNEL = """CASE
    WHEN list_contains($visit, event_name) THEN 'visit'
    WHEN list_contains($cart, event_name) THEN 'cart'
    WHEN list_contains($checkout, event_name) THEN 'checkout'
    WHEN list_contains($purchase, event_name) THEN 'purchase'
END"""


def _url_host(column: str) -> str:
    """The lower-case host of the URL in ``column``, NULL when it has none."""
    return f"nullif(lower(regexp_extract({quote_ident(column)}, '^[a-zA-Z][a-zA-Z0-9+.-]*://([^/:?#]+)', 1)), '')"


def _latest_versions(table: Table) -> str:
    """Row ids of each record's newest landed version (staging keeps one per record and day).

    Grouping the keys alone is far cheaper than a window over the full rows.
    """
    return f"SELECT arg_max(rowid, _partition_date) FROM {table} GROUP BY source_name, source_record_id"


_JOURNEY_EVENTS_SQL = f"""
CREATE OR REPLACE TABLE {_EVENTS} AS
WITH xref AS (
    SELECT source_name, source_record_id, customer_id FROM {XREF}
), customer_by_email AS (
    -- An address speaks for a customer only when no other customer has held it.
    SELECT c.email, min(x.customer_id) AS customer_id
    FROM {_CONTACTS} c JOIN xref x USING (source_name, source_record_id)
    WHERE c.email IS NOT NULL AND NOT list_contains(c.quality_flags, 'invalid_email')
    GROUP BY c.email
    HAVING count(DISTINCT x.customer_id) = 1
), linked_records AS (
    -- Record ids an orders or e-mail events source holds, per contacts source it refers to.
    SELECT l.activity_source, x.source_record_id, x.customer_id
    FROM {LINKS} l JOIN xref x ON x.source_name = l.contacts_source
    QUALIFY row_number() OVER (PARTITION BY l.activity_source, x.source_record_id ORDER BY l.preference) = 1
), orders AS (
    -- The newest landed version of an order speaks for it (a status can change later).
    SELECT *, lower(status) AS status_key FROM {_ORDERS}
    WHERE rowid IN ({_latest_versions(_ORDERS)})
), order_events AS (
    SELECT 'order' AS event_kind, o.source_name, o.source_record_id,
        'order' AS event_type, o.order_date AS occurred_at,
        coalesce(lx.customer_id, e.customer_id) AS customer_id,
        CASE WHEN lx.customer_id IS NOT NULL THEN 'contact_id'
             WHEN e.customer_id IS NOT NULL THEN 'email' END AS attributed_by,
        lower(o.channel) AS channel, NULL AS source, NULL AS medium, NULL AS campaign,
        NULL::VARCHAR AS session_id, NULL::VARCHAR AS browser_key, false AS is_session_start,
        'purchase' AS funnel_stage,
        o.source_record_id AS order_id, o.status_key AS order_status,
        o.amount, o.currency,
        o.status_key IS NULL OR o.status_key NOT IN (SELECT status FROM {EXCLUDED_STATUSES}) AS order_counted,
        CASE WHEN $convert THEN o.amount * r.rate ELSE o.amount END AS order_value,
        NULL::VARCHAR AS page_url, o._partition_date
    FROM orders o
    LEFT JOIN linked_records lx ON lx.activity_source = o.source_name AND lx.source_record_id = o.contact_id
    LEFT JOIN customer_by_email e ON e.email = o.email
    LEFT JOIN {RATES} r ON r.currency = upper(o.currency)
), email_raw AS (
    SELECT * FROM {_EMAIL_EVENTS} WHERE rowid IN ({_latest_versions(_EMAIL_EVENTS)})
), email_events AS (
    SELECT 'email' AS event_kind, m.source_name, m.source_record_id,
        lower(m.event_type) AS event_type, m.occurred_at,
        coalesce(lx.customer_id, e.customer_id) AS customer_id,
        CASE WHEN lx.customer_id IS NOT NULL THEN 'subscriber_id'
             WHEN e.customer_id IS NOT NULL THEN 'email' END AS attributed_by,
        'email' AS channel, m.source_name AS source, 'email' AS medium,
        coalesce(m.campaign_name, m.campaign_id) AS campaign,
        NULL::VARCHAR AS session_id, NULL::VARCHAR AS browser_key, false AS is_session_start,
        NULL AS funnel_stage, NULL AS order_id, NULL AS order_status, NULL::DECIMAL(18, 2) AS amount,
        NULL AS currency, NULL::BOOLEAN AS order_counted, NULL::DOUBLE AS order_value,
        m.url AS page_url, m._partition_date, m.bounce_type
    FROM email_raw m
    LEFT JOIN linked_records lx ON lx.activity_source = m.source_name AND lx.source_record_id = m.subscriber_id
    LEFT JOIN customer_by_email e ON e.email = m.email
), web_raw AS (
    SELECT * FROM {_WEB_EVENTS}
    WHERE (client_id IS NOT NULL OR user_id IS NOT NULL) AND rowid IN ({_latest_versions(_WEB_EVENTS)})
), web_attributed AS MATERIALIZED (
    SELECT w.*,
        coalesce(u.customer_id, c.customer_id, e.customer_id) AS customer_id,
        CASE WHEN u.customer_id IS NOT NULL THEN 'user_id' WHEN c.customer_id IS NOT NULL THEN 'client_id'
             WHEN e.customer_id IS NOT NULL THEN 'email' END AS attributed_by,
        -- Sessions belong to a browser; a login seen without a browser id stands in for one.
        coalesce('client:' || w.client_id, 'user:' || w.user_id) AS browser_key
    FROM web_raw w
    LEFT JOIN xref c ON c.source_name = w.source_name AND c.source_record_id = $client_prefix || w.client_id
    LEFT JOIN xref u ON u.source_name = w.source_name AND u.source_record_id = $user_prefix || w.user_id
    LEFT JOIN customer_by_email e ON e.email = w.email AND NOT list_contains(w.quality_flags, 'invalid_email')
), web_gaps AS (
    SELECT *,
        lag(occurred_at) OVER (PARTITION BY browser_key ORDER BY occurred_at, source_record_id) AS previous_at
    FROM web_attributed
    WHERE customer_id IS NOT NULL
), web_numbered AS (
    SELECT *,
        sum(CASE WHEN previous_at IS NULL OR occurred_at - previous_at > to_minutes($timeout_minutes)
            THEN 1 ELSE 0 END) OVER (PARTITION BY browser_key ORDER BY occurred_at, source_record_id
            ROWS UNBOUNDED PRECEDING) AS session_number
    FROM web_gaps
), web_sessions AS (
    SELECT *,
        row_number() OVER session = 1 AS is_session_start,
        first_value(lower(utm_medium)) OVER session AS medium,
        first_value(lower(utm_source)) OVER session AS source,
        first_value(utm_campaign) OVER session AS campaign,
        first_value({_url_host('page_referrer')}) OVER session AS referrer_host,
        first_value({_url_host('page_url')}) OVER session AS page_host
    FROM web_numbered
    WINDOW session AS (PARTITION BY browser_key, session_number ORDER BY occurred_at, source_record_id)
), web_events AS (
    SELECT 'web' AS event_kind, source_name, source_record_id, event_name AS event_type, occurred_at,
        customer_id, attributed_by,
        {_CHANNEL} AS channel, source, medium, campaign,
        browser_key || '#' || session_number AS session_id, browser_key, is_session_start,
        {_FUNNEL} AS funnel_stage,
        CASE WHEN event_name = 'purchase' THEN transaction_id END AS order_id,
        NULL AS order_status, NULL::DECIMAL(18, 2) AS amount, currency,
        NULL::BOOLEAN AS order_counted, NULL::DOUBLE AS order_value,
        page_url, _partition_date, NULL AS bounce_type
    FROM web_sessions
), email_sessions AS (
    SELECT customer_id, occurred_at FROM web_events WHERE is_session_start AND channel = 'email'
), echoed_clicks AS (
    -- E-mail clicks followed by an e-mail session on the site: the session is the touch.
    SELECT DISTINCT c.source_name, c.source_record_id
    FROM email_events c JOIN email_sessions s ON s.customer_id = c.customer_id
        AND s.occurred_at >= c.occurred_at
        AND s.occurred_at <= c.occurred_at + to_minutes($timeout_minutes)
    WHERE c.event_type = 'click'
), all_events AS (
    SELECT *, NULL AS bounce_type FROM order_events WHERE customer_id IS NOT NULL
    UNION ALL BY NAME SELECT * FROM email_events WHERE customer_id IS NOT NULL
    UNION ALL BY NAME SELECT * FROM web_events
), touched AS (
    SELECT a.*,
        a.event_kind || ':' || a.source_name || ':' || a.source_record_id AS event_id,
        CASE
            WHEN a.event_kind = 'web' THEN a.is_session_start
            WHEN a.event_kind = 'email' AND a.event_type = 'click' THEN e.source_record_id IS NULL
            ELSE false
        END AS is_touch
    FROM all_events a
    LEFT JOIN echoed_clicks e ON a.event_kind = 'email'
        AND e.source_name = a.source_name AND e.source_record_id = a.source_record_id
)
SELECT
    customer_id, event_id, event_kind, event_type, occurred_at,
    (occurred_at AT TIME ZONE $timezone)::DATE AS event_date,
    channel, source, medium, campaign, session_id, is_touch,
    -- Both sequences share one window (one sort of the customer's events).
    CASE WHEN is_touch THEN sum(is_touch::INTEGER) OVER journey END AS touch_sequence,
    row_number() OVER journey AS event_sequence,
    funnel_stage, order_id, order_status, order_counted, amount, currency,
    CASE WHEN order_counted THEN order_value END AS revenue,
    bounce_type, page_url, attributed_by, source_name, source_record_id, browser_key,
    _partition_date
FROM touched
WINDOW journey AS (PARTITION BY customer_id ORDER BY occurred_at, event_id ROWS UNBOUNDED PRECEDING)
"""

@dataclass(frozen=True)
class JourneyEventCounts:
    events: int
    by_kind: dict[str, int]
    touches: int
    sessions: int
    unattributed_orders: int
    unattributed_email_events: int
    unattributed_web_events: int
    orders_without_rate: int


def build_journey_events(conn: duckdb.DuckDBPyConnection, config: CdmConfig) -> JourneyEventCounts:
    """Replace ``marts.customer_journey_events`` (config lookups must be registered first)."""
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(MARTS)}")
    conn.execute(
        _JOURNEY_EVENTS_SQL,
        {
            "convert": config.marts.currency is not None,
            "client_prefix": CLIENT_PREFIX,
            "user_prefix": USER_PREFIX,
            "timeout_minutes": config.marts.session_timeout_minutes,
            "timezone": config.timezone,
            "search_engines": SEARCH_ENGINES,
            "social_sites": SOCIAL_SITES,
            **{stage: list(names) for stage, names in FUNNEL_STAGES.items()},
        },
    )
    return _count(conn)


def _count(conn: duckdb.DuckDBPyConnection) -> JourneyEventCounts:
    by_kind = dict(conn.execute(f"SELECT event_kind, count(*) FROM {_EVENTS} GROUP BY ALL").fetchall())
    touches, sessions, without_rate = conn.execute(
        f"""SELECT count(*) FILTER (WHERE is_touch),
            count(DISTINCT session_id),
            count(*) FILTER (WHERE event_kind = 'order' AND order_counted AND revenue IS NULL)
        FROM {_EVENTS}"""
    ).fetchall()[0]
    staged = dict(
        conn.execute(
            f"SELECT 'order', count(DISTINCT (source_name, source_record_id)) FROM {_ORDERS}"
            f" UNION ALL SELECT 'email', count(DISTINCT (source_name, source_record_id)) FROM {_EMAIL_EVENTS}"
            f" UNION ALL SELECT 'web', count(DISTINCT (source_name, source_record_id)) FROM {_WEB_EVENTS}"
        ).fetchall()
    )
    return JourneyEventCounts(
        events=sum(by_kind.values()),
        by_kind=by_kind,
        touches=touches,
        sessions=sessions,
        unattributed_orders=staged["order"] - by_kind.get("order", 0),
        unattributed_email_events=staged["email"] - by_kind.get("email", 0),
        unattributed_web_events=staged["web"] - by_kind.get("web", 0),
        orders_without_rate=without_rate,
    )
