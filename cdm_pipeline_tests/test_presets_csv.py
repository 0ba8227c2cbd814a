"""The CSV tools' presets (HubSpot, Salesforce, Shopify, Stripe) on files shaped like their exports.

First the presets as config: what a source naming one gets, and that the source's own keys win.
Then the fixture files themselves (bytes as the tools write them, headers the presets read).
Then each export loaded and staged in-process on a real DuckDB file, with the staged values
checked: records, UTC times, amounts, statuses, split names, E.164 phones, consent, nothing held
back that should load. The people are fictional (export_fixtures/people.py).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from pathlib import Path

import pytest

from cdm_pipeline.config import ColumnSpec, load_config
from cdm_pipeline.presets import preset
from cdm_pipeline_tests.conftest import write_config
from cdm_pipeline_tests.export_fixtures import csv_tools
from cdm_pipeline_tests.export_fixtures.csv_tools import EXPECTED, STRIPE_CUSTOMER_IDS, WRITERS
from cdm_pipeline_tests.export_fixtures.people import PEOPLE

PRESETS = tuple(WRITERS)
DAY = dt.date(2024, 4, 2)  # British Summer Time: London is UTC+1
LOADED_AT = dt.datetime(2024, 4, 3, 2, 0, tzinfo=dt.timezone.utc)
P = {p.key: p for p in PEOPLE}
EMAIL_TO_KEY = {p.email: p.key for p in PEOPLE}


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def _config(tmp_path: Path, sources: str):
    text = f"warehouse: warehouse/cdm.duckdb\nlanding_dir: landing\ntimezone: UTC\nsources:\n{sources}"
    return load_config(write_config(tmp_path, text))


def _source(tmp_path: Path, name: str, extra: str = ""):
    return _config(tmp_path, f"  - {{name: src, preset: {name}{extra}}}\n").source("src")


# --- The presets as config -----------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_cites_its_documentation_and_describes_itself(name):
    document = preset(name)
    assert isinstance(document["description"], str) and document["description"].endswith(".")
    assert document["documentation"] and all(u.startswith("https://") for u in document["documentation"])
    # The writer's module cites the same pages.
    assert [u for u in document["documentation"] if u not in (csv_tools.__doc__ or "")] == []


@pytest.mark.parametrize(
    "name, kind, id_column, path",
    [
        ("hubspot_contacts", "contacts", "Record ID", "hubspot/contacts/{date}/*.csv"),
        ("salesforce_contacts", "contacts", "Contact ID", "salesforce/contacts/{date}/*.csv"),
        ("shopify_orders", "orders", "Name", "shopify/orders/{date}/*.csv"),
        ("shopify_customers", "contacts", "Customer ID", "shopify/customers/{date}/*.csv"),
        ("stripe_customers", "contacts", "id", "stripe/customers/{date}/*.csv"),
        ("stripe_charges", "orders", "id", "stripe/charges/{date}/*.csv"),
    ],
)
def test_a_source_naming_a_preset_gets_its_kind_id_and_path(tmp_path, name, kind, id_column, path):
    source = _source(tmp_path, name)
    assert (source.preset, source.kind, source.format, source.id_column, source.path) == (
        name, kind, "csv", id_column, path
    )


def test_hubspot_reads_portal_local_times_and_takes_consent_only_from_the_unsubscribe_box(tmp_path):
    source = _source(tmp_path, "hubspot_contacts")
    assert source.timezone == "Europe/London"
    assert source.column_spec("created_at") == ColumnSpec(column="Create Date", format="%Y-%m-%d %H:%M")
    opt_in = source.column_spec("email_opt_in")
    assert opt_in.column == "Unsubscribed from all email" and not opt_in.required
    assert opt_in.values == {"yes": False, "true": False, "no": None, "false": None}
    # The billing flag is not consent.
    assert all(spec.column != "Marketing contact status" for spec in source.mapped.values())


def test_salesforce_reads_uk_dates_in_iso_8859_1(tmp_path):
    source = _source(tmp_path, "salesforce_contacts")
    assert source.encoding == "latin-1"
    assert source.column_spec("birth_date").format == "%d/%m/%Y"
    assert source.column_spec("created_at").format == "%d/%m/%Y"
    assert source.column_spec("email_opt_in").values["1"] is False
    assert source.column_spec("email_opt_in").values["0"] is None


def test_shopify_orders_group_line_items_by_order_name_and_name_their_buyer(tmp_path):
    source = _source(tmp_path, "shopify_orders")
    assert source.group_rows and source.id_column == "Name"
    assert source.column_spec("order_date").format == "%Y-%m-%d %H:%M:%S %z"
    assert source.column_spec("status").values == {
        "paid": "completed", "partially_refunded": "completed", "refunded": "refunded",
        "pending": "pending", "authorized": "pending", "partially_paid": "pending",
        "voided": "cancelled", "expired": "cancelled",
    }
    assert source.column_spec("first_name") == ColumnSpec(column="Billing Name", name_part="first")
    assert source.column_spec("last_name") == ColumnSpec(column="Billing Name", name_part="last")
    assert source.column_spec("email_opt_in").values == {"yes": True, "no": None}
    assert source.carries_identity
    # No customer id in the export: the order's buyer is a contact record of the source itself.
    config = _config(tmp_path, "  - {name: shop, preset: shopify_orders}\n")
    assert config.linked_contacts_sources(config.source("shop")) == ["shop"]
    assert [s.name for s in config.sources_staged_as("contacts")] == ["shop"]


def test_shopify_customers_consent_is_yes_or_nothing(tmp_path):
    source = _source(tmp_path, "shopify_customers")
    assert source.column_spec("email_opt_in") == ColumnSpec(
        column="Accepts Email Marketing", values={"yes": True, "no": None}
    )
    assert source.column_spec("country").column == "Default Address Country Code"


def test_stripe_exports_are_utc_and_charges_refer_to_stripe_customers(tmp_path):
    config = _config(
        tmp_path,
        "  - {name: stripe_customers, preset: stripe_customers}\n"
        "  - {name: stripe_charges, preset: stripe_charges}\n",
    )
    customers, charges = config.source("stripe_customers"), config.source("stripe_charges")
    assert customers.timezone == charges.timezone == "UTC"
    assert customers.column_spec("created_at").format == "%Y-%m-%d %H:%M"
    assert charges.column_spec("order_date").format == "%Y-%m-%d %H:%M:%S"
    assert customers.column_spec("first_name").name_part == "first"
    assert charges.column_spec("first_name") == ColumnSpec(column="Card Name", name_part="first", required=False)
    assert charges.column_spec("status").values["partially refunded"] == "completed"
    assert charges.column_spec("status").values["failed"] == "cancelled"
    assert config.linked_contacts_sources(charges) == ["stripe_customers"]


def test_the_sources_own_keys_win_over_the_presets(tmp_path):
    source = _source(
        tmp_path, "hubspot_contacts",
        ", timezone: America/New_York, path: 'crm/{date}/contacts-*.csv',"
        " columns: {phone: Mobile Phone Number, company: null,"
        " created_at: {column: Create Date, format: '%d/%m/%Y %H:%M'}}",
    )
    assert source.timezone == "America/New_York"
    assert source.path == "crm/{date}/contacts-*.csv"
    assert source.column_spec("phone") == ColumnSpec(column="Mobile Phone Number")
    assert "company" not in source.mapped  # unmapped by the source
    assert source.column_spec("created_at").format == "%d/%m/%Y %H:%M"
    # Columns the source does not name keep the preset's mapping.
    assert source.column_spec("email") == ColumnSpec(column="Email")
    assert source.column_spec("email_opt_in").column == "Unsubscribed from all email"
    assert source.id_column == "Record ID" and source.kind == "contacts"


def test_a_user_can_switch_the_salesforce_preset_to_utf8_and_us_dates(tmp_path):
    source = _source(
        tmp_path, "salesforce_contacts",
        ", encoding: utf-8, columns: {birth_date: {column: Birthdate, format: '%m/%d/%Y'}}",
    )
    assert source.encoding == "utf-8"
    assert source.column_spec("birth_date").format == "%m/%d/%Y"
    assert source.column_spec("created_at").format == "%d/%m/%Y"  # not overridden


# --- The fixture files ---------------------------------------------------------------------------


def _written(tmp_path: Path, name: str) -> bytes:
    (path,) = WRITERS[name](tmp_path / "landing", DAY)
    source = _source(tmp_path, name)
    assert path.match(str(source.glob_for(tmp_path / "landing", DAY)))
    return path.read_bytes()


@pytest.mark.parametrize("name", PRESETS)
def test_each_file_lands_at_its_presets_path_with_every_column_the_preset_reads(tmp_path, name):
    data = _written(tmp_path, name)
    source = _source(tmp_path, name)
    text = data.decode(source.encoding).removeprefix("\ufeff")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    missing = [c for c in source.mapped_source_columns + source.optional_source_columns if c not in header]
    assert missing == []
    assert all(len(row) == len(header) for row in rows)
    assert len(rows) - 1 == EXPECTED[name]["rows"]


def test_hubspot_file_has_a_bom_crlf_line_ends_and_every_field_quoted(tmp_path):
    data = _written(tmp_path, "hubspot_contacts")
    assert data.startswith(b"\xef\xbb\xbf\"Record ID\",")
    lines = data[3:].split(b"\r\n")
    assert lines[-1] == b"" and b"\n" not in b"".join(lines)
    width = len(csv_tools.HUBSPOT_HEADER)
    for line in lines[:-1]:
        assert line.startswith(b'"') and line.endswith(b'"') and line.count(b'","') == width - 1


def test_salesforce_file_is_iso_8859_1_fully_quoted_with_a_two_line_street(tmp_path):
    data = _written(tmp_path, "salesforce_contacts")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    text = data.decode("latin-1")
    assert not text.startswith("\ufeff") and '"Zoë","Ó Briain"' in text
    assert '"58 Glen Road\nUpper Flat"' in text
    assert text.startswith('"Contact ID","First Name","Last Name","Email","Phone","Mobile",')


def test_shopify_orders_file_has_order_fields_on_each_orders_first_row_only(tmp_path):
    data = _written(tmp_path, "shopify_orders")
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r" not in data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert len(rows) == EXPECTED["shopify_orders"]["line_item_rows"]
    assert len({r["Name"] for r in rows}) == EXPECTED["shopify_orders"]["orders"]
    first_rows = [r for i, r in enumerate(rows) if i == 0 or rows[i - 1]["Name"] != r["Name"]]
    others = [r for r in rows if r not in first_rows]
    assert all(r["Financial Status"] and r["Total"] and r["Billing Name"] for r in first_rows)
    assert all(not r["Financial Status"] and not r["Total"] and not r["Billing Name"] and not r["Id"] for r in others)
    assert all(r["Email"] and r["Created at"] and r["Lineitem name"] for r in rows)
    assert b'"Enamel Mug, Large"' in data  # quoted only where a value needs it
    assert data.startswith(b"Name,Email,Financial Status,Paid at,")
    header = data.split(b"\n", 1)[0].decode().split(",")
    assert len(header) == 79 and header[-1] == "Payment References"


def test_shopify_customers_file_keeps_shopifys_apostrophes(tmp_path):
    data = _written(tmp_path, "shopify_customers").decode("utf-8")
    assert data.startswith("Customer ID,First Name,Last Name,Email,Accepts Email Marketing,")
    assert "'7406721040531,Amelia" in data and ",'+441134960101," in data


# --- Loaded and staged ---------------------------------------------------------------------------


def _stage(tmp_path: Path, name: str, kinds: tuple[str, ...], extra: str = ""):
    """Write the fixture, load it and stage ``kinds``; the connection and the partition's counts."""
    from cdm_pipeline.lib.extract.load import load_partition
    from cdm_pipeline.lib.staging.build import stage_partition
    from cdm_pipeline.lib.warehouse import connect

    config = _config(tmp_path, f"  - {{name: {name}, preset: {name}{extra}}}\n")
    WRITERS[name](config.landing_dir, DAY)
    conn = connect(config.warehouse)
    loaded = load_partition(conn, config.source(name), config.landing_dir, DAY, LOADED_AT, config=config)
    assert (loaded.rows, loaded.rejects) == (EXPECTED[name]["rows"], 0)
    staged = {kind: stage_partition(conn, config, kind, DAY) for kind in kinds}
    for kind, result in staged.items():
        assert (result.quarantined, result.quarantine_reasons) == (0, {}), kind
        # Every date, amount and yes/no value the file holds parsed: (values, unparsed) per column.
        unparsed = {(loss.source, c): n for loss in result.losses for c, (_, n) in loss.unparsed.items() if n}
        assert unparsed == {}, kind
    return conn, staged


def _rows(conn, kind: str, columns: str, source: str) -> dict[str, tuple]:
    """Staged rows of one source by record id."""
    rows = conn.execute(
        f"SELECT source_record_id, {columns} FROM staging.{kind} WHERE source_name = ?"
        " AND _partition_date = ?", [source, DAY]
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def _flags(conn, kind: str, source: str) -> set[str]:
    rows = conn.execute(
        f"SELECT DISTINCT unnest(quality_flags) FROM staging.{kind} WHERE source_name = ?", [source]
    ).fetchall()
    return {r[0] for r in rows}


def test_hubspot_contacts_stage_with_portal_times_in_utc_e164_phones_and_the_unsubscribe(tmp_path):
    conn, staged = _stage(tmp_path, "hubspot_contacts", ("contacts",))
    assert staged["contacts"].staged == EXPECTED["hubspot_contacts"]["records"]
    rows = _rows(
        conn, "contacts",
        "first_name, last_name, email, phone, country, email_opt_in, created_at, updated_at, company",
        "hubspot_contacts",
    )
    assert rows["51234567801"] == (
        "Amelia", "Hughes", "amelia.hughes@btinternet.com", "+441134960101", "GB", None,
        utc(2023, 11, 14, 9, 5), utc(2024, 4, 2, 7, 15), None,  # GMT in November, BST in April
    )
    # The nickname stays (identity links it); the capitals of the e-mail do not.
    assert rows["51234567802"][:4] == ("Ollie", "Bennett", "oliver.bennett@mailbox.org", "+441134960102")
    assert rows["51234567802"][6] == utc(2023, 7, 3, 15, 40)
    assert rows["51234567803"][:5] == ("Zoë", "Ó Briain", "zoe.obriain@eircom.net", "+441134960103", "GB")
    assert rows["51234567804"][3] is None and rows["51234567804"][8] == "Khan Logistics Ltd"  # mobile only
    assert rows["51234567806"][3] == "+441134960106"
    assert rows["51234567809"][3] is None
    assert rows["51234567812"][:2] == ("Renée", "Müller")
    # Only the ticked "Unsubscribed from all email" states anything; "No" is no statement.
    assert {k: r[5] for k, r in rows.items() if r[5] is not None} == {"51234567805": False}
    assert _flags(conn, "contacts", "hubspot_contacts") == set()


def test_a_hubspot_portal_in_another_time_zone_overrides_the_presets(tmp_path):
    conn, _ = _stage(tmp_path, "hubspot_contacts", ("contacts",), ", timezone: America/New_York")
    rows = _rows(conn, "contacts", "created_at", "hubspot_contacts")
    assert rows["51234567801"] == (utc(2023, 11, 14, 14, 5),)  # EST, UTC-5
    assert rows["51234567802"] == (utc(2023, 7, 3, 20, 40),)  # EDT, UTC-4


def test_salesforce_contacts_stage_from_iso_8859_1_with_uk_dates(tmp_path):
    conn, staged = _stage(tmp_path, "salesforce_contacts", ("contacts",))
    assert staged["contacts"].staged == EXPECTED["salesforce_contacts"]["records"]
    rows = _rows(
        conn, "contacts",
        "first_name, last_name, email, phone, birth_date, address_line1, country, company,"
        " email_opt_in, created_at, updated_at",
        "salesforce_contacts",
    )
    assert rows["0038d00000Qx1AA"] == (
        "Amelia", "Hughes", "amelia.hughes@btinternet.com", None, dt.date(1985, 7, 14), "12 Elm Road",
        "GB", None, None, utc(2023, 11, 14), utc(2024, 4, 1, 23),  # dates are London midnights
    )
    assert rows["0038d00000Qx1AB"][:4] == ("Zoë", "Ó Briain", "zoe.obriain@eircom.net", "+441134960103")
    assert rows["0038d00000Qx1AB"][4] == dt.date(1990, 2, 2)
    assert rows["0038d00000Qx1AC"][3] == "+441134960104" and rows["0038d00000Qx1AC"][7] == "Khan Logistics Ltd"
    # The second line of the street arrives in the same field; whitespace runs become one space.
    assert rows["0038d00000Qx1AD"][5] == "58 Glen Road Upper Flat"
    assert rows["0038d00000Qx1AG"][1] == "O'Neill"
    assert {k: r[8] for k, r in rows.items() if r[8] is not None} == {"0038d00000Qx1AD": False}
    assert _flags(conn, "contacts", "salesforce_contacts") == set()


def test_shopify_orders_stage_one_order_per_order_name_with_mapped_statuses(tmp_path):
    conn, staged = _stage(tmp_path, "shopify_orders", ("orders", "contacts"))
    expected = EXPECTED["shopify_orders"]
    # Eleven line-item rows are five records.
    assert (staged["orders"].raw_rows, staged["orders"].staged) == (expected["orders"], expected["orders"])
    rows = _rows(conn, "orders", "email, order_date, amount, currency, status, channel", "shopify_orders")
    assert set(rows) == set(expected["statuses"])
    assert {k: r[4] for k, r in rows.items()} == expected["statuses"]
    assert {k: r[2] for k, r in rows.items()} == {k: Decimal(v) for k, v in expected["totals"].items()}
    assert rows["#1001"] == (
        "amelia.hughes@btinternet.com", utc(2024, 4, 2, 4, 56, 42), Decimal("61.45"), "GBP", "completed", "web",
    )
    assert rows["#1003"][0] == "zoe.obriain@eircom.net"  # typed in capitals at a guest checkout
    assert _flags(conn, "orders", "shopify_orders") == set()


def test_shopify_orders_buyers_become_contact_records_of_the_source(tmp_path):
    conn, staged = _stage(tmp_path, "shopify_orders", ("orders", "contacts"))
    rows = _rows(
        conn, "contacts",
        "first_name, last_name, email, phone, address_line1, city, postcode, country, company, email_opt_in",
        "shopify_orders",
    )
    assert set(rows) == set(EXPECTED["shopify_orders"]["buyers"])
    assert rows["#1001"] == (
        "Amelia", "Hughes", "amelia.hughes@btinternet.com", "+441134960101", "12 Elm Road", "Leeds",
        "LS6 2AB", "GB", None, True,
    )
    assert rows["#1004"][3] == "+441134960101"  # typed nationally this time
    assert rows["#1002"][:2] == ("Oliver", "Bennett") and rows["#1002"][9] is None  # box unticked
    assert rows["#1003"][:4] == ("Zoë", "Ó Briain", "zoe.obriain@eircom.net", None)  # guest, no phone
    assert rows["#1005"][8] == "Khan Logistics Ltd"


def test_shopify_customers_stage_with_consent_and_shopifys_apostrophes_read_through(tmp_path):
    conn, staged = _stage(tmp_path, "shopify_customers", ("contacts",))
    assert staged["contacts"].staged == EXPECTED["shopify_customers"]["records"]
    rows = _rows(conn, "contacts", "first_name, last_name, email, phone, company, country, email_opt_in",
                 "shopify_customers")
    by_email = {r[2]: (k, r) for k, r in rows.items()}
    assert {EMAIL_TO_KEY[e] for e in by_email} == set(EXPECTED["shopify_customers"]["people"])
    # The apostrophe Shopify writes before an id ("CSV for Excel") is not part of it: the id
    # matches the same customer's id elsewhere (GA4's user_id, the orders' customer id).
    record_id, amelia = by_email["amelia.hughes@btinternet.com"]
    assert record_id == "7406721040531"
    assert amelia == ("Amelia", "Hughes", "amelia.hughes@btinternet.com", "+441134960101", None, "GB", True)
    assert by_email["m.khan@fastmail.com"][1][4] == "Khan Logistics Ltd"
    assert by_email["oliver.bennett@mailbox.org"][1][3] is None
    assert "noah.patel@btinternet.com" in by_email  # mixed case in the file
    opted_in = {EMAIL_TO_KEY[r[2]] for r in rows.values() if r[6] is True}
    assert opted_in == set(EXPECTED["shopify_customers"]["opted_in"])
    assert all(r[6] in (True, None) for r in rows.values())  # "no" states nothing
    assert _flags(conn, "contacts", "shopify_customers") == set()


def test_stripe_customers_stage_with_split_names_and_utc_times(tmp_path):
    conn, staged = _stage(tmp_path, "stripe_customers", ("contacts",))
    assert staged["contacts"].staged == EXPECTED["stripe_customers"]["records"]
    rows = _rows(conn, "contacts", "first_name, last_name, email, phone, postcode, country, created_at",
                 "stripe_customers")
    ids = STRIPE_CUSTOMER_IDS
    assert rows[ids["p01"]] == (
        "Amelia", "Hughes", "amelia.hughes@btinternet.com", "+441134960101", "LS6 2AB", "GB", utc(2023, 11, 14, 9, 6),
    )
    assert rows[ids["p02"]][3] == "+441134960102"
    assert rows[ids["p05"]][:2] == ("Chloé", "Dubois")
    assert rows[ids["p09"]][4:6] == (None, None)
    # No name, only an e-mail: kept (the e-mail identifies the person).
    assert rows[ids["p10"]][:3] == (None, None, "noah.patel@btinternet.com")
    assert rows[ids["p08"]][6] == utc(2024, 4, 2, 8, 1)
    assert _flags(conn, "contacts", "stripe_customers") == set()


def test_stripe_charges_stage_as_orders_in_major_units_with_mapped_statuses(tmp_path):
    conn, staged = _stage(tmp_path, "stripe_charges", ("orders", "contacts"))
    assert staged["orders"].staged == EXPECTED["stripe_charges"]["records"]
    rows = _rows(conn, "orders", "contact_id, email, order_date, amount, currency, status", "stripe_charges")
    statuses = [r[5] for r in rows.values()]
    assert {s: statuses.count(s) for s in set(statuses)} == EXPECTED["stripe_charges"]["statuses"]
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b00"] == (
        STRIPE_CUSTOMER_IDS["p01"], "amelia.hughes@btinternet.com", utc(2024, 4, 2, 6, 59, 30),
        Decimal("54.90"), "GBP", "completed",
    )
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b01"][3:] == (Decimal("39.95"), "GBP", "completed")  # partly refunded
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b02"][5] == "refunded"
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b03"][5] == "cancelled"  # failed
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b05"][:2] == (None, "renee.mueller@web.de")  # a guest
    assert _flags(conn, "orders", "stripe_charges") == set()


def test_stripe_charges_buyers_are_contacts_named_as_on_the_card(tmp_path):
    conn, staged = _stage(tmp_path, "stripe_charges", ("orders", "contacts"))
    rows = _rows(conn, "contacts", "first_name, last_name, email, address_line1, postcode, country",
                 "stripe_charges")
    assert len(rows) == EXPECTED["stripe_charges"]["records"]
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b00"] == (
        "Amelia", "Hughes", "amelia.hughes@btinternet.com", "12 Elm Road", "LS6 2AB", "GB",
    )
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b02"][:2] == ("Chloe", "Dubois")  # "CHLOE DUBOIS" on the card
    assert rows["ch_3PbQ2aLkdIwHu7ix0K1a2b05"][:3] == ("Renée", "Müller", "renee.mueller@web.de")
    # Paid by bank debit: no card, so only the e-mail names the buyer.
    assert rows["py_3PbQ2aLkdIwHu7ix0K1a2b04"] == (None, None, "noah.patel@btinternet.com", None, None, None)
