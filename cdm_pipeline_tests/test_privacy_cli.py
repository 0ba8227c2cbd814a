"""Erasure end to end through the real CLI: the person leaves every layer and the file's bytes,
and neither a re-run nor a backfill brings them back."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import duckdb
import pytest
import yaml

from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, REPO_ROOT, cli_env

pytestmark = pytest.mark.slow

KEY = "cli-test-privacy-key-0123456789"
EMAIL, PHONE_TYPED, PHONE = "quillon.zephyr@rare-mail.org", "07911 123777", "+447911123777"
FIRST, LAST, CONTACT_ID = "Quillonbert", "Zephyrinski", "C-ERASE-0001"


def _inject_person(landing: Path) -> None:
    """A person nobody else resembles, in the CRM, the ESP, the orders and a malformed line."""
    contacts = next((landing / "crm" / "contacts" / "2026-10-01").glob("*.csv"))
    with contacts.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    row = dict.fromkeys(header, "")
    row.update(contact_id=CONTACT_ID, FirstName=FIRST, LastName=LAST, Email=EMAIL.upper(), Phone=PHONE_TYPED,
               EmailOptIn="true", DoNotSell="false", CreatedDate="2026-09-01T10:00:00Z",
               LastModifiedDate="2026-09-01T10:00:00Z")
    with contacts.open("a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, header).writerow(row)
        handle.write(f'C-BROKEN-1,"{FIRST},{LAST},{EMAIL},unterminated\n')
    subscribers = next((landing / "email" / "subscribers" / "2026-10-02").glob("*.jsonl"))
    with subscribers.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({
            "subscriber_id": "sub_erase01", "email": f" {EMAIL} ", "first_name": FIRST, "last_name": LAST,
            "crm_id": CONTACT_ID, "status": "subscribed", "opted_in_at": "2026-10-02T08:00:00Z",
            "updated_at": "2026-10-02T08:00:00Z", "list_name": "Weekly Newsletter",
        }) + "\n")
    orders = next((landing / "crm" / "orders" / "2026-10-02").glob("*.csv"))
    with orders.open("a", encoding="utf-8") as handle:
        handle.write(f"SO-ERASE-1,{CONTACT_ID},2026-10-02T12:00:00Z,99.00,GBP,completed,web\n")


def _cdm(*args: str, key: bool = True) -> subprocess.CompletedProcess:
    env = cli_env()
    if key:
        env["CDM_PRIVACY_KEY"] = KEY
    else:
        env.pop("CDM_PRIVACY_KEY", None)
    return subprocess.run([CDM, *args], capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT)


def _file_bytes(path: Path) -> bytes:
    wal = path.with_name(path.name + ".wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _count(warehouse: Path, sql: str) -> int:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def test_erasure_through_the_cli_removes_every_trace_and_survives_a_backfill(tmp_path):
    landing = tmp_path / "landing"
    generated = _cdm("generate-demo", "--people", "600", "--days", "3", "--seed", "5", "--out", str(landing))
    assert generated.returncode == 0, generated.stderr[-2000:]
    _inject_person(landing)
    document = yaml.safe_load((REPO_ROOT / "cdm.yaml").read_text())
    document.update(warehouse="wh/cdm.duckdb", landing_dir="landing")
    document["identity"].pop("truth_path", None)
    config = tmp_path / "cdm.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    warehouse = tmp_path / "wh" / "cdm.duckdb"

    first = _cdm("run", "--config", str(config), "--from", "2026-10-01", "--to", "2026-10-03")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    assert _count(warehouse, f"SELECT count(*) FROM staging.contacts WHERE email = '{EMAIL}'") == 2
    assert _count(warehouse, f"SELECT count(*) FROM staging.orders WHERE contact_id = '{CONTACT_ID}'") == 1
    assert _count(
        warehouse, f"SELECT count(*) FROM quarantine.crm_contacts_rejects WHERE raw_line LIKE '%{FIRST}%'"
    ) == 1

    # Without the key: one line, nothing changed.
    refused = _cdm("privacy", "erase", "--config", str(config), "--email", EMAIL, key=False)
    assert refused.returncode == 2 and "CDM_PRIVACY_KEY" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    access = _cdm(
        "privacy", "export", "--config", str(config), "--email", EMAIL, "--out", str(tmp_path / "access.json")
    )
    assert access.returncode == 0, access.stderr[-2000:]
    held = json.loads((tmp_path / "access.json").read_text())
    assert {r["contact_id"] for r in held["raw"]["crm_contacts"]} == {CONTACT_ID}
    assert [r["order_id"] for r in held["raw"]["crm_orders"]] == ["SO-ERASE-1"]
    assert held["marts"]["customer_360"][0]["last_name"] == LAST

    erased = _cdm("privacy", "erase", "--config", str(config), "--email", EMAIL, "--request-id", "R-1")
    assert erased.returncode == 0, erased.stdout[-2000:] + erased.stderr[-3000:]
    assert "erased request R-1: 1 customer(s)" in erased.stdout
    for output in (erased.stdout, erased.stderr, access.stdout, access.stderr):
        assert EMAIL not in output and PHONE not in output and FIRST not in output
    data = _file_bytes(warehouse)
    for value in (EMAIL, EMAIL.upper(), PHONE, PHONE_TYPED, FIRST, LAST, CONTACT_ID):
        assert value.encode() not in data, value

    # A backfill of the same days re-reads the landing files: the person stays out.
    again = _cdm("run", "--config", str(config), "--from", "2026-10-01", "--to", "2026-10-03")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    # Their CRM row, their unreadable line, their subscription and their order.
    assert "suppressed: 4 rows of erased people dropped before landing" in again.stdout
    assert _count(warehouse, f"SELECT count(*) FROM raw.crm_contacts WHERE contact_id = '{CONTACT_ID}'") == 0
    assert _count(warehouse, "SELECT count(*) FROM raw.email_subscribers WHERE subscriber_id = 'sub_erase01'") == 0
    assert _count(warehouse, "SELECT count(*) FROM raw.crm_orders WHERE order_id = 'SO-ERASE-1'") == 0
    assert _count(
        warehouse, f"SELECT count(*) FROM quarantine.crm_contacts_rejects WHERE raw_line LIKE '%{EMAIL}%'"
    ) == 0
    assert _count(
        warehouse,
        "SELECT count(*) FROM governance.audit_log WHERE action = 'privacy_erasure' AND request_id = 'R-1'",
    ) == 1
    nothing = _cdm(
        "privacy", "export", "--config", str(config), "--email", EMAIL, "--out", str(tmp_path / "after.json")
    )
    assert nothing.returncode == 0 and "0 customer(s)" in nothing.stdout
