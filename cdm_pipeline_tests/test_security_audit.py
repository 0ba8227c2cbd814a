"""Every command that reads or exports personal data leaves one `governance.audit_log` row: who
(the OS user), what, when and how many records — and no personal value.

The commands run as real `cdm` subprocesses on a copy of the shared demo, as a user named by
``LOGNAME`` (what ``getpass.getuser()`` reads first), so the row names the user the process ran as.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.lib.catalog import AUDIT_LOG
from cdm_pipeline.lib.governance import audit_log
from cdm_pipeline.lib.governance.audit_log import current_actor, record_audit
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

KEY = "security-audit-test-key-93ac0f"
ACTOR = "audit-tester"


def _cdm(*args: str) -> subprocess.CompletedProcess:
    env = cli_env(CDM_PRIVACY_KEY=KEY, LOGNAME=ACTOR, USER=ACTOR)
    env.pop("SUDO_USER", None)
    return subprocess.run([CDM, *args], capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT)


def _rows(warehouse: Path, sql: str, params: list | None = None) -> list[tuple]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def audited(demo_project, tmp_path_factory) -> dict:
    """Run each command once on one copy; what each wrote to the audit log, and the person asked about."""
    project = demo_project.copy_to(tmp_path_factory.mktemp("audit") / "project")
    config = str(project / "cdm.yaml")
    warehouse = project / "data" / "warehouse" / "cdm.duckdb"
    customer_id, email, phone, first, last = _rows(
        warehouse,
        """SELECT c.customer_id, c.email, c.phone, c.first_name, c.last_name
        FROM marts.customer_360 c JOIN identity.customer_xref x USING (customer_id)
        WHERE c.email IS NOT NULL AND c.phone IS NOT NULL AND c.first_name IS NOT NULL
        GROUP BY ALL HAVING count(*) >= 2 ORDER BY c.customer_id LIMIT 1""",
    )[0]
    before = _rows(warehouse, f"SELECT count(*) FROM {AUDIT_LOG}")[0][0]
    commands = {
        "privacy_access_export": (
            "privacy", "export", "--email", email, "--out", str(project / "access.json"), "--request-id", "SAR-7",
        ),
        "analyst_export": ("export", "analyst", "--out", str(project / "analyst_export")),
        "audience_export": ("export", "segment", "Champions"),
        "identity_explain": ("identity", "explain", customer_id),
    }
    written = {}
    for action, args in commands.items():
        started = dt.datetime.now(dt.timezone.utc)
        done = _cdm(*args, "--config", config)
        assert done.returncode == 0, (action, done.stderr[-2000:])
        written[action] = _rows(
            warehouse,
            f"SELECT action, actor, occurred_at, rows_affected, request_id, detail FROM {AUDIT_LOG}"
            " WHERE occurred_at >= ? ORDER BY occurred_at",
            [started],
        )
    everything = _rows(warehouse, f"SELECT detail, actor FROM {AUDIT_LOG}")
    return {
        "written": written, "before": before, "after": len(everything), "all": everything,
        "person": {"email": email, "phone": phone, "first": first, "last": last, "customer_id": customer_id},
        "emails": {r[0] for r in _rows(warehouse, "SELECT DISTINCT email FROM staging.contacts WHERE email <> ''")},
        "phones": {r[0] for r in _rows(warehouse, "SELECT DISTINCT phone FROM staging.contacts WHERE phone <> ''")},
    }


@pytest.mark.parametrize(
    "action", ["privacy_access_export", "analyst_export", "audience_export", "identity_explain"]
)
def test_each_command_that_reads_personal_data_writes_one_audit_row_with_its_user_and_count(audited, action):
    (row,) = audited["written"][action]
    name, actor, occurred_at, rows_affected, request_id, detail = row
    assert name == action
    assert actor == ACTOR
    assert occurred_at.tzinfo is not None
    assert rows_affected > 0
    if action == "privacy_access_export":
        assert request_id == "SAR-7"
    if action == "identity_explain":
        assert detail.startswith(f"customer {audited['person']['customer_id']}: ") and "records" in detail


def test_no_audit_row_carries_a_personal_value(audited):
    person = audited["person"]
    assert audited["after"] == audited["before"] + 4
    for detail, _actor in audited["all"]:
        for value in (person["email"], person["phone"], person["phone"].lstrip("+")):
            assert value not in detail
        for name in (person["first"], person["last"]):
            assert not re.search(rf"\b{re.escape(name)}\b", detail)
        assert not any(email in detail for email in audited["emails"])
        assert not any(phone in detail for phone in audited["phones"])


# --- the writer -----------------------------------------------------------------------------------


def test_an_audit_log_of_an_earlier_version_gains_the_actor_column(tmp_path):
    conn = duckdb.connect(str(tmp_path / "old.duckdb"))
    conn.execute("CREATE SCHEMA governance")
    conn.execute(
        f"CREATE TABLE {AUDIT_LOG} (occurred_at TIMESTAMPTZ NOT NULL, action VARCHAR NOT NULL,"
        " request_id VARCHAR, rows_affected BIGINT, detail VARCHAR)"
    )
    conn.execute(f"INSERT INTO {AUDIT_LOG} VALUES (now(), 'privacy_erasure', 'R-1', 3, 'before the upgrade')")
    record_audit(conn, "identity_explain", None, 2, "customer CUST-1: 2 records")
    rows = conn.execute(f"SELECT action, actor FROM {AUDIT_LOG} ORDER BY occurred_at").fetchall()
    conn.close()
    assert rows == [("privacy_erasure", None), ("identity_explain", current_actor())]


def test_the_actor_is_the_login_name_and_names_the_sudo_invoker(monkeypatch):
    monkeypatch.setenv("LOGNAME", "svc-cdm")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert current_actor() == "svc-cdm"
    monkeypatch.setenv("SUDO_USER", "alice")
    assert current_actor() == "svc-cdm (sudo by alice)"
    monkeypatch.setenv("SUDO_USER", "svc-cdm")
    assert current_actor() == "svc-cdm"


def test_without_a_user_name_the_actor_is_the_uid(monkeypatch):
    def no_name() -> str:
        raise OSError("no user name")

    monkeypatch.setattr(audit_log.getpass, "getuser", no_name)
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert current_actor() == f"uid {os.getuid()}"
