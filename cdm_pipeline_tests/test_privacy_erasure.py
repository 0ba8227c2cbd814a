"""Erasure, access export and the requests file on small warehouses with known contents."""

from __future__ import annotations

import json

import pytest

from cdm_pipeline.lib.personal_data.keyed_hash import keyed_hash
from cdm_pipeline.lib.privacy.access import write_subject_document
from cdm_pipeline.lib.privacy.erasure import compact_if_pending, erase_subject
from cdm_pipeline.lib.privacy.requests import process_requests
from cdm_pipeline.lib.privacy.subject import SubjectError, find_subject
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.marts_fixtures import AS_OF, at, days_before, marts_warehouse

KEY = b"test-privacy-key-0123456789"
# The person to erase: values nobody else has, so their bytes can be looked for.
EMAIL, OLD_EMAIL, PHONE = "quillon.zephyr@rare-mail.org", "q.zephyr@old-mail.org", "+447911123777"
FIRST, LAST = "Quillonbert", "Zephyrinski"


def _population(w):
    w.contact("c1", first_name=FIRST, last_name=LAST, email=OLD_EMAIL, phone=PHONE, email_opt_in=True,
              updated_at=at(days_before(300)), day=days_before(300))
    w.contact("c1", first_name=FIRST, last_name=LAST, email=EMAIL, phone=PHONE, email_opt_in=True,
              updated_at=at(days_before(20)), day=days_before(20))
    w.contact("s1", source="email_subscribers", email=EMAIL, linked_id="c1", day=days_before(20))
    w.order("o1", "c1", at(days_before(5)), 80.0)
    w.email_event("s1", "click", at(days_before(4)))
    w.web_event("b1", at(days_before(6), 9))  # before the login: the browser is theirs too
    w.web_event("b1", at(days_before(6), 9, 5), "login", user_id="c1")
    # Someone else, who must be untouched.
    w.contact("c2", first_name="Alice", last_name="Other", email="alice@other.org", phone="+447700900222",
              email_opt_in=True, updated_at=at(days_before(50)), day=days_before(50))
    w.order("o2", "c2", at(days_before(3)), 30.0)
    w.contact("c3", first_name="Bob", last_name="Third", email="bob@third.org", day=AS_OF)


def _text_everywhere(conn, work_area: bool = True) -> str:
    """Every text value of every table, as one string (what a query could ever return).

    Every attached database too: the identity stage's in-memory work area lives on the
    connection (``work_area=False`` leaves that scratch out, for comparing warehouse states).
    """
    parts = []
    for database, schema, table in conn.execute(
        "SELECT database_name, schema_name, table_name FROM duckdb_tables() WHERE NOT temporary"
        + ("" if work_area else " AND database_name <> 'identity_work'")
    ).fetchall():
        parts.append(" ".join(
            str(r) for r in conn.execute(f'SELECT * FROM "{database}"."{schema}"."{table}"').fetchall()))
    return "\n".join(parts)


@pytest.fixture
def erased(tmp_path):
    w = marts_warehouse(tmp_path, exports={"segments": ["lifecycle:new"]})
    _population(w)
    w.build()
    from cdm_pipeline.lib.exports.audiences import write_nightly_exports

    write_nightly_exports(w.conn, w.config)
    other = w.customer_of("crm_contacts", "c2")
    # What an identity step killed mid-Splink leaves in the warehouse: Splink's copy of the records.
    w.conn.execute("CREATE SCHEMA identity_splink")
    w.conn.execute("CREATE TABLE identity_splink.__splink__df_concat AS SELECT * FROM identity_work.records")
    before = _text_everywhere(w.conn)
    subject = find_subject(w.conn, w.config, email=" Quillon.Zephyr@RARE-mail.org ")
    result = erase_subject(w.conn, w.config, subject, "REQ-1", KEY)
    return w, subject, result, other, before


def test_the_subject_is_every_record_and_identifier_of_the_person(erased):
    w, subject, result, _, before = erased
    assert EMAIL in before and OLD_EMAIL in before and FIRST in before
    assert subject.emails == sorted([EMAIL, OLD_EMAIL]) and subject.phones == [PHONE]
    assert subject.records == [("crm_contacts", "c1"), ("email_subscribers", "s1"),
                               ("web_events", "client:b1"), ("web_events", "user:c1")]
    assert len(subject.customer_ids) == 1 and result.customers == 1


def test_erasure_removes_every_row_and_value_and_keeps_everyone_else(erased):
    w, subject, result, other, _ = erased
    text = _text_everywhere(w.conn)
    for value in (EMAIL, OLD_EMAIL, PHONE, FIRST, LAST):
        assert value not in text, value
    for schema, table in (
        ("staging", "contacts"), ("identity", "customer_xref"), ("identity", "customer_id_assignments")
    ):
        assert w.rows(f"SELECT count(*) FROM {schema}.{table} WHERE source_record_id IN"
                      " ('c1', 's1', 'client:b1', 'user:c1')") == [(0,)], table
    assert w.rows("SELECT count(*) FROM staging.web_events WHERE client_id = 'b1'") == [(0,)]
    assert result.rows_deleted["staging.contacts"] == 3
    assert result.rows_deleted["staging.orders"] == 1
    assert result.rows_deleted["staging.email_events"] == 1
    assert result.rows_deleted["staging.web_events"] == 2
    # The other customers keep their id, golden record, orders and marts rows.
    assert w.rows("SELECT customer_id, email FROM identity.golden_customers ORDER BY 2") == [
        (other, "alice@other.org"), (w.customer_of("crm_contacts", "c3"), "bob@third.org")]
    assert w.rows("SELECT customer_id, order_count FROM marts.customer_360 WHERE order_count > 0") == [(other, 1)]
    # The erased customer's id is retired, never reused.
    assert w.rows("SELECT status FROM identity.customer_id_registry WHERE customer_id = ?",
                  [subject.customer_ids[0]]) == [("retired",)]


def test_erasure_suppresses_keyed_hashes_only_and_is_audited(erased):
    w, subject, result, *_ = erased
    listed = set(w.rows("SELECT kind, value_hash FROM governance.suppression_list"))
    assert ("email", keyed_hash(EMAIL, KEY)) in listed and ("phone", keyed_hash(PHONE, KEY)) in listed
    assert ("record", keyed_hash("crm_contacts:c1", KEY)) in listed
    assert result.suppression_entries == len(listed) == 2 + 1 + 4
    audit = w.rows(
        "SELECT action, request_id, rows_affected FROM governance.audit_log WHERE action = 'privacy_erasure'"
    )
    assert audit == [("privacy_erasure", "REQ-1", result.total_rows)]
    detail = w.rows("SELECT detail FROM governance.audit_log")
    assert not any(EMAIL in d or PHONE in d for (d,) in detail)


def test_erasure_removes_the_person_from_audience_files(erased):
    w, subject, result, *_ = erased
    import hashlib

    files = list(w.config.exports.dir.rglob("*.csv"))
    assert files
    content = "".join(p.read_text() for p in files)
    assert hashlib.sha256(EMAIL.encode()).hexdigest() not in content
    assert result.export_lines_removed == 1


def test_compaction_removes_the_bytes_that_deletion_leaves_behind(erased):
    w, *_ = erased
    w.conn.close()
    path = w.config.warehouse
    wal = path.with_name(path.name + ".wal")
    left = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    assert LAST.encode() in left  # deleted, but still in the file's blocks
    # The erasure committed a note that a rewrite is owed: whoever opens the warehouse next
    # (here, as after a crash before the rewrite) finishes it, once.
    assert compact_if_pending(path, w.config.duckdb.connection_settings()) is True
    assert compact_if_pending(path, w.config.duckdb.connection_settings()) is False
    data = path.read_bytes()
    assert not path.with_name(path.name + ".wal").exists()
    for value in (EMAIL, OLD_EMAIL, PHONE, FIRST, LAST):
        assert value.encode() not in data, value
    conn = connect(path, read_only=True)
    assert conn.execute("SELECT count(*) FROM identity.golden_customers").fetchall() == [(2,)]
    conn.close()


def test_access_export_holds_every_layer_of_the_person_and_nobody_else(tmp_path):
    w = marts_warehouse(tmp_path)
    _population(w)
    w.build()
    subject = find_subject(w.conn, w.config, phone="07911 123777")
    out = tmp_path / "access" / "req.json"
    counts = write_subject_document(w.conn, w.config, subject, out, "REQ-2")
    document = json.loads(out.read_text())
    assert counts["staging"] == 3 + 1 + 1 + 2
    assert [r["source_record_id"] for r in document["staging"]["contacts"]] == ["c1", "c1", "s1"]
    assert document["marts"]["customer_360"][0]["email"] == EMAIL
    assert document["identity"]["golden_customers"][0]["last_name"] == LAST
    assert "alice@other.org" not in out.read_text()
    assert w.rows("SELECT action, request_id FROM governance.audit_log") == [("privacy_access_export", "REQ-2")]


def test_a_request_names_exactly_one_valid_identifier(tmp_path):
    w = marts_warehouse(tmp_path)
    _population(w)
    with pytest.raises(SubjectError, match="not a valid address"):
        find_subject(w.conn, w.config, email="not an address")
    with pytest.raises(SubjectError, match="exactly one"):
        find_subject(w.conn, w.config, email=EMAIL, phone=PHONE)


def test_requests_file_is_processed_once_per_request(tmp_path):
    w = marts_warehouse(tmp_path)
    _population(w)
    w.build()
    requests = w.config.privacy.requests_path
    requests.parent.mkdir(parents=True)
    requests.write_text(
        "request_id,action,email,phone,customer_id\n"
        f"A-1,access,{EMAIL},,\nE-1,erase,,{PHONE},\nX-1,erase,nobody@nowhere.org,,\n"
    )
    outcomes = process_requests(w.conn, w.config, KEY, "job")
    assert [(o.request_id, o.action, o.status, o.customers) for o in outcomes] == [
        ("A-1", "access", "done", 1), ("E-1", "erase", "done", 1), ("X-1", "erase", "not_found", 0)]
    # The access document was written, then removed by the erasure that followed (it held all
    # their data).
    assert w.rows(
        "SELECT action, request_id FROM governance.audit_log WHERE request_id IN ('A-1', 'E-1') ORDER BY 2"
    ) == [("privacy_access_export", "A-1"), ("privacy_erasure", "E-1")]
    assert not (w.config.privacy.access_dir / "A-1.json").exists()
    assert EMAIL not in _text_everywhere(w.conn)
    assert process_requests(w.conn, w.config, KEY, "job-2") == []
    assert w.rows("SELECT request_id, status FROM governance.privacy_requests ORDER BY 1") == [
        ("A-1", "done"), ("E-1", "done"), ("X-1", "not_found")]


def test_an_erasure_that_fails_half_way_changes_nothing(tmp_path, monkeypatch):
    from cdm_pipeline.lib.privacy import erasure

    w = marts_warehouse(tmp_path)
    _population(w)
    w.build()
    before = _text_everywhere(w.conn, work_area=False)
    subject = find_subject(w.conn, w.config, email=EMAIL)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(erasure, "_delete_identity_rows", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        erase_subject(w.conn, w.config, subject, "REQ-9", KEY)
    assert w.rows("SELECT count(*) FROM staging.contacts WHERE email = ?", [EMAIL]) == [(2,)]
    # Not even the suppression list was created: it rolled back with the rest.
    assert w.rows("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'suppression_list'") == [(0,)]
    assert _text_everywhere(w.conn, work_area=False) == before
