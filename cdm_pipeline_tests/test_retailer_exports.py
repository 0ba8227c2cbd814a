"""A UK online retailer's exports, as the tools write them, through `cdm run` (issue 18).

Eleven sources — HubSpot and Salesforce contacts, Shopify orders and customers, Stripe
customers and charges, Mailchimp's audience export and email-activity report, Klaviyo profiles
and events, and the GA4 BigQuery export — each declared by its preset plus a name, in one
config with one identity line. No file is touched by hand (export_fixtures/ writes them as the
tools do). One real run in a subprocess; then an erasure through the real CLI.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline_tests.conftest import write_config
from cdm_pipeline_tests.export_fixtures import csv_tools, nested_tools
from cdm_pipeline_tests.export_fixtures.people import PEOPLE
from cdm_pipeline_tests.run_fixtures import cdm

pytestmark = pytest.mark.slow

DAY = dt.date(2024, 4, 2)
WRITERS = {**csv_tools.WRITERS, **nested_tools.WRITERS}
EXPECTED = {**csv_tools.EXPECTED, **nested_tools.expected(DAY)}
KEY = "0123456789abcdef0123456789abcdef"  # the privacy key of this test's warehouse only

# The whole config a user writes: presets, names, and the one fact no export says (GA4's
# user_id is the shop's customer id).
CONFIG = """\
warehouse: wh/cdm.duckdb
landing_dir: landing
sources:
""" + "".join(f"  - {{name: {name}, preset: {name}}}\n" for name in WRITERS) + """\
identity:
  same_ids:
    - {source: ga4_bigquery, column: user_id, equals: shopify_customers}
"""


@pytest.fixture(scope="module")
def retailer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("retailer")
    for write in WRITERS.values():
        write(folder / "landing", DAY)
    config = write_config(folder, CONFIG)
    result = cdm("run", "--config", str(config), "--date", DAY.isoformat(), CDM_PRIVACY_KEY=KEY)
    return folder, config, result


def _query(folder: Path, sql: str, params=None) -> list[tuple]:
    conn = duckdb.connect(str(folder / "wh" / "cdm.duckdb"), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def test_every_export_loads_as_exported_and_nothing_is_lost(retailer):
    folder, _, result = retailer
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "0 critical failures" in result.stdout
    raw = {name: _query(folder, f"SELECT count(*) FROM raw.{name}")[0][0] for name in WRITERS}
    rejects = {name: _query(folder, f"SELECT count(*) FROM quarantine.{name}_rejects")[0][0] for name in WRITERS}
    assert rejects == {name: 0 for name in WRITERS}
    assert raw["shopify_orders"] == EXPECTED["shopify_orders"]["line_item_rows"]
    assert raw["mailchimp_activity"] == EXPECTED["mailchimp_activity"]["members"]
    assert raw["ga4_bigquery"] == EXPECTED["ga4_bigquery"]["events"]
    staged = dict(_query(folder, """
        SELECT source_name, count(*) FROM (
            SELECT source_name FROM staging.contacts WHERE source_name NOT IN ('shopify_orders', 'stripe_charges')
            UNION ALL SELECT source_name FROM staging.orders
            UNION ALL SELECT source_name FROM staging.email_events
            UNION ALL SELECT source_name FROM staging.web_events) GROUP BY 1"""))
    assert staged == {
        "hubspot_contacts": EXPECTED["hubspot_contacts"]["records"],
        "salesforce_contacts": EXPECTED["salesforce_contacts"]["records"],
        "shopify_customers": EXPECTED["shopify_customers"]["records"],
        "stripe_customers": EXPECTED["stripe_customers"]["records"],
        "shopify_orders": EXPECTED["shopify_orders"]["orders"],  # 11 line items, 5 orders
        "stripe_charges": EXPECTED["stripe_charges"]["records"],
        "mailchimp_audience": EXPECTED["mailchimp_audience"]["records"],
        "mailchimp_activity": EXPECTED["mailchimp_activity"]["events"],  # 8 members, 9 actions
        "klaviyo_profiles": EXPECTED["klaviyo_profiles"]["records"],
        "klaviyo_events": EXPECTED["klaviyo_events"]["events"],
        "ga4_bigquery": EXPECTED["ga4_bigquery"]["events"],
    }
    held = _query(folder, """SELECT source_name, quarantine_reason, count(*) FROM (
        SELECT source_name, quarantine_reason FROM quarantine.contacts UNION ALL
        SELECT source_name, quarantine_reason FROM quarantine.orders UNION ALL
        SELECT source_name, quarantine_reason FROM quarantine.email_events UNION ALL
        SELECT source_name, quarantine_reason FROM quarantine.web_events) GROUP BY ALL""")
    assert held == []
    # Buyers of orders and charges are contact records of their own source.
    buyers = dict(_query(folder, "SELECT source_name, count(*) FROM staging.contacts"
                                 " WHERE source_name IN ('shopify_orders', 'stripe_charges') GROUP BY 1"))
    assert buyers == {"shopify_orders": 5, "stripe_charges": EXPECTED["stripe_charges"]["records"]}


def test_one_customer_per_person_across_the_tools(retailer):
    folder, _, result = retailer
    assert result.returncode == 0
    by_email = {p.email: p.key for p in PEOPLE}
    rows = _query(folder, """
        SELECT c.email, x.customer_id, c.source_name FROM staging.contacts c
        JOIN identity.customer_xref x USING (source_name, source_record_id) WHERE c.email IS NOT NULL""")
    customers: dict[str, set[str]] = {}
    sources: dict[str, set[str]] = {}
    for email, customer_id, source in rows:
        if email in by_email:
            customers.setdefault(by_email[email], set()).add(customer_id)
            sources.setdefault(by_email[email], set()).add(source)
    # Amelia is in HubSpot, Salesforce, Shopify (customer and two orders), Stripe, Mailchimp and
    # Klaviyo: every record of hers is one customer, and every person is one customer.
    assert len(sources["p01"]) >= 6
    assert {key: len(ids) for key, ids in customers.items()} == {key: 1 for key in customers}
    assert len({next(iter(ids)) for ids in customers.values()}) == len(customers)
    # Her two Shopify orders belong to her customer.
    orders = _query(folder, """SELECT DISTINCT x.customer_id FROM staging.orders o
        JOIN identity.customer_xref x ON x.source_name = o.source_name AND x.source_record_id = o.contact_id
        WHERE o.source_name = 'shopify_orders' AND o.source_record_id IN ('#1001', '#1004')""")
    assert orders == [(next(iter(customers["p01"])),)]


def test_an_erased_buyer_leaves_no_line_item_behind(retailer):
    folder, config, result = retailer
    assert result.returncode == 0
    email = next(p.email for p in PEOPLE if p.key == "p01")

    def rows_holding_her() -> dict[str, int]:
        counts = {}
        for name in WRITERS:
            columns = [r[0] for r in _query(folder, "SELECT column_name FROM information_schema.columns"
                                                    " WHERE table_schema = 'raw' AND table_name = ?", [name])]
            text = " || '|' || ".join(f"coalesce(lower(\"{c}\"::VARCHAR), '')" for c in columns)
            counts[name] = _query(folder, f"SELECT count(*) FROM raw.{name} WHERE contains({text}, ?)", [email])[0][0]
        return {name: n for name, n in counts.items() if n}

    before = rows_holding_her()
    assert before["shopify_orders"] == 6  # her two orders, three line items each
    erased = cdm("privacy", "erase", "--email", email, "--config", str(config), CDM_PRIVACY_KEY=KEY)
    assert erased.returncode == 0, erased.stdout + erased.stderr
    assert email not in erased.stdout + erased.stderr
    assert rows_holding_her() == {}
