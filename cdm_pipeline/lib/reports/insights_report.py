"""The customer insights dashboard: ``<reports>/insights/index.html``, rewritten after each marts build.

For marketers and analysts: who the customers are known to, how recent and frequent buyers are
(RFM), how segments moved in the last build, the journey funnel, revenue per channel under each
attribution model and e-mail engagement over time. One self-contained page (charts embedded as
PNG) holding aggregates only; the figures come from ``insights_figures``.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.marts.attribution import NO_TOUCH_CHANNEL
from cdm_pipeline.lib.reports import charts
from cdm_pipeline.lib.reports.insights_figures import (
    CUSTOMER_360,
    RFM_SCORES,
    SEGMENT_TYPES,
    ChannelRevenue,
    EmailEngagement,
    FunnelStep,
    SegmentMovement,
    SourceOverlap,
    channel_revenue_figures,
    email_engagement_figures,
    funnel_figures,
    headline_figures,
    rfm_grid_figures,
    segment_movement_figures,
    source_overlap_figures,
)
from cdm_pipeline.lib.reports.page import navigation, render, write_page

SEGMENT_TYPE_TITLES = {
    "rfm": "RFM segments", "lifecycle": "Lifecycle stages", "engagement": "Engagement tiers",
    "custom": "Custom segments",
}
MODEL_EXPLANATIONS = {
    "first_touch": "all of an order's revenue to the earliest touch in its lookback window",
    "last_touch": "all of it to the latest touch before the order",
    "linear": "equal shares to every touch in the window",
    "position_based": "40% to the first touch, 40% to the last, 20% shared by the touches between",
}


@dataclass(frozen=True)
class InsightsDashboard:
    """Where the dashboard went and its headline figures (for Dagster metadata and the CLI)."""

    page: Path
    marts_built: bool
    as_of_date: dt.date | None
    customers: int
    revenue: float


def insights_page(config: CdmConfig) -> Path:
    return config.reports_dir / "insights" / "index.html"


def write_insights_dashboard(
    conn: duckdb.DuckDBPyConnection, config: CdmConfig, *, now: dt.datetime | None = None,
) -> InsightsDashboard:
    """Aggregate the marts and write the dashboard; a warehouse without marts gets a page saying so."""
    now = now or dt.datetime.now(dt.timezone.utc)
    zone = zoneinfo.ZoneInfo(config.timezone)
    page = insights_page(config)
    headline = headline_figures(conn)
    as_of = headline.as_of_date if headline else None
    overlap = source_overlap_figures(conn, [s.system for s in config.sources])
    rfm = rfm_grid_figures(conn)
    movement = segment_movement_figures(conn, as_of, [s.name for s in config.segments])
    funnel = funnel_figures(conn)
    channels = channel_revenue_figures(conn)
    email = email_engagement_figures(conn)
    currency = config.marts.currency
    html = render(
        "insights.html.j2",
        title="Customer insights" + (f" as of {as_of.isoformat()}" if as_of else ""),
        subtitle="Who the customers are, how they buy and how they moved since the last run. Aggregates of the marts.",
        links=navigation(config.reports_dir, page.parent),
        missing_marts=headline is None, customer_360=CUSTOMER_360,
        headline=headline, currency=currency,
        revenue_label=f"revenue ({currency})" if currency else "revenue",
        overlap=overlap, overlap_chart=_overlap_chart(overlap) if overlap and overlap.total else None,
        rfm=rfm, rfm_scores=RFM_SCORES, rfm_window_days=config.marts.rfm_window_days,
        movement=movement, segment_types=SEGMENT_TYPES, segment_type_titles=SEGMENT_TYPE_TITLES,
        lifecycle_chart=_lifecycle_chart(movement) if movement else None,
        funnel=funnel, funnel_chart=_funnel_chart(funnel) if funnel and funnel[0].customers else None,
        channels=channels, model_explanations=MODEL_EXPLANATIONS, no_touch=NO_TOUCH_CHANNEL,
        lookback_days=config.marts.attribution_lookback_days,
        channel_chart=_channel_chart(channels) if channels else None,
        email=email, email_chart=_email_chart(email) if email else None,
        generated_at=now.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z"),
        warehouse_name=config.warehouse.name,
    )
    write_page(page, html)
    return InsightsDashboard(
        page=page, marts_built=headline is not None, as_of_date=as_of,
        customers=headline.customers if headline else 0, revenue=headline.revenue if headline else 0.0,
    )


def _overlap_chart(overlap: SourceOverlap) -> charts.Chart:
    labels = [f"{system} only" for system, _ in overlap.only] + ["several systems"]
    values = [n for _, n in overlap.only] + [overlap.several]
    return charts.bar_chart(
        "source_overlap", "Customers known to one source system only, per system, and to several systems",
        labels, values, horizontal=True, value_label="customers",
    )


def _lifecycle_chart(movement: SegmentMovement) -> charts.Chart:
    stages = movement.by_type.get("lifecycle", [])
    series = {"now": [s.now for s in stages]}
    if movement.has_earlier:
        series = {"before this run": [s.before for s in stages], **series}
    return charts.grouped_bar_chart(
        "lifecycle_sizes", "Customers per lifecycle stage before this run and now",
        [s.segment for s in stages] or ["(none)"], {k: v or [0] for k, v in series.items()},
        value_label="customers",
    )


def _funnel_chart(funnel: list[FunnelStep]) -> charts.Chart:
    return charts.bar_chart(
        "journey_funnel", "Customers at each step of the journey funnel (visit, cart, checkout, purchase)",
        [step.stage for step in funnel], [step.customers for step in funnel],
        horizontal=True, value_label="customers",
    )


def _channel_chart(channels: ChannelRevenue) -> charts.Chart | None:
    # Orders without a touch are the same under every model and often dwarf the touched
    # channels, so the chart compares the touched ones only (the table has both).
    touched = [c for c in channels.channels if c != NO_TOUCH_CHANNEL]
    if not touched:
        return None
    return charts.grouped_bar_chart(
        "channel_revenue",
        f"Attributed revenue per channel under each attribution model ({NO_TOUCH_CHANNEL} not drawn)",
        touched, {m: [channels.of(c, m) for c in touched] for m in channels.models},
        value_label="revenue", horizontal=True,
    )


def _email_chart(email: EmailEngagement) -> charts.Chart | None:
    # A period without deliveries has no rate; leaving it out keeps the lines joined.
    periods = [p for p in email.periods if p.delivered]
    if not periods:
        return None
    unit = "week" if email.weekly else "day"
    return charts.line_chart(
        "email_rates", f"E-mail open rate and click rate per {unit} (of e-mails delivered)",
        [p.period for p in periods],
        {"open rate": [p.open_rate for p in periods], "click rate": [p.click_rate for p in periods]},
        value_label=f"share of delivered, per {unit}", percent=True,
    )


__all__ = ["InsightsDashboard", "insights_page", "write_insights_dashboard"]
