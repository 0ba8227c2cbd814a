"""Record links (lib/staging/links.py): which records of a source name which contact, defined once."""

from __future__ import annotations

import pytest
import yaml

from cdm_pipeline.config import CdmConfig, ConfigError, load_config
from cdm_pipeline.lib.personal_data.suppression import suppress, suppression_predicate
from cdm_pipeline.lib.privacy.subject import SUBJECT_EMAILS, SUBJECT_RECORDS, staging_match_sql
from cdm_pipeline.lib.staging.links import RECORD_LINKS, RecordLink, record_links, register_record_links
from cdm_pipeline.lib.warehouse import connect

KEY = b"k" * 32

SOURCES = [
    {"name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv", "path": "crm/*.csv",
     "id_column": "contact_id", "columns": {"email": "Email"}},
    {"name": "crm_leads", "system": "crm", "kind": "contacts", "format": "csv", "path": "leads/*.csv",
     "id_column": "lead_id", "columns": {"email": "Email", "linked_id": "ContactRef"}},
    # contacts_source set: only the leads' ids.
    {"name": "crm_orders", "system": "crm", "kind": "orders", "format": "csv", "path": "orders/*.csv",
     "id_column": "order_id", "contacts_source": "crm_leads",
     "columns": {"contact_id": "Buyer", "order_date": "Date", "amount": "Total"}},
    # Not set: every contacts source of its system, in config order.
    {"name": "crm_email", "system": "crm", "kind": "email_events", "format": "csv", "path": "email/*.csv",
     "id_column": "event_id",
     "columns": {"subscriber_id": "Subscriber", "event_type": "Type", "occurred_at": "At"}},
    {"name": "web", "system": "ga4", "kind": "web_events", "format": "csv", "path": "web/*.csv",
     "id_column": "event_id", "columns": {"client_id": "Client", "user_id": "User", "occurred_at": "At"}},
]
SAME_IDS = [
    {"source": "crm_leads", "column": "linked_id", "equals": "crm_contacts"},
    {"source": "web", "column": "user_id", "equals": "crm_contacts"},
    {"source": "web", "column": "user_id", "equals": "crm_leads"},
]


def _config(tmp_path, sources=SOURCES, same_ids=SAME_IDS) -> CdmConfig:
    document = {"warehouse": "w.duckdb", "landing_dir": "landing", "sources": sources,
                "identity": {"same_ids": same_ids}}
    path = tmp_path / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_config(path)


def test_links_of_contacts_orders_email_and_web_sources_are_exact_rows(tmp_path):
    config = _config(tmp_path)
    expected = [
        RecordLink("crm_leads", "linked_id", "crm_contacts", "", 0, "same_ids"),
        RecordLink("crm_orders", "contact_id", "crm_leads", "", 0, "contacts_source"),
        RecordLink("crm_email", "subscriber_id", "crm_contacts", "", 0, "contacts_source"),
        RecordLink("crm_email", "subscriber_id", "crm_leads", "", 1, "contacts_source"),
        RecordLink("web", "client_id", "web", "client:", 0, "web_identity"),
        RecordLink("web", "user_id", "web", "user:", 0, "web_identity"),
        RecordLink("web", "user_id", "crm_contacts", "", 1, "same_ids"),
        RecordLink("web", "user_id", "crm_leads", "", 2, "same_ids"),
    ]
    assert list(record_links(config)) == expected

    conn = connect(tmp_path / "w.duckdb")
    register_record_links(conn, config)
    register_record_links(conn, config)  # once per connection, but harmless again
    rows = conn.execute(f"SELECT * FROM {RECORD_LINKS} ORDER BY rowid").fetchall()
    assert [RecordLink(*row) for row in rows] == expected


def test_a_config_without_links_registers_an_empty_table(tmp_path):
    contacts_only = [SOURCES[0]]
    config = _config(tmp_path, sources=contacts_only, same_ids=[])
    assert list(record_links(config)) == []
    conn = connect(tmp_path / "w.duckdb")
    register_record_links(conn, config)
    assert conn.execute(f"SELECT count(*) FROM {RECORD_LINKS}").fetchone() == (0,)


QUOTED = "o'brien; DROP TABLE x; --"


def _quoted_config(tmp_path) -> CdmConfig:
    """The config of SOURCES with a quote in two source names, validated as a model only."""
    renames = {"crm_leads": QUOTED, "crm_orders": "shop'orders"}
    sources = [{**s, "name": renames.get(s["name"], s["name"])} for s in SOURCES]
    sources[2] = {**sources[2], "contacts_source": QUOTED}
    same_ids = [{**link, **{k: renames.get(v, v) for k, v in link.items()}} for link in SAME_IDS]
    document = {"warehouse": str(tmp_path / "w.duckdb"), "landing_dir": str(tmp_path),
                "sources": sources, "identity": {"same_ids": same_ids}}
    with pytest.raises(ConfigError, match="not a valid source name"):
        path = tmp_path / "quoted.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        load_config(path)  # a config file cannot name a source so
    return CdmConfig.model_validate(document)


def test_a_source_name_with_a_quote_is_bound_never_pasted_into_sql(tmp_path):
    config = _quoted_config(tmp_path)
    conn = connect(tmp_path / "w.duckdb")
    register_record_links(conn, config)
    assert conn.execute(
        f"SELECT source_name, target_source FROM {RECORD_LINKS} WHERE id_column = 'contact_id'"
    ).fetchall() == [("shop'orders", QUOTED)]

    # A privacy request's rows: the SQL names no source, and an order naming the subject's lead
    # is found through the bound link.
    for kind in ("contacts", "orders", "email_events", "web_events"):
        sql = staging_match_sql(config, kind)
        assert "brien" not in sql and "shop" not in sql
    conn.execute(f"CREATE TEMP TABLE {SUBJECT_RECORDS} AS SELECT ? AS source_name, 'L1' AS source_record_id",
                 [QUOTED])
    conn.execute(f"CREATE TEMP TABLE {SUBJECT_EMAILS} (value VARCHAR)")
    conn.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES ('shop''orders', 'L1', NULL), ('shop''orders', 'L2', NULL),"
        " ('other', 'L1', NULL)) AS v(source_name, contact_id, email)"
    )
    matched = conn.execute(f"SELECT contact_id FROM t WHERE {staging_match_sql(config, 'orders')}").fetchall()
    assert matched == [("L1",)]

    # The suppression list's check of an order binds the contacts source it names.
    suppress(conn, KEY, [("record", f"{QUOTED}:L1")], "REQ-1")
    sql, params = suppression_predicate(conn, config, config.source("shop'orders"), KEY)
    assert "brien" not in sql
    assert f"{QUOTED}:" in params.values()
    conn.execute('CREATE TABLE raw_orders AS SELECT * FROM (VALUES (\'O1\', \' L1 \'), (\'O2\', \'L2\'))'
                 ' AS v(order_id, "Buyer")')
    assert conn.execute(f"SELECT order_id FROM raw_orders WHERE {sql}", params).fetchall() == [("O1",)]


def test_suppression_reads_a_linked_id_as_staging_does(tmp_path):
    # A spreadsheet-minded export writes '7406721040531 to keep the id as text; staging reads
    # 7406721040531 (mapping.text_sql), and so does the suppression list's check.
    config = _config(tmp_path)
    conn = connect(tmp_path / "w.duckdb")
    suppress(conn, KEY, [("record", "crm_leads:7406721040531")], "REQ-1")
    sql, params = suppression_predicate(conn, config, config.source("crm_orders"), KEY)
    conn.execute(
        "CREATE TABLE raw_orders AS SELECT * FROM (VALUES ('O1', '''7406721040531'), ('O2', '7406721040532'))"
        ' AS v(order_id, "Buyer")'
    )
    assert conn.execute(f"SELECT order_id FROM raw_orders WHERE {sql}", params).fetchall() == [("O1",)]
