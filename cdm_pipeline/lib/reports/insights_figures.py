"""The figures of the customer insights dashboard, aggregated in DuckDB from the published marts.

Every query returns a handful of rows whatever the number of customers (counts and sums per
system, score, segment, funnel step, channel or day), so the page stays small and fast at
millions of customers and never holds a personal value. Each function answers one section and
returns ``None`` when the warehouse lacks the mart it reads. Nothing is written to the warehouse:
a read-only connection will do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb

from cdm_pipeline.lib.catalog import CUSTOMER_360, JOURNEY_EVENTS, MEMBERSHIP_HISTORY, ORDER_ATTRIBUTION, SEGMENTS
from cdm_pipeline.lib.marts.attribution import MODELS, NO_TOUCH_CHANNEL
from cdm_pipeline.lib.marts.customer_360 import OPT_OUT_EVENTS
from cdm_pipeline.lib.marts.vocabulary import BUILT_IN_SEGMENTS, CUSTOM_SEGMENT_TYPE
from cdm_pipeline.lib.warehouse import table_exists

SEGMENT_TYPES = ("rfm", "lifecycle", "engagement", CUSTOM_SEGMENT_TYPE)
FUNNEL_STEPS = ("visit", "cart", "checkout", "purchase")
RFM_SCORES = (1, 2, 3, 4, 5)
# Over this many days of e-mail activity the engagement table counts per ISO week, not per day.
MAX_DAILY_SPAN_DAYS = 60
TOP_CAMPAIGNS = 10


@dataclass(frozen=True)
class Headline:
    customers: int
    with_orders: int
    revenue: float
    email_contactable: int
    as_of_date: dt.date | None


def headline_figures(conn: duckdb.DuckDBPyConnection) -> Headline | None:
    if not table_exists(conn, CUSTOMER_360):
        return None
    customers, with_orders, revenue, contactable, as_of = conn.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE order_count > 0), coalesce(sum(revenue), 0)::DOUBLE,
            count(*) FILTER (WHERE email_contactable), max(as_of_date)
        FROM {CUSTOMER_360}"""
    ).fetchone()
    if table_exists(conn, SEGMENTS):
        as_of = conn.execute(f"SELECT max(as_of_date) FROM {SEGMENTS}").fetchone()[0] or as_of
    return Headline(customers, with_orders, revenue, contactable, as_of)


@dataclass(frozen=True)
class SourceOverlap:
    """Customers by the set of source systems that know them."""

    total: int
    systems: list[str]
    only: list[tuple[str, int]]  # (system, customers known to that system alone)
    several: int  # known to two systems or more
    unknown: int  # no source system recorded
    known_to: list[tuple[str, int]]  # (system, customers it knows, alone or with others)
    combinations: list[tuple[tuple[str, ...], int]]  # biggest first


def source_overlap_figures(conn: duckdb.DuckDBPyConnection, system_order: list[str]) -> SourceOverlap | None:
    """``system_order``: the config's systems, listed first and in that order (others follow)."""
    if not table_exists(conn, CUSTOMER_360):
        return None
    rows = conn.execute(
        f"""SELECT list_sort(list_distinct(coalesce(source_systems, []::VARCHAR[]))) AS systems, count(*)
        FROM {CUSTOMER_360} GROUP BY 1 ORDER BY 2 DESC, 1"""
    ).fetchall()
    combinations = [(tuple(systems), n) for systems, n in rows]
    seen = {s for systems, _ in combinations for s in systems}
    systems = [s for s in dict.fromkeys(system_order) if s in seen] + sorted(seen - set(system_order))
    return SourceOverlap(
        total=sum(n for _, n in combinations),
        systems=systems,
        only=[(s, sum(n for c, n in combinations if c == (s,))) for s in systems],
        several=sum(n for c, n in combinations if len(c) > 1),
        unknown=sum(n for c, n in combinations if not c),
        known_to=[(s, sum(n for c, n in combinations if s in c)) for s in systems],
        combinations=[(c, n) for c, n in combinations if c],
    )


@dataclass(frozen=True)
class RfmCell:
    recency: int
    frequency: int
    customers: int
    revenue: float


@dataclass(frozen=True)
class RfmGrid:
    """Scored customers by recency and frequency score, with their revenue in the RFM window."""

    cells: dict[tuple[int, int], RfmCell]
    scored: int
    never_ordered: int  # no counted order at all
    ordered_before_window: int  # orders, but none in the window: no score
    max_customers: int

    def cell(self, recency: int, frequency: int) -> RfmCell:
        return self.cells.get((recency, frequency), RfmCell(recency, frequency, 0, 0.0))


def rfm_grid_figures(conn: duckdb.DuckDBPyConnection) -> RfmGrid | None:
    if not table_exists(conn, SEGMENTS):
        return None
    rows = conn.execute(
        f"""SELECT recency_score, frequency_score, count(*), coalesce(sum(monetary), 0)::DOUBLE
        FROM {SEGMENTS} WHERE recency_score IS NOT NULL AND frequency_score IS NOT NULL
        GROUP BY ALL"""
    ).fetchall()
    cells = {(r, f): RfmCell(r, f, n, revenue) for r, f, n, revenue in rows}
    if table_exists(conn, CUSTOMER_360):
        never, before_window = conn.execute(
            f"""SELECT count(*) FILTER (WHERE coalesce(c.order_count, 0) = 0),
                count(*) FILTER (WHERE c.order_count > 0)
            FROM {SEGMENTS} s LEFT JOIN {CUSTOMER_360} c USING (customer_id)
            WHERE s.recency_score IS NULL OR s.frequency_score IS NULL"""
        ).fetchone()
    else:
        never = conn.execute(
            f"SELECT count(*) FROM {SEGMENTS} WHERE recency_score IS NULL OR frequency_score IS NULL"
        ).fetchone()[0]
        before_window = 0
    return RfmGrid(
        cells=cells, scored=sum(c.customers for c in cells.values()), never_ordered=never,
        ordered_before_window=before_window, max_customers=max((c.customers for c in cells.values()), default=0),
    )


@dataclass(frozen=True)
class SegmentMove:
    segment: str
    before: int
    now: int
    entered: int
    exited: int

    @property
    def change(self) -> int:
        return self.now - self.before


@dataclass(frozen=True)
class SegmentMovement:
    """Segment sizes before and after the build of ``as_of``, from the membership history."""

    as_of: dt.date
    has_earlier: bool  # False on the first build: there is nothing to compare with
    previous_change: dt.date | None  # the latest earlier day on which any stay began or ended
    by_type: dict[str, list[SegmentMove]]
    lifecycle_transitions: list[tuple[str, str, int]] = field(default_factory=list)


# A stay is open now when it has no end; it was open before this build when it began earlier
# and had not ended before the as-of date (a stay closed tonight carries exited_on = as-of).
_MOVEMENT_SQL = f"""
SELECT segment_type, segment,
    count(*) FILTER (WHERE entered_on < $as_of AND (exited_on IS NULL OR exited_on >= $as_of)) AS before,
    count(*) FILTER (WHERE exited_on IS NULL) AS now,
    count(*) FILTER (WHERE entered_on = $as_of) AS entered,
    count(*) FILTER (WHERE exited_on = $as_of) AS exited
FROM {MEMBERSHIP_HISTORY}
WHERE exited_on IS NULL OR exited_on >= $as_of
GROUP BY ALL
"""

# Whether any stay began before this build, and the latest earlier day a stay began or ended.
_EARLIER_SQL = f"""
SELECT bool_or(entered_on < $as_of),
    greatest(max(entered_on) FILTER (WHERE entered_on < $as_of), max(exited_on) FILTER (WHERE exited_on < $as_of))
FROM {MEMBERSHIP_HISTORY}
"""

# Customers who left one lifecycle stage and entered another tonight; a stage entered with no
# stage left is a customer new to the warehouse, a stage left with none entered one that is gone
# (merged into another id, or erased).
_TRANSITIONS_SQL = f"""
WITH left_stage AS (
    SELECT customer_id, segment FROM {MEMBERSHIP_HISTORY}
    WHERE segment_type = 'lifecycle' AND exited_on = $as_of
), entered_stage AS (
    SELECT customer_id, segment FROM {MEMBERSHIP_HISTORY}
    WHERE segment_type = 'lifecycle' AND entered_on = $as_of
)
SELECT coalesce(l.segment, $new_label), coalesce(e.segment, $gone_label), count(*)
FROM left_stage l FULL OUTER JOIN entered_stage e USING (customer_id)
GROUP BY ALL ORDER BY 3 DESC, 1, 2
"""
NEW_CUSTOMER_LABEL = "(new customer)"
GONE_CUSTOMER_LABEL = "(no longer a customer)"


def segment_movement_figures(
    conn: duckdb.DuckDBPyConnection, as_of: dt.date | None, custom_segments: list[str],
) -> SegmentMovement | None:
    """``custom_segments``: the config's segment names, listed even when empty."""
    if as_of is None or not table_exists(conn, MEMBERSHIP_HISTORY):
        return None
    has_earlier, previous = conn.execute(_EARLIER_SQL, {"as_of": as_of}).fetchone()
    counts: dict[str, dict[str, SegmentMove]] = {t: {} for t in SEGMENT_TYPES}
    for segment_type, segment, before, now, entered, exited in conn.execute(
        _MOVEMENT_SQL, {"as_of": as_of}
    ).fetchall():
        counts.setdefault(segment_type, {})[segment] = SegmentMove(segment, before, now, entered, exited)
    known = {**BUILT_IN_SEGMENTS, CUSTOM_SEGMENT_TYPE: tuple(custom_segments)}
    by_type = {}
    for segment_type, found in counts.items():
        names = list(known.get(segment_type, ())) + sorted(set(found) - set(known.get(segment_type, ())))
        by_type[segment_type] = [found.get(name, SegmentMove(name, 0, 0, 0, 0)) for name in names]
    transitions = conn.execute(
        _TRANSITIONS_SQL, {"as_of": as_of, "new_label": NEW_CUSTOMER_LABEL, "gone_label": GONE_CUSTOMER_LABEL}
    ).fetchall()
    return SegmentMovement(
        as_of=as_of, has_earlier=bool(has_earlier), previous_change=previous, by_type=by_type,
        lifecycle_transitions=[tuple(row) for row in transitions],
    )


@dataclass(frozen=True)
class FunnelStep:
    stage: str
    customers: int  # reached this stage and every earlier one
    reached: int  # reached this stage, whatever the earlier ones
    step_conversion: float | None  # of the customers at the previous step
    overall_conversion: float | None  # of the customers at the first step


# Per customer, whether they ever had an event of each stage; the funnel nests them.
# A cancelled or refunded order (order_counted false) is not a purchase.
_FUNNEL_SQL = f"""
WITH reached AS (
    SELECT customer_id,
        bool_or(funnel_stage = 'visit') AS visit,
        bool_or(funnel_stage = 'cart') AS cart,
        bool_or(funnel_stage = 'checkout') AS checkout,
        bool_or(funnel_stage = 'purchase' AND (event_kind <> 'order' OR order_counted)) AS purchase
    FROM {JOURNEY_EVENTS} WHERE funnel_stage IS NOT NULL
    GROUP BY customer_id
)
SELECT count(*) FILTER (WHERE visit),
    count(*) FILTER (WHERE visit AND cart),
    count(*) FILTER (WHERE visit AND cart AND checkout),
    count(*) FILTER (WHERE visit AND cart AND checkout AND purchase),
    count(*) FILTER (WHERE cart), count(*) FILTER (WHERE checkout), count(*) FILTER (WHERE purchase)
FROM reached
"""


def funnel_figures(conn: duckdb.DuckDBPyConnection) -> list[FunnelStep] | None:
    if not table_exists(conn, JOURNEY_EVENTS):
        return None
    visit, cart, checkout, purchase, any_cart, any_checkout, any_purchase = conn.execute(_FUNNEL_SQL).fetchone()
    nested = (visit, cart, checkout, purchase)
    reached = (visit, any_cart, any_checkout, any_purchase)
    return [
        FunnelStep(
            stage=stage, customers=n, reached=reached[i],
            step_conversion=None if i == 0 else _share(n, nested[i - 1]),
            overall_conversion=_share(n, visit),
        )
        for i, (stage, n) in enumerate(zip(FUNNEL_STEPS, nested, strict=True))
    ]


def _share(part: int | float, whole: int | float) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class ChannelRevenue:
    """Attributed revenue per channel (rows) and attribution model (columns)."""

    models: list[str]
    channels: list[str]  # biggest first, no_touch last
    revenue: dict[tuple[str, str], float]  # (channel, model) -> revenue
    totals: dict[str, float]  # model -> revenue
    orders: int

    def of(self, channel: str, model: str) -> float:
        return self.revenue.get((channel, model), 0.0)


def channel_revenue_figures(conn: duckdb.DuckDBPyConnection) -> ChannelRevenue | None:
    if not table_exists(conn, ORDER_ATTRIBUTION):
        return None
    # Weights sum to 1 per order and model, so the weights of one model count the orders.
    rows = conn.execute(
        f"""SELECT channel, model, coalesce(sum(attributed_revenue), 0)::DOUBLE, sum(weight)::DOUBLE
        FROM {ORDER_ATTRIBUTION} GROUP BY ALL"""
    ).fetchall()
    revenue = {(channel, model): value for channel, model, value, _ in rows}
    found = {model for _, model, _, _ in rows}
    models = [m for m in MODELS if m in found] + sorted(found - set(MODELS))
    size: dict[str, float] = {}
    for (channel, _), value in revenue.items():
        size[channel] = size.get(channel, 0.0) + value
    channels = sorted(size, key=lambda c: (c == NO_TOUCH_CHANNEL, -size[c], c))
    orders_per_model = {model: 0.0 for model in models}
    for _, model, _, weight in rows:
        orders_per_model[model] += weight or 0.0
    return ChannelRevenue(
        models=models, channels=channels, revenue=revenue,
        totals={m: sum(v for (_, model), v in revenue.items() if model == m) for m in models},
        orders=round(max(orders_per_model.values(), default=0.0)),
    )


@dataclass(frozen=True)
class EmailCounts:
    period: dt.date | str  # a day, the Monday of an ISO week, or a campaign name
    sent: int
    delivered: int
    opens: int
    clicks: int
    unsubscribes: int
    bounces: int

    @property
    def open_rate(self) -> float | None:
        return _share(self.opens, self.delivered)

    @property
    def click_rate(self) -> float | None:
        return _share(self.clicks, self.delivered)


@dataclass(frozen=True)
class EmailEngagement:
    weekly: bool
    periods: list[EmailCounts]
    totals: EmailCounts
    campaigns: list[EmailCounts]  # the most-sent campaigns, ``period`` holding the name


EMAIL_MEASURES = ("sent", "delivered", "opens", "clicks", "unsubscribes", "bounces")
_EMAIL_COUNTS = """count(*) FILTER (WHERE event_type = 'sent') AS sent,
    count(*) FILTER (WHERE event_type = 'delivered') AS delivered,
    count(*) FILTER (WHERE event_type = 'open') AS opens,
    count(*) FILTER (WHERE event_type = 'click') AS clicks,
    count(*) FILTER (WHERE list_contains($opt_out_events, event_type)) AS unsubscribes,
    count(*) FILTER (WHERE event_type = 'bounce') AS bounces"""

# Counted per day first; when the days span more than $max_span the days are summed per ISO
# week (date_trunc('week') is its Monday).
_EMAIL_PERIODS_SQL = f"""
WITH daily AS (
    SELECT event_date AS day, {_EMAIL_COUNTS}
    FROM {JOURNEY_EVENTS} WHERE event_kind = 'email' AND event_date IS NOT NULL
    GROUP BY event_date
), span AS (
    SELECT max(day) - min(day) > $max_span AS weekly FROM daily
)
SELECT CASE WHEN weekly THEN date_trunc('week', day)::DATE ELSE day END AS period, any_value(weekly),
    {", ".join(f"sum({m})::BIGINT" for m in EMAIL_MEASURES)}
FROM daily, span GROUP BY 1 ORDER BY 1
"""

_EMAIL_CAMPAIGNS_SQL = f"""
SELECT campaign, {_EMAIL_COUNTS}
FROM {JOURNEY_EVENTS} WHERE event_kind = 'email' AND campaign IS NOT NULL
GROUP BY campaign ORDER BY sent DESC, campaign LIMIT $top
"""


def email_engagement_figures(conn: duckdb.DuckDBPyConnection) -> EmailEngagement | None:
    if not table_exists(conn, JOURNEY_EVENTS):
        return None
    params = {"opt_out_events": list(OPT_OUT_EVENTS)}
    rows = conn.execute(_EMAIL_PERIODS_SQL, {**params, "max_span": MAX_DAILY_SPAN_DAYS}).fetchall()
    periods = [EmailCounts(period, *counts) for period, _, *counts in rows]
    totals = EmailCounts("all", *(sum(getattr(p, m) for p in periods) for m in EMAIL_MEASURES))
    campaigns = conn.execute(_EMAIL_CAMPAIGNS_SQL, {**params, "top": TOP_CAMPAIGNS}).fetchall()
    return EmailEngagement(
        weekly=bool(rows and rows[0][1]), periods=periods, totals=totals,
        campaigns=[EmailCounts(name, *counts) for name, *counts in campaigns],
    )
