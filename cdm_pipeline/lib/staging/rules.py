"""Standardisation and row-level rules per staging kind, as DuckDB SQL.

Each kind has one SELECT over ``_cdm_mapped`` (the raw rows of every source of that kind, with
canonical column names, trimmed text and parsed dates; see build.py) that returns the staging
columns plus ``quarantine_reason``. Rows with a reason go to ``quarantine.<kind>``, the others to
``staging.<kind>``. Values that cannot be standardised are kept as they came and named in
``quality_flags``; only the critical rules below hold a row back.

The ``cdm_*`` functions are the Python standardisers registered on the connection
(``cdm_pipeline.lib.standardise``); they compute each distinct value once.
"""

from __future__ import annotations

from cdm_pipeline.lib.warehouse import quote_literal

# Lower-case text tokens accepted for booleans, as exports spell them.
TRUE_WORDS = ("true", "t", "yes", "y", "1", "opt-in", "opted in", "subscribed")
FALSE_WORDS = ("false", "f", "no", "n", "0", "opt-out", "opted out", "unsubscribed")

# Birth dates outside this window are typos or placeholders (1900-01-01, 9999-12-31).
EARLIEST_BIRTH_DATE = "1900-01-01"
OLDEST_AGE_YEARS = 120

# A record cannot have changed after it was read: a time later than both the end of its landing
# day and the moment staging runs (a snapshot file backfilled into old partitions holds times
# after their days), plus this tolerance for time zones and clocks, is a typo such as 2099.
# Staging drops it (flagged future_<column>) and identity and the marts check again, so it never
# counts as recency: a mistyped "last modified" would otherwise outrank every later statement,
# consent included.
FUTURE_TOLERANCE_DAYS = 1
FUTURE_TIME_FLAGS = ("future_created_at", "future_updated_at")

# Characters that never belong in a name, address or identifier and only do harm: NUL and the
# other C0 controls (they cut values short in C-string tools and break CSV exports) and Unicode's
# text-direction embeddings, overrides and isolates (they make displayed text read otherwise than
# what is stored, so a name or address can pose as another). Staging removes them and flags the
# column (control_characters_<column>): the rest of the value is real, and a record must not be
# lost over an invisible character. Tab, line feed and carriage return stay: addresses have them.
HIDDEN_CHARACTERS = r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F\x{202A}-\x{202E}\x{2066}-\x{2069}]"
# Far beyond any real name, street or company: a longer value is junk or an attack (a 200,000-
# character name slows every fuzzy comparison and bloats every export). It is dropped, flagged
# overlong_<column>; the raw table keeps it for a data steward.
MAX_TEXT_CHARS = 1000
# The contact columns read as free text (the parsed and yes/no ones are judged by their parsers).
SANITISED_CONTACT_COLUMNS = (
    "first_name", "last_name", "email", "phone", "address_line1", "address_line2", "city",
    "postcode", "region", "country", "company", "linked_id",
)

# A contact record is held back as ``no_usable_identifier`` only when nothing in it could ever
# link it to another record: no valid email or phone, no id another source shares, and fewer
# than MIN_EVIDENCE of these pieces of evidence. A surname with a birth date, or a name with a
# street, is how many CRM and historical records look, and identity links them; a lone first
# name, or a city alone, would match thousands of strangers and tells nobody apart.
LINKABLE_EVIDENCE = ("a name part (first or last)", "birth date", "street", "postcode", "city", "company")
MIN_EVIDENCE = 2


def bool_sql(column: str) -> str:
    """A yes/no text as a boolean; NULL when it is neither (see TRUE_WORDS, FALSE_WORDS)."""
    true = ", ".join(quote_literal(w) for w in TRUE_WORDS)
    false = ", ".join(quote_literal(w) for w in FALSE_WORDS)
    return (
        f"CASE WHEN lower({column}) IN ({true}) THEN true"
        f" WHEN lower({column}) IN ({false}) THEN false END"
    )


def phone_region_sql(country: str, default_region: str) -> str:
    """The region a phone number is read in: the row's country when it is one, else the default.

    Args:
        country: SQL of the row's country standardised (a ``cdm_country(...)`` result).
        default_region: SQL of the configured default region (a bound parameter).
    """
    return (
        f"CASE WHEN {country}.issue IS NULL AND {country}.value IS NOT NULL"
        f" THEN {country}.value ELSE {default_region} END"
    )


def future_time_sql(timestamp: str, day: str) -> str:
    """SQL true when ``timestamp`` is later than the end of ``day`` (a DATE, read as UTC) and than
    now, plus FUTURE_TOLERANCE_DAYS; NULL when ``timestamp`` is NULL."""
    return (
        f"({timestamp} > greatest(timezone('UTC', CAST({day} AS TIMESTAMP)) + INTERVAL 1 DAY, now())"
        f" + INTERVAL {FUTURE_TOLERANCE_DAYS} DAY)"
    )


def _plausible_time(column: str) -> str:
    """The parsed time, NULL when it lies after the landing day (see FUTURE_TOLERANCE_DAYS)."""
    return (
        f"CASE WHEN {future_time_sql(f'{column}__parsed', '_partition_date')} IS NOT TRUE"
        f" THEN {column}__parsed END"
    )


def _future_flag(column: str) -> str:
    flag = f"future_{column}"
    assert flag in FUTURE_TIME_FLAGS
    return f"CASE WHEN {future_time_sql(f'{column}__parsed', '_partition_date')} THEN '{flag}' END"


def _bool_flag(column: str) -> str:
    return f"CASE WHEN {column} IS NOT NULL AND ({bool_sql(column)}) IS NULL THEN 'unparseable_{column}' END"


def _timestamp_flag(column: str) -> str:
    return f"CASE WHEN {column} IS NOT NULL AND {column}__parsed IS NULL THEN 'unparseable_{column}' END"


def _flags(*expressions: str) -> str:
    return f"list_filter([{', '.join(expressions)}], lambda flag: flag IS NOT NULL)"


def _sanitised(columns: tuple[str, ...]) -> str:
    """``_cdm_mapped`` with hidden characters removed and overlong values dropped from ``columns``,
    and ``text_flags`` naming what was done (see HIDDEN_CHARACTERS, MAX_TEXT_CHARS)."""
    pattern = quote_literal(HIDDEN_CHARACTERS)
    replaced = ", ".join(
        f"CASE WHEN length({c}) > {MAX_TEXT_CHARS} THEN NULL"
        f" WHEN regexp_matches({c}, {pattern}) THEN nullif(trim(regexp_replace({c}, {pattern}, '', 'g')), '')"
        f" ELSE {c} END AS {c}"
        for c in columns
    )
    flags = _flags(*(
        f"CASE WHEN length({c}) > {MAX_TEXT_CHARS} THEN 'overlong_{c}'"
        f" WHEN regexp_matches({c}, {pattern}) THEN 'control_characters_{c}' END"
        for c in columns
    ))
    return f"SELECT * REPLACE ({replaced}), {flags} AS text_flags FROM _cdm_mapped"


def _dedupe(order: str) -> str:
    # One row per source record per partition: an export that repeats a record keeps its latest
    # version; the earlier ones are quarantined, not lost.
    return (
        "row_number() OVER (PARTITION BY source_name, source_record_id"
        f" ORDER BY {order}, _source_file DESC, _source_row DESC) > 1"
    )


CONTACTS = f"""
WITH sanitised AS (
    {_sanitised(SANITISED_CONTACT_COLUMNS)}
), located AS (
    SELECT *, cdm_country(country) AS s_country FROM sanitised
), standardised AS (
    SELECT *,
        cdm_email(email) AS s_email,
        cdm_phone(phone, {phone_region_sql("s_country", "$default_region")}) AS s_phone,
        cdm_name(first_name) AS s_first_name,
        cdm_name(last_name) AS s_last_name,
        cdm_postcode(postcode, CASE WHEN s_country.issue IS NULL THEN s_country.value END) AS s_postcode,
        birth_date__parsed IS NOT NULL
            AND (birth_date__parsed < DATE '{EARLIEST_BIRTH_DATE}'
                 OR birth_date__parsed > _partition_date
                 OR birth_date__parsed < _partition_date - INTERVAL {OLDEST_AGE_YEARS} YEAR)
            AS birth_date_implausible
    FROM located
), judged AS (
    SELECT *,
        -- Linkable: see LINKABLE_EVIDENCE. An exact identifier links on its own; otherwise two
        -- pieces of evidence (one name part, birth date, street, postcode, city, company).
        (s_email.value IS NOT NULL AND s_email.issue IS NULL)
        OR (s_phone.value IS NOT NULL AND s_phone.issue IS NULL)
        OR linked_id IS NOT NULL
        OR ((s_first_name.value IS NOT NULL OR s_last_name.value IS NOT NULL)::INTEGER
            + (NOT birth_date_implausible AND (birth_date__parsed IS NOT NULL
               OR length(regexp_replace(coalesce(birth_date, ''), '[^0-9]', '', 'g')) >= 6))::INTEGER
            + (address_line1 IS NOT NULL)::INTEGER
            + (s_postcode.value IS NOT NULL)::INTEGER
            + (city IS NOT NULL)::INTEGER
            + (company IS NOT NULL)::INTEGER) >= {MIN_EVIDENCE}
            AS has_identifier
    FROM standardised
)
SELECT
    source_name, source_system, source_record_id,
    s_first_name.value AS first_name,
    s_last_name.value AS last_name,
    s_email.value AS email,
    s_phone.value AS phone,
    CASE WHEN NOT birth_date_implausible THEN birth_date__parsed END AS birth_date,
    birth_date AS birth_date_text,
    address_line1, address_line2,
    city,
    s_postcode.value AS postcode,
    region,
    s_country.value AS country,
    company,
    {bool_sql("email_opt_in")} AS email_opt_in,
    {bool_sql("do_not_sell")} AS do_not_sell,
    {_plausible_time("created_at")} AS created_at,
    {_plausible_time("updated_at")} AS updated_at,
    linked_id,
    list_concat({_flags(
        "s_email.issue", "s_phone.issue",
        "CASE WHEN s_first_name.issue IS NOT NULL THEN 'invalid_first_name' END",
        "CASE WHEN s_last_name.issue IS NOT NULL THEN 'invalid_last_name' END",
        "s_postcode.issue", "s_country.issue",
        "CASE WHEN birth_date IS NOT NULL AND birth_date__parsed IS NULL THEN 'unparseable_birth_date' END",
        "CASE WHEN birth_date_implausible THEN 'implausible_birth_date' END",
        _bool_flag("email_opt_in"), _bool_flag("do_not_sell"),
        _timestamp_flag("created_at"), _timestamp_flag("updated_at"),
        _future_flag("created_at"), _future_flag("updated_at"),
    )}, text_flags) AS quality_flags,
    _source_file, _source_row, _partition_date,
    CASE
        WHEN source_record_id IS NULL THEN 'missing_record_id'
        WHEN NOT has_identifier THEN 'no_usable_identifier'
        WHEN {_dedupe(f"{_plausible_time('updated_at')} DESC NULLS LAST")} THEN 'duplicate_in_partition'
    END AS quarantine_reason
FROM judged
"""

ORDERS = f"""
WITH standardised AS (
    SELECT *, cdm_email(email) AS s_email FROM _cdm_mapped
)
SELECT
    source_name, source_system, source_record_id,
    contact_id,
    s_email.value AS email,
    order_date__parsed AS order_date,
    amount__parsed AS amount,
    upper(currency) AS currency,
    lower(status) AS status,
    lower(channel) AS channel,
    {_flags(
        "s_email.issue",
        "CASE WHEN currency IS NOT NULL AND NOT regexp_full_match(upper(currency), '[A-Z]{3}')"
        " THEN 'invalid_currency' END",
    )} AS quality_flags,
    _source_file, _source_row, _partition_date,
    CASE
        WHEN source_record_id IS NULL THEN 'missing_record_id'
        WHEN order_date__parsed IS NULL THEN 'missing_order_date'
        WHEN amount__parsed IS NULL THEN 'missing_or_invalid_amount'
        WHEN amount__parsed < 0 THEN 'negative_amount'
        WHEN {_dedupe("order_date__parsed DESC")} THEN 'duplicate_in_partition'
    END AS quarantine_reason
FROM standardised
"""

EMAIL_EVENTS = f"""
WITH standardised AS (
    SELECT *, cdm_email(email) AS s_email FROM _cdm_mapped
)
SELECT
    source_name, source_system, source_record_id,
    subscriber_id,
    s_email.value AS email,
    lower(event_type) AS event_type,
    occurred_at__parsed AS occurred_at,
    campaign_id, campaign_name, url,
    lower(bounce_type) AS bounce_type,
    {_flags("s_email.issue")} AS quality_flags,
    _source_file, _source_row, _partition_date,
    CASE
        WHEN source_record_id IS NULL THEN 'missing_record_id'
        WHEN occurred_at__parsed IS NULL THEN 'missing_occurred_at'
        WHEN subscriber_id IS NULL AND s_email.value IS NULL THEN 'no_identity'
        WHEN {_dedupe("occurred_at__parsed DESC")} THEN 'duplicate_in_partition'
    END AS quarantine_reason
FROM standardised
"""

WEB_EVENTS = f"""
WITH standardised AS (
    SELECT *,
        cdm_email(email) AS s_email,
        cdm_country(country) AS s_country
    FROM _cdm_mapped
)
SELECT
    source_name, source_system, source_record_id,
    client_id, user_id,
    s_email.value AS email,
    lower(event_name) AS event_name,
    occurred_at__parsed AS occurred_at,
    session_id, page_url, page_referrer, utm_source, utm_medium, utm_campaign,
    lower(device_category) AS device_category,
    s_country.value AS country,
    value__parsed AS value,
    upper(currency) AS currency,
    transaction_id,
    {_flags(
        "s_email.issue", "s_country.issue",
        "CASE WHEN value IS NOT NULL AND value__parsed IS NULL THEN 'unparseable_value' END",
    )} AS quality_flags,
    _source_file, _source_row, _partition_date,
    CASE
        WHEN source_record_id IS NULL THEN 'missing_record_id'
        WHEN occurred_at__parsed IS NULL THEN 'missing_occurred_at'
        WHEN client_id IS NULL AND user_id IS NULL THEN 'no_identity'
        WHEN {_dedupe("occurred_at__parsed DESC")} THEN 'duplicate_in_partition'
    END AS quarantine_reason
FROM standardised
"""

RULES = {"contacts": CONTACTS, "orders": ORDERS, "email_events": EMAIL_EVENTS, "web_events": WEB_EVENTS}

# Columns that get a ``<column>__parsed`` typed twin in ``_cdm_mapped`` (type per kind).
PARSED_COLUMNS = {
    "contacts": {"birth_date": "DATE", "created_at": "TIMESTAMPTZ", "updated_at": "TIMESTAMPTZ"},
    "orders": {"order_date": "TIMESTAMPTZ", "amount": "DECIMAL(18, 2)"},
    "email_events": {"occurred_at": "TIMESTAMPTZ"},
    "web_events": {"occurred_at": "TIMESTAMPTZ", "value": "DOUBLE"},
}
