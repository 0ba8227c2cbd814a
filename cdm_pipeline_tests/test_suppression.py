"""The suppression list: keyed hashes only, and every extract drops the rows of erased people
before they land, whichever source, format or partition they come from."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import textwrap

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdm_pipeline.config import CdmConfig, load_config
from cdm_pipeline.defs.raw.assets import build_raw_asset
from cdm_pipeline.lib.extract import ExtractError, load_partition
from cdm_pipeline.lib.personal_data.keyed_hash import PrivacyKeyMismatch, keyed_hash
from cdm_pipeline.lib.personal_data.suppression import (
    email_pattern,
    ensure_suppression_list,
    has_suppressions,
    suppress,
    suppressed_count,
    suppression_predicate,
)
from cdm_pipeline.lib.warehouse import connect, table_exists
from cdm_pipeline.resources import WarehouseResource

DAY1, DAY2 = dt.date(2026, 10, 1), dt.date(2026, 10, 2)
LOADED_AT = dt.datetime(2026, 10, 3, 2, 0, tzinfo=dt.timezone.utc)
KEY = "test-privacy-key-0123456789abcdef"
OTHER_KEY = "another-privacy-key-fedcba9876543210"

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
        columns: {first_name: First, email: Email, phone: Phone, country: Country}
      - name: email_subscribers
        system: email
        kind: contacts
        format: jsonl
        path: esp/{date}/*.jsonl
        id_column: subscriber_id
        columns: {email: email, linked_id: crm_id}
      - name: crm_orders
        system: crm
        kind: orders
        format: csv
        path: orders/{date}/*.csv
        id_column: order_id
        contacts_source: crm_contacts
        columns: {contact_id: contact_id, amount: amount}
      - name: email_events
        system: email
        kind: email_events
        format: jsonl
        path: events/{date}/*.jsonl
        id_column: event_id
        columns: {subscriber_id: sub, email: email, event_type: type}
      - name: web_events
        system: web
        kind: web_events
        format: parquet
        path: web/{date}/*.parquet
        id_column: event_id
        columns: {client_id: client_id, user_id: user_id, email: email, event_name: name}
    identity:
      same_ids:
        - {source: email_subscribers, column: linked_id, equals: crm_contacts}
        - {source: web_events, column: user_id, equals: crm_contacts}
    """
)

# Jane Doe asked to be erased: CRM contact C123, ESP subscriber S9, browser abc.123.
JANE = [
    ("email", " Jane.Doe@Example.org "),
    ("phone", "+447911123456"),
    ("record", "crm_contacts:C123"),
    ("record", "email_subscribers:S9"),
    ("record", "web_events:client:abc.123"),
]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("CDM_PRIVACY_KEY", KEY)
    (tmp_path / "cdm.yaml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "cdm.yaml")
    conn = connect(config.warehouse)
    yield conn, config
    conn.close()


def _land(config: CdmConfig, relative: str, data: bytes | pa.Table) -> None:
    path = config.landing_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, pa.Table):
        pq.write_table(data, path)
    else:
        path.write_bytes(data)


def _jsonl(*records: dict | str) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def _load(conn, config: CdmConfig, name: str, day: dt.date = DAY1):
    return load_partition(conn, config.source(name), config.landing_dir, day, LOADED_AT, config=config)


def _ids(conn, table: str, column: str, day: dt.date | None = None) -> list[str]:
    where = "" if day is None else f" WHERE _partition_date = DATE '{day.isoformat()}'"
    return [r[0] for r in conn.execute(f"SELECT {column} FROM {table}{where} ORDER BY 1").fetchall()]


def _hmac(value: str, key: str = KEY) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


# --- The list --------------------------------------------------------------------------------


def test_the_list_keeps_keyed_hashes_only_and_never_adds_one_twice(project):
    conn, config = project
    assert not has_suppressions(conn) and suppressed_count(conn) == 0
    assert suppress(conn, KEY.encode(), JANE, "REQ-1") == 5
    rows = conn.execute(
        "SELECT kind, value_hash, request_id FROM governance.suppression_list ORDER BY kind, value_hash"
    ).fetchall()
    expected = sorted([
        ("email", _hmac("jane.doe@example.org"), "REQ-1"),  # standardised before hashing
        ("phone", _hmac("+447911123456"), "REQ-1"),
        ("record", _hmac("crm_contacts:C123"), "REQ-1"),
        ("record", _hmac("email_subscribers:S9"), "REQ-1"),
        ("record", _hmac("web_events:client:abc.123"), "REQ-1"),
    ])
    assert rows == expected
    assert all(len(h) == 64 and int(h, 16) >= 0 for _, h, _ in rows)

    # The same address spelt another way, and a repeated request, add nothing.
    assert suppress(conn, KEY.encode(), [("email", "JANE.DOE@example.ORG"), *JANE], "REQ-2") == 0
    assert suppressed_count(conn) == 5 and has_suppressions(conn)

    # No plain value anywhere in the table's text, nor in the database file.
    text = conn.execute(
        "SELECT string_agg(s::VARCHAR, '|') FROM governance.suppression_list AS s"
    ).fetchone()[0]
    conn.execute("CHECKPOINT")
    stored = config.warehouse.read_bytes()
    for plain in ("jane", "Jane", "7911123456", "C123", "S9", "abc.123", "crm_contacts:", KEY):
        assert plain not in text
        assert plain.encode() not in stored


def test_suppress_rejects_unknown_kinds_blank_values_and_malformed_records(project):
    conn, _ = project
    for entry in [("name", "Jane"), ("email", "  "), ("record", "C123"), ("record", "crm_contacts:")]:
        with pytest.raises(ValueError):
            suppress(conn, KEY.encode(), [entry], "REQ-1")
    assert suppressed_count(conn) == 0


# --- Contacts --------------------------------------------------------------------------------

CRM_DAY1 = (
    "contact_id,First,Email,Phone,Country\n"
    "C1,Ann,ann@example.org,020 7946 0999,GB\n"
    "C2,Jane, Jane.Doe@EXAMPLE.org ,,\n"  # the erased address, spelt differently
    "C3,Jo,jo@example.org,07911 123456,United Kingdom\n"  # the erased phone, national format
    "C4,Al,al@example.org,07911 123456,US\n"  # same digits, read in the US: another number
    "C5,Bo,bo@example.org,+44 7911 123456,\n"  # international format, no country
)


def test_a_contact_is_dropped_by_its_email_or_phone_however_the_source_writes_it(project):
    conn, config = project
    suppress(conn, KEY.encode(), [("email", "jane.doe@example.org"), ("phone", "+447911123456")], "REQ-1")
    _land(config, f"crm/{DAY1}/a.csv", CRM_DAY1.encode())
    result = _load(conn, config, "crm_contacts")
    assert (result.rows, result.rejects, result.suppressed) == (2, 0, 3)
    assert _ids(conn, "raw.crm_contacts", "contact_id") == ["C1", "C4"]
    # The surviving rows keep their place in the file.
    rows = conn.execute("SELECT contact_id, _source_row FROM raw.crm_contacts ORDER BY 2").fetchall()
    assert rows == [("C1", 1), ("C4", 4)]


def test_only_the_email_entry_drops_exactly_one_row(project):
    conn, config = project
    suppress(conn, KEY.encode(), [("email", " Jane.Doe@Example.org ")], "REQ-1")
    _land(config, f"crm/{DAY1}/a.csv", CRM_DAY1.encode())
    result = _load(conn, config, "crm_contacts")
    assert (result.rows, result.suppressed) == (4, 1)
    assert _ids(conn, "raw.crm_contacts", "contact_id") == ["C1", "C3", "C4", "C5"]
    # The count is kept per source and partition for the run summary and governance reports.
    assert conn.execute(
        "SELECT source_name, partition_date, suppressed_rows FROM governance.suppressed_rows"
    ).fetchall() == [("crm_contacts", DAY1, 1)]
    # No phone on the list: phones are neither standardised nor hashed.
    sql, _ = suppression_predicate(conn, config, config.source("crm_contacts"), KEY.encode())
    assert "cdm_email" in sql and "cdm_phone" not in sql


def test_rerunning_a_partition_or_backfilling_an_older_one_does_not_bring_the_person_back(project):
    conn, config = project
    # After the erasure the CRM still exports C123 (under a new address, padded id).
    header = "contact_id,First,Email,Phone,Country\nC1,Ann,ann@example.org,,\n"
    _land(config, f"crm/{DAY1}/a.csv", (header + " C123 ,Jane,jd@new.example,,\n").encode())
    _land(config, f"crm/{DAY2}/a.csv", (header + "C123,Jane,jane.doe@example.org,,\n").encode())
    assert _load(conn, config, "crm_contacts", DAY2).suppressed == 0  # loaded before the erasure
    assert _ids(conn, "raw.crm_contacts", "contact_id", DAY2) == ["C1", "C123"]

    suppress(conn, KEY.encode(), JANE, "REQ-1")
    conn.execute("DELETE FROM raw.crm_contacts WHERE trim(contact_id) = 'C123'")  # the erasure itself
    for day in (DAY2, DAY2, DAY1):  # a re-run, again, and a backfill of an older day
        result = _load(conn, config, "crm_contacts", day)
        assert (result.rows, result.suppressed) == (1, 1)
    assert _ids(conn, "raw.crm_contacts", "contact_id") == ["C1", "C1"]


# --- Linked sources ----------------------------------------------------------------------------


def test_the_persons_rows_in_every_linked_source_are_dropped(project):
    conn, config = project
    suppress(conn, KEY.encode(), [*JANE, ("record", "web_events:user:u-77")], "REQ-1")
    _land(config, f"esp/{DAY1}/s.jsonl", _jsonl(
        {"subscriber_id": "S1", "email": "ann@example.org", "crm_id": "C1"},
        {"subscriber_id": "S9", "email": "other@example.org"},  # her own subscriber record
        {"subscriber_id": "S10", "email": "x@example.org", "crm_id": " C123"},  # linked to her CRM record
    ))
    _land(config, f"orders/{DAY1}/o.csv",
          b"order_id,contact_id,amount\nO1,C1,10\nO2,C123,20\nO3,,30\nO4,C12,40\n")
    _land(config, f"events/{DAY1}/e.jsonl", _jsonl(
        # No record carries "email" in this file: the column does not exist, nothing breaks.
        {"event_id": "E1", "sub": "S1", "type": "open"},
        {"event_id": "E2", "sub": "S9", "type": "open"},
        {"event_id": "E3", "sub": "S10", "type": "click"},
    ))
    _land(config, f"events/{DAY2}/e.jsonl", _jsonl(
        {"event_id": "E4", "sub": "S77", "email": "JANE.DOE@example.org", "type": "open"},
        {"event_id": "E5", "sub": "S1", "email": "ann@example.org", "type": "open"},
    ))
    _land(config, f"web/{DAY1}/w.parquet", pa.table({
        "event_id": ["W1", "W2", "W3", "W4", "W5", "W6", "W7"],
        "client_id": ["abc.123", "abc.123", "zzz.9", "zzz.9", "def.456", None, "abc.1234"],
        "user_id": [None, None, "C123", None, "u-77", "C1", None],
        "email": [None, None, None, " jane.doe@EXAMPLE.org", None, None, None],
        "name": ["page_view"] * 7,
    }))
    names = ("email_subscribers", "crm_orders", "email_events", "web_events")
    loads = {name: _load(conn, config, name) for name in names}
    assert {name: (load.rows, load.suppressed) for name, load in loads.items()} == {
        "email_subscribers": (1, 2),
        "crm_orders": (3, 1),
        "email_events": (2, 1),  # S9 is her ESP record; S10 is not on the list
        "web_events": (2, 5),  # client, client, user_id = CRM id (same_ids), email, web user
    }
    assert _ids(conn, "raw.email_subscribers", "subscriber_id") == ["S1"]
    assert _ids(conn, "raw.crm_orders", "order_id") == ["O1", "O3", "O4"]
    assert _ids(conn, "raw.web_events", "event_id") == ["W6", "W7"]
    assert _load(conn, config, "email_events", DAY2).suppressed == 1
    assert _ids(conn, "raw.email_events", "event_id") == ["E1", "E3", "E5"]


# --- Rejected lines ------------------------------------------------------------------------------


def test_a_malformed_line_naming_the_address_does_not_reach_quarantine(project):
    conn, config = project
    suppress(conn, KEY.encode(), [("email", "jane.doe@example.org")], "REQ-1")
    _land(config, f"crm/{DAY1}/a.csv", (
        "contact_id,First,Email,Phone,Country\n"
        "C1,Ann,ann@example.org,,\n"
        'C2,Jane,"<Jane.Doe@Example.ORG>",x,y,z\n'  # too many columns, with her address
        "C3,Bad,bad@example.org,1,2,3\n"  # too many columns, someone else
        "C4,Al,al@example.org,,\n"
    ).encode())
    result = _load(conn, config, "crm_contacts")
    assert (result.rows, result.rejects, result.suppressed) == (2, 1, 1)
    assert result.rejects_by_error == {"TOO MANY COLUMNS": 1}
    rejects = conn.execute("SELECT _source_row, raw_line FROM quarantine.crm_contacts_rejects").fetchall()
    assert rejects == [(3, "C3,Bad,bad@example.org,1,2,3")]
    # The rows after the dropped line keep their place in the file.
    assert conn.execute("SELECT contact_id, _source_row FROM raw.crm_contacts ORDER BY 2").fetchall() == [
        ("C1", 1), ("C4", 4),
    ]

    _land(config, f"esp/{DAY1}/s.jsonl", _jsonl(
        {"subscriber_id": "S1", "email": "ann@example.org"},
        '{"subscriber_id": "S2", "email": "mailto:jane.doe@example.org", broken',
        '{"subscriber_id": "S3", broken',
    ))
    result = _load(conn, config, "email_subscribers")
    assert (result.rows, result.rejects, result.suppressed) == (1, 1, 1)
    assert _ids(conn, "quarantine.email_subscribers_rejects", "_source_row") == [3]


@pytest.mark.parametrize("delimiter", [",", ";", "|", "\t", "]", "\\"])
def test_addresses_are_found_in_a_line_whatever_the_delimiter(delimiter):
    line = delimiter.join(["C1", '"<Jane.Doe@Example.org>"', "mailto:b@y.com", "no address"])
    found = duckdb.execute("SELECT regexp_extract_all(?, ?)", [line, email_pattern(delimiter)]).fetchone()[0]
    assert found == ["Jane.Doe@Example.org", "mailto:b@y.com"]


# --- No list, no key, another key --------------------------------------------------------------


def _all_raw(conn, config: CdmConfig):
    out = {}
    for source in config.sources:
        for table in (f"raw.{source.name}", f"quarantine.{source.name}_rejects"):
            out[table] = conn.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall()
    return out


def _land_everything(config: CdmConfig) -> None:
    _land(config, f"crm/{DAY1}/a.csv", (CRM_DAY1 + "C9,Bad,row,with,too,many\n").encode())
    _land(config, f"esp/{DAY1}/s.jsonl",
          _jsonl({"subscriber_id": "S9", "email": "jane.doe@example.org"}, "{bad"))
    _land(config, f"orders/{DAY1}/o.csv", b"order_id,contact_id,amount\nO1,C123,10\n")
    _land(config, f"events/{DAY1}/e.jsonl", _jsonl({"event_id": "E1", "sub": "S9", "type": "open"}))
    _land(config, f"web/{DAY1}/w.parquet", pa.table({
        "event_id": ["W1"], "client_id": ["abc.123"], "user_id": ["C123"], "email": [None], "name": ["x"],
    }))


def test_an_empty_list_needs_no_key_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("CDM_PRIVACY_KEY", raising=False)
    (tmp_path / "cdm.yaml").write_text(CONFIG, encoding="utf-8")
    config = load_config(tmp_path / "cdm.yaml")
    _land_everything(config)
    outputs = []
    for name, prepare in (("before.duckdb", None), ("empty.duckdb", ensure_suppression_list)):
        conn = connect(tmp_path / name)
        if prepare:
            prepare(conn)
        loads = [
            load_partition(conn, source, config.landing_dir, DAY1, LOADED_AT, config=config)
            for source in config.sources
        ]
        assert all(load.suppressed == 0 for load in loads)
        outputs.append(_all_raw(conn, config))
        conn.close()
    assert outputs[0] == outputs[1]
    assert sum(len(rows) for rows in outputs[0].values()) == 11  # 5 + 1 + 1 + 1 + 1 rows, 2 rejects


def test_a_list_with_entries_and_no_key_fails_and_writes_nothing(project, monkeypatch):
    conn, config = project
    _land(config, f"crm/{DAY1}/a.csv", CRM_DAY1.encode())
    _load(conn, config, "crm_contacts")  # before the erasure: five rows
    suppress(conn, KEY.encode(), JANE, "REQ-1")
    monkeypatch.delenv("CDM_PRIVACY_KEY")
    for name in ("crm_contacts", "crm_orders"):
        with pytest.raises(ExtractError) as caught:
            _load(conn, config, name)
        message = str(caught.value)
        assert "CDM_PRIVACY_KEY is not set" in message and "\n" not in message
    assert _ids(conn, "raw.crm_contacts", "contact_id") == ["C1", "C2", "C3", "C4", "C5"]  # untouched
    assert not table_exists(conn, "raw", "crm_orders")
    assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0] == 0

    monkeypatch.setenv("CDM_PRIVACY_KEY", "short")
    with pytest.raises(ExtractError, match="CDM_PRIVACY_KEY is too short"):
        _load(conn, config, "crm_contacts")


def test_a_different_key_is_refused_rather_than_matching_nothing(project, monkeypatch):
    # Under another key no hash on the list matches: the erased rows would load again silently.
    conn, config = project
    suppress(conn, KEY.encode(), JANE, "REQ-1")
    _land(config, f"crm/{DAY1}/a.csv", CRM_DAY1.encode())
    monkeypatch.setenv("CDM_PRIVACY_KEY", OTHER_KEY)
    with pytest.raises(ExtractError, match="CDM_PRIVACY_KEY is not the key this warehouse's suppression list"):
        _load(conn, config, "crm_contacts")
    with pytest.raises(PrivacyKeyMismatch):
        suppress(conn, OTHER_KEY.encode(), [("email", "someone@example.org")], "REQ-2")
    monkeypatch.setenv("CDM_PRIVACY_KEY", KEY)
    assert _load(conn, config, "crm_contacts").suppressed == 3


def test_a_list_needs_the_config_to_be_applied(project):
    conn, config = project
    suppress(conn, KEY.encode(), JANE, "REQ-1")
    _land(config, f"crm/{DAY1}/a.csv", CRM_DAY1.encode())
    with pytest.raises(ExtractError, match="needs the project config"):
        load_partition(conn, config.source("crm_contacts"), config.landing_dir, DAY1, LOADED_AT)


# --- The predicate on its own, and in a real run -------------------------------------------------


def test_the_per_row_predicate_and_the_distinct_values_predicate_agree(project):
    conn, config = project
    suppress(conn, KEY.encode(), JANE, "REQ-1")
    conn.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES"
        " ('C1', 'ann@example.org', '020 7946 0999', 'GB'), ('C123', NULL, NULL, NULL),"
        " ('C2', ' Jane.Doe@Example.ORG', NULL, NULL), ('C3', NULL, '07911123456', ''),"
        " ('C4', NULL, '07911123456', 'FR'), (NULL, NULL, NULL, NULL))"
        " AS v(contact_id, Email, Phone, Country)"
    )
    source = config.source("crm_contacts")
    per_row, params = suppression_predicate(conn, config, source, KEY.encode())
    distinct, params2 = suppression_predicate(conn, config, source, KEY.encode(), relation="t")
    assert keyed_hash("x", KEY.encode()) == _hmac("x")
    listed = "SELECT list(contact_id ORDER BY contact_id) FROM t WHERE "
    dropped = conn.execute(listed + per_row, params).fetchone()
    assert dropped == (["C123", "C2", "C3"],)
    assert conn.execute(listed + distinct, params2).fetchone() == dropped
    kept = conn.execute(f"SELECT count(*) FROM t WHERE NOT {distinct}", params2).fetchone()[0]
    assert kept == 3  # the predicate is never NULL: a row of NULLs is kept, not lost


def test_the_raw_asset_reports_suppressed_rows(project):
    conn, config = project
    suppress(conn, KEY.encode(), JANE, "REQ-1")
    conn.close()
    _land(config, f"crm/{DAY1}/a.csv", CRM_DAY1.encode())
    result = dg.materialize(
        [build_raw_asset(config.source("crm_contacts"), config)],
        partition_key=DAY1.isoformat(),
        resources={"warehouse": WarehouseResource(database=str(config.warehouse))},
    )
    assert result.success
    (materialization,) = [
        m for m in result.asset_materializations_for_node("extract_crm_contacts")
        if m.asset_key == dg.AssetKey(["raw", "crm_contacts"])
    ]
    assert materialization.metadata["suppressed_rows"].value == 3
    assert materialization.metadata["rows_loaded"].value == 2
    with duckdb.connect(str(config.warehouse), read_only=True) as check:
        assert _ids(check, "raw.crm_contacts", "contact_id") == ["C1", "C4"]


def test_ids_and_emails_inside_nested_fields_or_in_a_sources_own_words_are_suppressed(tmp_path, monkeypatch):
    # Klaviyo's events name their profile at relationships.profile.data.id (a path, not a
    # column); an export "for Excel" writes e-mails in capitals inside a JSON object. Both are
    # read as staging reads them, so an erased person's events do not land again.
    monkeypatch.setenv("CDM_PRIVACY_KEY", KEY)
    day = dt.date(2026, 10, 1)
    folder = tmp_path / "landing" / "k" / day.isoformat()
    folder.mkdir(parents=True)
    lines = [
        {"id": "ev1", "relationships": {"profile": {"data": {"id": "01ERASED"}}}, "who": {"mail": "GONE@Example.org"}},
        {"id": "ev2", "relationships": {"profile": {"data": {"id": "01KEPT"}}}, "who": {"mail": "kept@example.org"}},
        {"id": "ev3", "relationships": {"profile": {"data": {"id": "01OTHER"}}}, "who": {"mail": "gone@example.org"}},
    ]
    (folder / "e.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "cdm.yaml").write_text(textwrap.dedent("""
        warehouse: wh.duckdb
        landing_dir: landing
        start_date: 2026-10-01
        sources:
          - {name: klaviyo_profiles, system: klaviyo, kind: contacts, format: csv, path: "p/{date}/*.csv",
             id_column: id, columns: {email: email}}
          - {name: klaviyo_events, system: klaviyo, kind: email_events, format: jsonl, path: "k/{date}/*.jsonl",
             id_column: id, columns: {subscriber_id: {column: relationships, path: profile.data.id},
                                      email: {column: who, path: mail}}}
    """))
    config = load_config(tmp_path / "cdm.yaml")
    conn = connect(config.warehouse)
    suppress(conn, KEY.encode(), [("record", "klaviyo_profiles:01ERASED"), ("email", "gone@example.org")], "REQ-1")
    load = load_partition(conn, config.source("klaviyo_events"), config.landing_dir, day,
                          dt.datetime.now(dt.timezone.utc), config=config)
    assert (load.rows, load.suppressed) == (1, 2)
    assert conn.execute("SELECT id FROM raw.klaviyo_events").fetchall() == [("ev2",)]
