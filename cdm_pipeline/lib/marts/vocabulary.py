"""Names the marts publish and others rely on: columns, segment names and their file slugs.

``customer_360`` columns and their types live here because three places must agree on them: the
SQL that builds the table, the condition grammar of user-defined segments (which only accepts
known columns, type-checked) and the tests.
"""

from __future__ import annotations

import re
from typing import Literal

ColumnType = Literal["number", "text", "boolean", "date", "timestamp", "text_list"]

# One row per golden customer (marts.customer_360), in table order.
CUSTOMER_360_COLUMNS: dict[str, ColumnType] = {
    "customer_id": "text",
    "first_name": "text",
    "last_name": "text",
    "email": "text",
    "phone": "text",
    "birth_date": "date",
    "address_line1": "text",
    "address_line2": "text",
    "city": "text",
    "postcode": "text",
    "region": "text",
    "country": "text",
    "company": "text",
    "source_systems": "text_list",
    "source_names": "text_list",
    "source_records": "number",
    "first_seen_at": "timestamp",
    "last_seen_at": "timestamp",
    "order_count": "number",
    "revenue": "number",
    "average_order_value": "number",
    "first_order_date": "date",
    "last_order_date": "date",
    "days_since_last_order": "number",
    "emails_sent_30d": "number",
    "emails_opened_30d": "number",
    "emails_clicked_30d": "number",
    "emails_sent_90d": "number",
    "emails_opened_90d": "number",
    "emails_clicked_90d": "number",
    "email_unsubscribed": "boolean",
    "email_bounced": "boolean",
    "web_sessions": "number",
    "web_sessions_30d": "number",
    "page_views": "number",
    "last_visit_at": "timestamp",
    "abandoned_carts": "number",
    "email_opt_in": "boolean",
    "email_opt_in_at": "timestamp",
    "do_not_sell": "boolean",
    "email_contactable": "boolean",
    "as_of_date": "date",
}

# Columns of marts.customer_segments a custom segment may also use.
SEGMENT_COLUMNS: dict[str, ColumnType] = {
    "recency_days": "number",
    "frequency": "number",
    "monetary": "number",
    "recency_score": "number",
    "frequency_score": "number",
    "monetary_score": "number",
    "rfm_segment": "text",
    "lifecycle_stage": "text",
    "engagement_tier": "text",
}

# Everything a custom segment's `where` may name.
CONDITION_COLUMNS: dict[str, ColumnType] = {**CUSTOMER_360_COLUMNS, **SEGMENT_COLUMNS}

RFM_SEGMENTS = (
    "Champions", "Loyal", "Potential Loyalist", "New", "Promising", "Need Attention",
    "About to Sleep", "At Risk", "Can't Lose Them", "Hibernating", "Lost",
)
LIFECYCLE_STAGES = ("prospect", "new", "active", "at_risk", "lapsed", "churned")
ENGAGEMENT_TIERS = ("highly_engaged", "engaged", "disengaged", "inactive")

# segment_type values of marts.segment_membership_history, and the built-in names of each.
BUILT_IN_SEGMENTS: dict[str, tuple[str, ...]] = {
    "rfm": RFM_SEGMENTS,
    "lifecycle": LIFECYCLE_STAGES,
    "engagement": ENGAGEMENT_TIERS,
}
CUSTOM_SEGMENT_TYPE = "custom"


def slug(text: str) -> str:
    """``"Can't Lose Them"`` -> ``"cant_lose_them"``: lower case, letters and digits joined by _."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower().replace("'", "")).strip("_")


def segment_folder(segment_type: str, segment: str) -> str:
    """The export folder of a segment: ``rfm_champions``, ``lifecycle_at_risk``; custom: its name."""
    if segment_type == CUSTOM_SEGMENT_TYPE:
        return segment
    return f"{segment_type}_{slug(segment)}"


def built_in_folders() -> set[str]:
    return {segment_folder(t, s) for t, names in BUILT_IN_SEGMENTS.items() for s in names}
