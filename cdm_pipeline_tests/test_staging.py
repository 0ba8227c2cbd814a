"""Staging without Dagster: standardised values, flags, quarantine reasons, conservation."""

import datetime as dt
import json
import textwrap
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdm_pipeline.config import load_config
from cdm_pipeline.lib.extract import load_partition
from cdm_pipeline.lib.staging.build import count_conservation, stage_partition
from cdm_pipeline.lib.warehouse import connect

DAY = dt.date(2026, 10, 1)
LOADED_AT = dt.datetime(2026, 10, 2, tzinfo=dt.timezone.utc)

CONFIG = textwrap.dedent(
    """
    warehouse: wh/cdm.duckdb
    landing_dir: landing
    default_region: GB
    sources:
      - name: crm_contacts
        system: crm
        kind: contacts
        format: csv
        path: crm/{date}/*.csv
        id_column: contact_id
        columns:
          first_name: FirstName
          last_name: LastName
          email: Email
          phone: Phone
          birth_date: {column: DOB, format: "%Y%m%d"}
          postcode: PostCode
          country: Country
          email_opt_in: OptIn
          updated_at: Modified
      - name: email_subscribers
        system: email
        kind: contacts
        format: jsonl
        path: esp/{date}/*.jsonl
        id_column: subscriber_id
        columns: {email: email, first_name: first_name}
      - name: crm_orders
        system: crm
        kind: orders
        format: csv
        path: orders/{date}/*.csv
        id_column: order_id
        columns: {contact_id: contact_id, order_date: ordered, amount: amount, currency: currency, status: status}
      - name: email_events
        system: email
        kind: email_events
        format: jsonl
        path: events/{date}/*.jsonl
        id_column: event_id
        columns: {subscriber_id: sub, email: email, event_type: type, occurred_at: at}
      - name: web_events
        system: web
        kind: web_events
        format: parquet
        path: web/{date}/*.parquet
        id_column: event_id
        columns: {client_id: client_id, user_id: user_id, event_name: name, occurred_at: ts, value: value}
    """
)

CRM = (
    "contact_id,FirstName,LastName,Email,Phone,DOB,PostCode,Country,OptIn,Modified\n"
    'C1,"  JOSÉ ",GARCÍA-LÓPEZ, Jose.Garcia@Example.COM ,+44 (0)20 7946 0018,19850412,sw1a1aa,'
    'United Kingdom,yes,2026-09-01T10:00:00Z\n'
    "C2,Zoë,Nguyễn,n/a,(415) 555-2671,19850231,94107,USA,maybe,\n"
    "C3,ann,o'brien,ann@x.ie,,18500101,,Éire,false,\n"
    "C4,Ann,,,,,,,,\n"
    ",Bob,Smith,bob@example.com,,,,,,\n"
    "C6,Old,Version,old@example.com,,,,,,2026-09-01T10:00:00Z\n"
    "C6,New,Version,new@example.com,,,,,,2026-09-30T10:00:00Z\n"
    "C7,Lee,Wong,,+44 20 7946 0018,20300101,,Narnia,,\n"
)


@pytest.fixture
def warehouse(tmp_path):
    (tmp_path / "cdm.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "cdm.yaml")
    landing = config.landing_dir
    files = {
        f"crm/{DAY}/a.csv": CRM.encode(),
        f"esp/{DAY}/s.jsonl": (
            json.dumps({"subscriber_id": "S1", "email": "  ZOE@Example.com", "first_name": "zoë"}) + "\n"
            + json.dumps({"subscriber_id": "S2", "email": "", "first_name": "Nobody"}) + "\n"
        ).encode(),
        f"orders/{DAY}/o.csv": (
            "order_id,contact_id,ordered,amount,currency,status\n"
            "O1,C1,2026-10-01T09:30:00Z,12.50,gbp,Completed\n"
            "O2,C1,2026-10-01T09:31:00Z,-5.00,GBP,refunded\n"
            "O3,C2,,20.00,USD,completed\n"
            "O4,C2,2026-10-01T10:00:00Z,abc,USD,completed\n"
        ).encode(),
        f"events/{DAY}/e.jsonl": (
            json.dumps({"event_id": "E1", "sub": "S1", "email": " ZOE@example.com ", "type": "OPEN",
                        "at": "2026-10-01T08:00:00Z"}) + "\n"
            + json.dumps({"event_id": "E2", "sub": "S1", "type": "click", "at": None}) + "\n"
            + json.dumps({"event_id": "E3", "type": "sent", "at": "2026-10-01T08:00:00Z"}) + "\n"
        ).encode(),
    }
    for relative, data in files.items():
        path = landing / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (landing / f"web/{DAY}").mkdir(parents=True)
    pq.write_table(
        pa.table({
            "event_id": ["W1", "W2", "W3"],
            "client_id": ["111.222", None, "333.444"],
            "user_id": [None, None, "C1"],
            "name": ["page_view", "page_view", "purchase"],
            "ts": pa.array(
                [dt.datetime(2026, 10, 1, 23, 59, tzinfo=dt.timezone.utc)] * 3, type=pa.timestamp("us", tz="UTC")
            ),
            "value": [None, None, 49.99],
        }),
        landing / f"web/{DAY}/w.parquet",
    )
    conn = connect(config.warehouse)
    for source in config.sources:
        load_partition(conn, source, landing, DAY, LOADED_AT)
    yield conn, config
    conn.close()


def _staged(conn, kind, columns, order="source_name, source_record_id"):
    return conn.execute(f"SELECT {columns} FROM staging.{kind} ORDER BY {order}").fetchall()


def _held(conn, kind):
    return conn.execute(
        f"SELECT source_record_id, quarantine_reason FROM quarantine.{kind} ORDER BY _source_file, _source_row"
    ).fetchall()


def test_contacts_are_standardised_and_bad_values_kept_with_flags(warehouse):
    conn, config = warehouse
    result = stage_partition(conn, config, "contacts", DAY)
    assert (result.raw_rows, result.staged, result.quarantined) == (10, 6, 4)
    rows = _staged(
        conn, "contacts",
        "source_record_id, first_name, last_name, email, phone, birth_date, birth_date_text,"
        " postcode, country, email_opt_in, quality_flags",
    )
    assert rows == [
        ("C1", "José", "García-López", "jose.garcia@example.com", "+442079460018",
         dt.date(1985, 4, 12), "19850412", "SW1A 1AA", "GB", True, []),
        # An impossible date is null but its text survives; the invalid email is kept as it came.
        ("C2", "Zoë", "Nguyễn", "n/a", "+14155552671", None, "19850231", "94107", "US", None,
         ["invalid_email", "unparseable_birth_date", "unparseable_email_opt_in"]),
        ("C3", "Ann", "O'Brien", "ann@x.ie", None, None, "18500101", None, "IE", False,
         ["implausible_birth_date"]),
        ("C6", "New", "Version", "new@example.com", None, None, None, None, None, None, []),
        ("C7", "Lee", "Wong", None, "+442079460018", None, "20300101", None, "Narnia", None,
         ["unknown_country", "implausible_birth_date"]),
        ("S1", "Zoë", None, "zoe@example.com", None, None, None, None, None, None, []),
    ]
    assert _held(conn, "contacts") == [
        ("C4", "no_usable_identifier"),
        (None, "missing_record_id"),
        ("C6", "duplicate_in_partition"),
        ("S2", "no_usable_identifier"),
    ]
    assert result.quarantine_reasons == {"duplicate_in_partition": 1, "missing_record_id": 1, "no_usable_identifier": 2}
    assert result.flags["implausible_birth_date"] == 2


LINKABILITY_CRM = (
    "contact_id,FirstName,LastName,Email,Phone,DOB,PostCode,Country,OptIn,Modified\n"
    "L1,,Hartley,,,19620704,SW1A 1AA,GB,,\n"    # surname, birth date, postcode: no first name
    "L2,Maud,,,,19620704,,,,\n"                 # first name and birth date
    "L3,,Hartley,,,,SW1A 1AA,GB,,\n"            # surname and postcode
    "L4,,,,,19620704,SW1A 1AA,GB,,\n"           # birth date and postcode, no name at all
    "L5,,Hartley,,,19620231,,,,\n"              # an impossible date still has its digits
    "L6,Maud,Hartley,,,,,,,\n"                  # two name parts are one piece of evidence
    "L7,Maud,,,,18500101,,,,\n"                 # a placeholder birth date is no evidence
    "L8,,,,,,SW1A 1AA,GB,,\n"                   # a postcode alone
)


def test_contacts_are_quarantined_only_when_nothing_could_link_them(tmp_path):
    (tmp_path / "cdm.yaml").write_text(CONFIG)
    config = load_config(tmp_path / "cdm.yaml")
    path = config.landing_dir / f"crm/{DAY}/a.csv"
    path.parent.mkdir(parents=True)
    path.write_text(LINKABILITY_CRM)
    conn = connect(config.warehouse)
    try:
        load_partition(conn, config.sources[0], config.landing_dir, DAY, LOADED_AT)
        result = stage_partition(conn, config, "contacts", DAY)
        assert [r[0] for r in _staged(conn, "contacts", "source_record_id")] == ["L1", "L2", "L3", "L4", "L5"]
        assert _held(conn, "contacts") == [
            ("L6", "no_usable_identifier"), ("L7", "no_usable_identifier"), ("L8", "no_usable_identifier"),
        ]
        assert result.quarantine_reasons == {"no_usable_identifier": 3}
    finally:
        conn.close()


def test_orders_events_and_web_rows_failing_critical_rules_are_quarantined(warehouse):
    conn, config = warehouse
    for kind in ("orders", "email_events", "web_events"):
        stage_partition(conn, config, kind, DAY)
    assert _staged(conn, "orders", "source_record_id, amount, currency, status, order_date") == [
        ("O1", Decimal("12.50"), "GBP", "completed", dt.datetime(2026, 10, 1, 9, 30, tzinfo=dt.timezone.utc)),
    ]
    assert _held(conn, "orders") == [
        ("O2", "negative_amount"), ("O3", "missing_order_date"), ("O4", "missing_or_invalid_amount"),
    ]
    assert _staged(conn, "email_events", "source_record_id, subscriber_id, email, event_type") == [
        ("E1", "S1", "zoe@example.com", "open"),
    ]
    assert _held(conn, "email_events") == [("E2", "missing_occurred_at"), ("E3", "no_identity")]
    assert _staged(conn, "web_events", "source_record_id, client_id, user_id, value") == [
        ("W1", "111.222", None, None), ("W3", "333.444", "C1", 49.99),
    ]
    assert _held(conn, "web_events") == [("W2", "no_identity")]


def test_every_raw_row_is_staged_or_quarantined_and_restaging_is_identical(warehouse):
    conn, config = warehouse
    for kind in ("contacts", "orders", "email_events", "web_events"):
        stage_partition(conn, config, kind, DAY)
        before = conn.execute(f"SELECT * FROM staging.{kind} ORDER BY ALL").fetchall()
        held_before = conn.execute(f"SELECT * FROM quarantine.{kind} ORDER BY ALL").fetchall()
        stage_partition(conn, config, kind, DAY)
        assert conn.execute(f"SELECT * FROM staging.{kind} ORDER BY ALL").fetchall() == before
        assert conn.execute(f"SELECT * FROM quarantine.{kind} ORDER BY ALL").fetchall() == held_before
        ((day, raw, staged, held),) = count_conservation(conn, config, kind, [DAY])
        assert raw == staged + held and raw > 0


def test_a_kind_without_sources_gets_empty_tables(tmp_path):
    (tmp_path / "cdm.yaml").write_text(CONFIG.split("  - name: email_subscribers")[0])
    config = load_config(tmp_path / "cdm.yaml")
    conn = connect(config.warehouse)
    result = stage_partition(conn, config, "web_events", DAY)
    assert (result.raw_rows, result.staged) == (0, 0)
    assert conn.execute("SELECT count(*) FROM staging.web_events").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM quarantine.web_events").fetchone() == (0,)
    conn.close()


def test_staging_works_after_a_half_read_result_on_the_connection(warehouse):
    conn, config = warehouse
    conn.execute("SELECT * FROM range(10)").fetchone()  # leaves the result open
    assert stage_partition(conn, config, "orders", DAY).staged == 1


def test_database_errors_are_reported_without_the_values_they_quote(warehouse):
    from cdm_pipeline.lib.staging.build import StagingError
    from cdm_pipeline.lib.warehouse import safe_error_message

    conn, config = warehouse
    try:
        conn.execute("SELECT CAST('jane@example.com' AS INTEGER)")
    except Exception as exc:  # noqa: BLE001 - any DuckDB conversion error
        message = safe_error_message(exc)
    assert "jane" not in message and "'…'" in message and "\n" not in message
    # A failing partition names the kind and date, keeps the previous version, leaks nothing.
    stage_partition(conn, config, "orders", DAY)
    conn.execute("ALTER TABLE raw.crm_orders RENAME COLUMN amount TO amount_renamed")
    with pytest.raises(StagingError, match=r"^staging orders for 2026-10-01: ") as caught:
        stage_partition(conn, config, "orders", DAY)
    assert "O1" not in str(caught.value) and "amount" in str(caught.value)
    assert conn.execute("SELECT count(*) FROM staging.orders").fetchone() == (1,)
