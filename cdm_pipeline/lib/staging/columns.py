"""The shape of each staging table: canonical columns with their DuckDB types.

One definition serves the CREATE TABLE of ``staging.<kind>`` and ``quarantine.<kind>`` (which
holds the same columns plus the reason), the quality checks (which load these columns) and the
README. Every table also carries the lineage columns below.
"""

from __future__ import annotations

from cdm_pipeline.config.models import SOURCE_KINDS

LINEAGE = {
    "source_name": "VARCHAR NOT NULL",
    "source_system": "VARCHAR NOT NULL",
    "source_record_id": "VARCHAR",
}
TRAILER = {
    # Codes for values that could not be standardised (the value is kept as it came).
    "quality_flags": "VARCHAR[] NOT NULL",
    "_source_file": "VARCHAR NOT NULL",
    "_source_row": "BIGINT NOT NULL",
    "_partition_date": "DATE NOT NULL",
}

CANONICAL_TYPES: dict[str, dict[str, str]] = {
    "contacts": {
        "first_name": "VARCHAR",
        "last_name": "VARCHAR",
        "email": "VARCHAR",
        "phone": "VARCHAR",
        "birth_date": "DATE",
        # The date as written: a typo such as day 55 is a null date, but still evidence for
        # matching (edit distance on the text).
        "birth_date_text": "VARCHAR",
        "address_line1": "VARCHAR",
        "address_line2": "VARCHAR",
        "city": "VARCHAR",
        "postcode": "VARCHAR",
        "region": "VARCHAR",
        "country": "VARCHAR",
        "company": "VARCHAR",
        "email_opt_in": "BOOLEAN",
        "do_not_sell": "BOOLEAN",
        "created_at": "TIMESTAMPTZ",
        "updated_at": "TIMESTAMPTZ",
        # Another source's record id for the same person (an ESP's copy of the CRM id); which
        # source is declared in identity.same_ids.
        "linked_id": "VARCHAR",
    },
    "orders": {
        "contact_id": "VARCHAR",
        "email": "VARCHAR",
        "order_date": "TIMESTAMPTZ",
        "amount": "DECIMAL(18, 2)",
        "currency": "VARCHAR",
        "status": "VARCHAR",
        "channel": "VARCHAR",
    },
    "email_events": {
        "subscriber_id": "VARCHAR",
        "email": "VARCHAR",
        "event_type": "VARCHAR",
        "occurred_at": "TIMESTAMPTZ",
        "campaign_id": "VARCHAR",
        "campaign_name": "VARCHAR",
        "url": "VARCHAR",
        "bounce_type": "VARCHAR",
    },
    "web_events": {
        "client_id": "VARCHAR",
        "user_id": "VARCHAR",
        "email": "VARCHAR",
        "event_name": "VARCHAR",
        "occurred_at": "TIMESTAMPTZ",
        "session_id": "VARCHAR",
        "page_url": "VARCHAR",
        "page_referrer": "VARCHAR",
        "utm_source": "VARCHAR",
        "utm_medium": "VARCHAR",
        "utm_campaign": "VARCHAR",
        "device_category": "VARCHAR",
        "country": "VARCHAR",
        "value": "DOUBLE",
        "currency": "VARCHAR",
        "transaction_id": "VARCHAR",
    },
}

# One staging table per source kind, in the config's order.
KINDS = SOURCE_KINDS
assert set(CANONICAL_TYPES) == set(KINDS), "every source kind has a staging table and no other"


def staging_columns(kind: str) -> dict[str, str]:
    """All columns of ``staging.<kind>`` in order, with their types."""
    return {**LINEAGE, **CANONICAL_TYPES[kind], **TRAILER}


def quarantine_columns(kind: str) -> dict[str, str]:
    """``quarantine.<kind>``: the staging columns plus why the row was held back."""
    return {**staging_columns(kind), "quarantine_reason": "VARCHAR NOT NULL"}
