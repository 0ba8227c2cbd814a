"""Expectation suites for the staging tables, as plain data (no Great Expectations import here).

Each :class:`ExpectationSpec` names one Great Expectations (GX 1.x) expectation class, its
keyword arguments, a stable ``key`` (one Dagster asset check per spec), a severity and a sentence
for governance staff. ``validate.py`` turns the specs into a GX suite at validation time.

Severities:

* ``critical``: failing it blocks downstream assets (identity resolution, golden records).
  Row-level critical problems (no record id, no date, negative amount, no identity) are already
  moved to quarantine by staging, so most critical expectations here are guards that normally
  pass; the ``mostly=0.9`` syntax checks catch a broken export where many values are garbled.
* ``warning``: reported, never blocking. Several ``warning`` expectations are the ``mostly=1.0``
  twin of a ``critical`` one, so every single invalid value is still counted.

Notes on GX semantics that shape these specs:

* Map expectations (regex, in-set, between, ...) skip nulls: "email syntax is valid" says
  nothing about missing emails; missing values are checked by separate not-null expectations.
* Date/time bounds are resolved to real datetimes at validation time (``TODAY`` below), never
  date strings.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pycountry

__all__ = [
    "COUNTRY_CODES",
    "CRITICAL",
    "CURRENCY_CODES",
    "EMAIL_REGEX",
    "ExpectationSpec",
    "E164_REGEX",
    "SEVERITIES",
    "SUITES",
    "TODAY",
    "WARNING",
    "WhereNull",
]

CRITICAL = "critical"
WARNING = "warning"
SEVERITIES = (CRITICAL, WARNING)

EMAIL_REGEX = (
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
"""Syntax of a deliverable email address, as the quality checks accept it.

A pragmatic subset of RFC 5322: an ASCII local part of dot-separated atoms (letters, digits and
``!#$%&'*+/=?^_`{|}~-``; no leading, trailing or double dot, no quoted strings), one ``@``, then
a host of one or more DNS labels (letters, digits, inner hyphens, at most 63 characters each)
ending in an alphabetic top-level domain of 2 to 63 letters. Rejects ``n/a``, ``john@``,
``john@@example.com``, ``john@localhost``, ``john@example`` and addresses with spaces; does not
check that the domain exists. Internationalised (non-ASCII) addresses are rejected: staging does
not produce them.

It uses only syntax that Python's ``re`` and RE2 (pyarrow, which pandas 3 uses for its ``str``
columns) read the same way, so the result does not depend on the column's dtype. One difference
remains: with Python's ``re``, ``$`` also matches before a final newline; staging trims values,
so none has one.
"""

E164_REGEX = r"^\+[1-9][0-9]{6,14}$"
"""An E.164 phone number: ``+``, a country code not starting with 0, 7 to 15 digits in all.

``[0-9]`` rather than ``\\d`` so that non-ASCII digits never count (Python's ``\\d`` would accept
them; RE2's would not).
"""

COUNTRY_CODES: tuple[str, ...] = tuple(sorted(country.alpha_2 for country in pycountry.countries))
"""ISO 3166-1 alpha-2 codes, from pycountry's list (officially assigned codes only)."""

CURRENCY_CODES: tuple[str, ...] = tuple(sorted(currency.alpha_3 for currency in pycountry.currencies))
"""ISO 4217 alphabetic currency codes, from pycountry's list."""

ORDER_STATUSES = ("completed", "pending", "cancelled", "refunded")
# A spam complaint is its own type: the ESPs report it apart from an unsubscribe (Klaviyo's
# "Marked Email as Spam", Mailchimp's abuse reports) and it suppresses the address the same way.
EMAIL_EVENT_TYPES = ("sent", "delivered", "open", "click", "bounce", "unsubscribe", "spam_complaint")
BOUNCE_TYPES = ("hard", "soft")
# Google Analytics 4's standard event names: collected automatically, by enhanced measurement,
# and the recommended ones (online sales, lead generation, all properties), as listed in
# https://support.google.com/analytics/answer/9234069 and
# https://developers.google.com/analytics/devguides/collection/ga4/reference/events .
# Other tools' names map onto these with a source's `values:`.
WEB_EVENT_NAMES = (
    # automatically collected (web)
    "click", "file_download", "first_visit", "form_start", "form_submit", "page_view", "scroll",
    "session_start", "user_engagement", "video_complete", "video_progress", "video_start",
    "view_search_results",
    # recommended: all properties, lead generation, online sales
    "ad_impression", "earn_virtual_currency", "generate_lead", "join_group", "login", "search",
    "select_content", "share", "sign_up", "spend_virtual_currency", "tutorial_begin",
    "tutorial_complete", "close_convert_lead", "close_unconvert_lead", "disqualify_lead",
    "qualify_lead", "working_lead", "add_payment_info", "add_shipping_info", "add_to_cart",
    "add_to_wishlist", "begin_checkout", "purchase", "refund", "remove_from_cart", "select_item",
    "select_promotion", "view_cart", "view_item", "view_item_list", "view_promotion",
)
DEVICE_CATEGORIES = ("desktop", "mobile", "tablet", "smart tv")

EARLIEST_BIRTH_DATE = dt.datetime(1900, 1, 1)
ORDER_AMOUNT_OUTLIER = 100_000
PARTITION_KEY = ("source_name", "source_record_id", "_partition_date")


class _Today:
    """Placeholder for a bound that is "today" on the day the suite runs (resolved by validate)."""

    _instance: _Today | None = None

    def __new__(cls) -> _Today:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "TODAY"

    def __reduce__(self) -> str:
        return "TODAY"


TODAY = _Today()
"""Bound placeholder: the validation day (UTC) at midnight, so the suite never goes stale."""


@dataclass(frozen=True)
class WhereNull:
    """Row condition placeholder: only rows where ``column`` is null are checked.

    Resolved to GX's ``Column(column).is_null()`` condition when the suite is built, so this
    module does not import Great Expectations.
    """

    column: str


@dataclass(frozen=True)
class ExpectationSpec:
    """One expectation on one staging table."""

    key: str
    """Stable check name, snake_case, unique within a table (the Dagster asset check name)."""
    gx_type: str
    """GX expectation class name, e.g. ``ExpectColumnValuesToMatchRegex``."""
    kwargs: dict[str, Any] = field(hash=False)
    """GX keyword arguments (``column``, ``mostly``, ``regex``, ``value_set``, ``min_value``, ...)."""
    severity: str
    """``critical`` (blocks downstream) or ``warning``."""
    description: str
    """One sentence for governance staff: what it checks and why it matters."""

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"{self.key}: severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns the expectation reads, in kwargs order (so callers load only those)."""
        names: list[str] = []
        for name in ("column", "column_A", "column_B"):
            if name in self.kwargs:
                names.append(self.kwargs[name])
        names.extend(self.kwargs.get("column_list", ()))
        condition = self.kwargs.get("row_condition")
        if isinstance(condition, WhereNull):
            names.append(condition.column)
        return tuple(dict.fromkeys(names))


def _spec(key: str, gx_type: str, severity: str, description: str, **kwargs: Any) -> ExpectationSpec:
    return ExpectationSpec(key=key, gx_type=gx_type, kwargs=kwargs, severity=severity, description=description)


def _record_id_not_null(table: str) -> ExpectationSpec:
    return _spec(
        "record_id_not_null", "ExpectColumnValuesToNotBeNull", CRITICAL,
        f"Every {table} row carries the id it has in its source system; rows without one are "
        "quarantined by staging, so a failure means that guard broke and records cannot be traced.",
        column="source_record_id",
    )


def _record_id_unique(table: str) -> ExpectationSpec:
    return _spec(
        "record_id_unique_in_partition", "ExpectCompoundColumnsToBeUnique", CRITICAL,
        f"A source record appears at most once per {table} partition (source, record id, day); "
        "duplicates would double-count records and merge the wrong people.",
        column_list=list(PARTITION_KEY),
    )


def _not_null(key: str, column: str, severity: str, description: str, **kwargs: Any) -> ExpectationSpec:
    return _spec(key, "ExpectColumnValuesToNotBeNull", severity, description, column=column, **kwargs)


def _email_syntax_all_valid(what: str) -> ExpectationSpec:
    return _spec(
        "email_syntax_all_valid", "ExpectColumnValuesToMatchRegex", WARNING,
        f"Every email address present on {what} has a valid syntax; each invalid one is counted "
        "so the source can be corrected (missing emails are not counted here).",
        column="email", regex=EMAIL_REGEX, mostly=1.0,
    )


def _in_set(key: str, column: str, values: tuple[str, ...], severity: str, description: str) -> ExpectationSpec:
    return _spec(key, "ExpectColumnValuesToBeInSet", severity, description, column=column, value_set=list(values))


CONTACTS = (
    _record_id_not_null("contacts"),
    _record_id_unique("contacts"),
    _spec(
        "email_syntax_mostly_valid", "ExpectColumnValuesToMatchRegex", CRITICAL,
        "At least 90% of the email addresses present have a valid syntax; fewer means a broken "
        "or garbled export, and identity resolution must not run on it.",
        column="email", regex=EMAIL_REGEX, mostly=0.9,
    ),
    _spec(
        "phone_e164_mostly_valid", "ExpectColumnValuesToMatchRegex", CRITICAL,
        "At least 90% of the phone numbers present are in international E.164 form (+ and "
        "digits); fewer means the export or phone standardisation broke, which would spoil matching.",
        column="phone", regex=E164_REGEX, mostly=0.9,
    ),
    _email_syntax_all_valid("contacts"),
    _spec(
        "phone_e164_all_valid", "ExpectColumnValuesToMatchRegex", WARNING,
        "Every phone number present is in international E.164 form; each one that could not be "
        "standardised is counted so the source can be corrected.",
        column="phone", regex=E164_REGEX, mostly=1.0,
    ),
    _in_set(
        "country_iso_alpha2", "country", COUNTRY_CODES, WARNING,
        "Every country present is a two-letter ISO 3166-1 code; other spellings could not be "
        "recognised and weaken address matching and regional reporting.",
    ),
    _spec(
        "birth_date_plausible", "ExpectColumnValuesToBeBetween", WARNING,
        "Every birth date present lies between 1900-01-01 and today; others are typos or "
        "placeholders and must not be used for matching or age segments.",
        column="birth_date", min_value=EARLIEST_BIRTH_DATE, max_value=TODAY,
    ),
    _not_null(
        "first_name_mostly_present", "first_name", WARNING,
        "At least 90% of contacts have a first name; a lower share suggests a mapping or export "
        "problem and weakens name-based matching.",
        mostly=0.9,
    ),
    _not_null(
        "last_name_mostly_present", "last_name", WARNING,
        "At least 90% of contacts have a last name; a lower share suggests a mapping or export "
        "problem and weakens name-based matching.",
        mostly=0.9,
    ),
    _spec(
        "updated_not_before_created", "ExpectColumnPairValuesAToBeGreaterThanB", WARNING,
        "A contact is never last updated before it was created (rows missing either time are "
        "skipped); otherwise the source clock or export is wrong and 'latest value wins' rules mislead.",
        column_A="updated_at", column_B="created_at", or_equal=True,
        ignore_row_if="either_value_is_missing",
    ),
)

ORDERS = (
    _record_id_not_null("orders"),
    _record_id_unique("orders"),
    _not_null(
        "order_date_not_null", "order_date", CRITICAL,
        "Every order has a date; undated orders are quarantined by staging, and without a date "
        "revenue and recency cannot be computed.",
    ),
    _not_null(
        "amount_not_null", "amount", CRITICAL,
        "Every order has an amount; orders without one are quarantined by staging, and a gap "
        "here would understate revenue.",
    ),
    _spec(
        "amount_non_negative", "ExpectColumnValuesToBeBetween", CRITICAL,
        "No order amount is negative; negative amounts are quarantined by staging (refunds are "
        "a status, not a negative order), so a failure means that guard broke.",
        column="amount", min_value=0,
    ),
    _in_set(
        "currency_iso4217", "currency", CURRENCY_CODES, WARNING,
        "Every currency present is an ISO 4217 code; unknown currencies cannot be converted and "
        "such orders drop out of revenue figures.",
    ),
    _in_set(
        "status_known", "status", ORDER_STATUSES, WARNING,
        "Every order status is completed, pending, cancelled or refunded; an unknown status "
        "means a new source value that revenue rules do not handle yet.",
    ),
    _not_null(
        "contact_id_mostly_present", "contact_id", WARNING,
        "At least 99% of orders name the customer who placed them; more anonymous orders mean "
        "the shop export lost its customer link and orders cannot be attributed.",
        mostly=0.99,
    ),
    _spec(
        "amount_below_outlier_limit", "ExpectColumnValuesToBeBetween", WARNING,
        f"No order exceeds {ORDER_AMOUNT_OUTLIER:,} in its currency; larger amounts are likely "
        "typos or test orders that would distort revenue and customer value.",
        column="amount", max_value=ORDER_AMOUNT_OUTLIER,
    ),
    _email_syntax_all_valid("orders"),
)

EMAIL_EVENTS = (
    _record_id_not_null("email_events"),
    _record_id_unique("email_events"),
    _not_null(
        "occurred_at_not_null", "occurred_at", CRITICAL,
        "Every email event has a timestamp; untimed events are quarantined by staging and could "
        "not be placed in a customer journey.",
    ),
    _not_null(
        "identity_present", "subscriber_id", CRITICAL,
        "Every email event names its subscriber by id or by email address; events without either "
        "are quarantined by staging and could not be linked to any person.",
        row_condition=WhereNull("email"),
    ),
    _in_set(
        "event_type_known", "event_type", EMAIL_EVENT_TYPES, WARNING,
        "Every event type is sent, delivered, open, click, bounce, unsubscribe or spam_complaint;"
        " another value means a new source event that engagement metrics ignore (map it with"
        " the source's values:).",
    ),
    _email_syntax_all_valid("email events"),
    _in_set(
        "bounce_type_known", "bounce_type", BOUNCE_TYPES, WARNING,
        "Every bounce type present is hard or soft; only a recognised hard bounce marks an "
        "address as undeliverable.",
    ),
)

WEB_EVENTS = (
    _record_id_not_null("web_events"),
    _record_id_unique("web_events"),
    _not_null(
        "occurred_at_not_null", "occurred_at", CRITICAL,
        "Every web event has a timestamp; untimed events are quarantined by staging and could "
        "not be placed in a session or journey.",
    ),
    _not_null(
        "identity_present", "client_id", CRITICAL,
        "Every web event carries a browser client id or a logged-in user id; events without "
        "either are quarantined by staging and could not be linked to any visitor.",
        row_condition=WhereNull("user_id"),
    ),
    _in_set(
        "event_name_known", "event_name", WEB_EVENT_NAMES, WARNING,
        "Every event name is a standard GA4 event name (page_view, session_start, view_item,"
        " add_to_cart, begin_checkout, purchase, ...); another value is a custom event the"
        " journeys do not place on a funnel stage (map it with the source's values:).",
    ),
    _spec(
        "value_non_negative", "ExpectColumnValuesToBeBetween", WARNING,
        "No event value is negative; negative values are tracking errors that would distort "
        "web revenue.",
        column="value", min_value=0,
    ),
    _email_syntax_all_valid("web events"),
    _in_set(
        "device_category_known", "device_category", DEVICE_CATEGORIES, WARNING,
        "Every device category present is desktop, mobile, tablet or smart tv (GA4's"
        " categories); another value means the tracking setup changed.",
    ),
    _in_set(
        "currency_iso4217", "currency", CURRENCY_CODES, WARNING,
        "Every currency present is an ISO 4217 code; unknown currencies cannot be converted and "
        "such purchases drop out of web revenue.",
    ),
    _in_set(
        "country_iso_alpha2", "country", COUNTRY_CODES, WARNING,
        "Every country present is a two-letter ISO 3166-1 code; other spellings could not be "
        "recognised and weaken regional reporting.",
    ),
)

SUITES: dict[str, tuple[ExpectationSpec, ...]] = {
    "contacts": CONTACTS,
    "orders": ORDERS,
    "email_events": EMAIL_EVENTS,
    "web_events": WEB_EVENTS,
}
"""The expectation suite of each staging table, keyed by table name."""


def _check_unique_keys() -> None:
    for table, specs in SUITES.items():
        keys = [spec.key for spec in specs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise ValueError(f"suite {table!r} repeats check keys: {duplicates}")


_check_unique_keys()
