"""Incremental identity nights (lib/identity/incremental.py) against full re-links.

The main test replays a 14-day demo night by night through two warehouses fed the same staged
rows: one resolves incrementally, the other re-links everyone every night. Their customers, ids,
id changes and golden records must be the same after every night, through updates, new records,
a changed email that merges two customers and its revert that splits them, and an erasure.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.config import load_config
from cdm_pipeline.lib.identity.resolve import resolve_identities
from cdm_pipeline.lib.privacy.erasure import erase_subject
from cdm_pipeline.lib.privacy.subject import find_subject
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env, write_config
from cdm_pipeline_tests.identity_fixtures import (
    DAY1,
    DAY2,
    contact,
    insert_rows,
    staged_warehouse,
    write_identity_config,
)

START = dt.date(2026, 10, 1)
DAYS = 14
KEY = bytes(range(32))


@pytest.fixture(scope="module")
def demo_staging(tmp_path_factory) -> Path:
    """A 400-person, 14-day demo through the real pipeline: its warehouse holds every staged day."""
    root = tmp_path_factory.mktemp("incremental_demo")
    config = write_config(root, (Path(__file__).parents[1] / "cdm.yaml").read_text())
    generated = subprocess.run(
        [CDM, "generate-demo", "--people", "400", "--days", str(DAYS), "--seed", "21",
         "--out", str(root / "data" / "landing")],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert generated.returncode == 0, generated.stderr[-2000:]
    run = subprocess.run(
        [CDM, "run", "--config", str(config), "--from", START.isoformat(),
         "--to", (START + dt.timedelta(days=DAYS - 1)).isoformat()],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return load_config(config).warehouse


class Night:
    """One warehouse of the replay, fed the demo's staged rows up to a day."""

    def __init__(self, folder: Path, source: Path, incremental: bool):
        # The demo's own config (sources, same-id links, survivorship) in a folder of its own;
        # both sides share one model file, trained by the first night.
        folder.mkdir()
        config = load_config(write_config(folder, (source.parents[2] / "cdm.yaml").read_text()))
        identity = config.identity.model_copy(update={
            "incremental": incremental, "full_relink_every_days": 0, "model_path": folder.parent / "model.json",
        })
        self.config = config.model_copy(update={"identity": identity})
        self.config.warehouse.parent.mkdir(parents=True)
        self.conn = connect(self.config.warehouse)
        self.source = source
        self.conn.execute("CREATE SCHEMA IF NOT EXISTS staging")
        self.erased: list[tuple[str, str]] = []

    def stage(self, day: dt.date, email_change: tuple[str, str, str] | None) -> None:
        # Attached only while copying: the demo's own identity tables must not be in sight.
        self.conn.execute(f"ATTACH '{self.source}' AS demo (READ_ONLY)")
        for kind in ("contacts", "web_events"):
            self.conn.execute(
                f"CREATE OR REPLACE TABLE staging.{kind} AS SELECT * FROM demo.staging.{kind}"
                " WHERE _partition_date <= ?", [day],
            )
        self.conn.execute("DETACH demo")
        if email_change:
            source, record, email = email_change
            self.conn.execute(
                "UPDATE staging.contacts SET email = ? WHERE source_name = ? AND source_record_id = ?",
                [email, source, record],
            )
        # Erased people stay out, as the suppression list keeps them out of later loads.
        for source, record in self.erased:
            self.conn.execute(
                "DELETE FROM staging.contacts WHERE source_name = ? AND source_record_id = ?", [source, record]
            )

    def resolve(self, run_id: str):
        return resolve_identities(self.conn, self.config, run_id)

    def erase(self, customer_id: str, request_id: str) -> None:
        subject = find_subject(self.conn, self.config, customer_id=customer_id)
        self.erased += [r for r in subject.records if not r[1].startswith(("client:", "user:"))]
        erase_subject(self.conn, self.config, subject, request_id, KEY)

    def state(self) -> dict:
        def rows(sql: str) -> list:
            return sorted(self.conn.execute(sql).fetchall(), key=repr)

        q = self.conn.execute
        return {
            "xref": rows("SELECT source_name, source_record_id, customer_id FROM identity.customer_xref"),
            "golden": rows("SELECT * FROM identity.golden_customers"),
            "registry": rows("SELECT customer_id, status, merged_into FROM identity.customer_id_registry"),
            "changes": sorted(q("SELECT run_id, change, customer_id, related_customer_id, records"
                                " FROM identity.customer_id_changes").fetchall(), key=repr),
            "provenance": sorted(q("SELECT * FROM identity.golden_customer_provenance").fetchall(), key=repr),
        }


def _pairwise_f1(a: list[tuple], b: list[tuple]) -> float:
    """Pairwise F1 of clustering ``b`` against ``a`` (rows: source, record, customer)."""
    def pairs(rows):
        groups: dict[str, list] = {}
        for source, record, customer in rows:
            groups.setdefault(customer, []).append((source, record))
        return {(x, y) for members in groups.values() for x in members for y in members if x < y}
    pa, pb = pairs(a), pairs(b)
    both = len(pa & pb)
    return 2 * both / (len(pa) + len(pb)) if pa or pb else 1.0


def test_incremental_nights_equal_full_relinks_night_by_night(tmp_path, demo_staging, monkeypatch):
    monkeypatch.setenv("CDM_PRIVACY_KEY", KEY.hex())
    incremental = Night(tmp_path / "incremental", demo_staging, incremental=True)
    full = Night(tmp_path / "full", demo_staging, incremental=False)
    # A CRM record that takes another customer's email for nights 6-8: merged, then split again.
    with duckdb.connect(str(demo_staging), read_only=True) as demo:
        crm = demo.execute(
            """SELECT c.source_record_id, other.email FROM staging.contacts c,
                   (SELECT email FROM staging.contacts WHERE source_name = 'email_subscribers'
                    AND _partition_date = ? AND email IS NOT NULL ORDER BY source_record_id LIMIT 1) other
               WHERE c.source_name = 'crm_contacts' AND c._partition_date = ? ORDER BY 1 LIMIT 1""",
            [START, START],
        ).fetchone()
    change = ("crm_contacts", crm[0], crm[1])
    modes, changed = [], []
    for night in range(1, DAYS + 1):
        day = START + dt.timedelta(days=night - 1)
        email_change = change if 6 <= night <= 8 else None
        for side in (incremental, full):
            side.stage(day, email_change)
        summary = incremental.resolve(f"night-{night}")
        reference = full.resolve(f"night-{night}")
        modes.append(summary.mode.name)
        assert reference.mode.name == "full" and reference.mode.reason == "identity.incremental is off"
        if summary.changes:
            changed.append(summary.changes.changed)
        # The same customers, ids, id history and golden records as a full re-link, every night.
        assert incremental.state() == full.state(), f"night {night} differs"
        assert (summary.ids.new, summary.ids.merged, summary.ids.split, summary.ids.retired) == (
            reference.ids.new, reference.ids.merged, reference.ids.split, reference.ids.retired)
        if night == 6:
            assert summary.ids.merged >= 1  # the borrowed email joined two customers
        if night == 9:
            assert summary.ids.split >= 1  # and giving it back parted them
    assert modes == ["full"] + ["incremental"] * (DAYS - 1)
    records = incremental.conn.execute("SELECT count(*) FROM identity.customer_xref").fetchone()[0]
    # A night re-scores only what changed: well under the whole graph.
    assert 0 < max(changed) < records / 4

    # An erasure of a customer with several records: re-resolved incrementally (removed records).
    (customer,) = incremental.conn.execute(
        "SELECT customer_id FROM identity.customer_xref WHERE identifier_type = 'record'"
        " GROUP BY 1 HAVING count(*) >= 3 ORDER BY 1 LIMIT 1"
    ).fetchone()
    incremental.erase(customer, "REQ-INC")
    full.erase(customer, "REQ-INC")
    (mode, removed) = incremental.conn.execute(
        "SELECT mode, removed_records FROM identity.resolution_runs ORDER BY resolved_at DESC LIMIT 1"
    ).fetchone()
    assert mode == "incremental" and removed >= 3
    assert incremental.state() == full.state()
    # The re-resolution dropped the erased records from the stored graph and linkage input.
    assert incremental.erased
    for table in ("graph_nodes", "linkage_input"):
        rows = set(incremental.conn.execute(f"SELECT source_name, source_record_id FROM identity.{table}").fetchall())
        assert not rows & set(incremental.erased), table
        assert not [r for r in rows if r[1].startswith("erased:")], table

    # A full re-link of the incrementally kept warehouse changes nobody.
    before = incremental.state()["xref"]
    relinked = resolve_identities(incremental.conn, incremental.config, "relink", full=True)
    assert relinked.mode.reason == "a full re-link was asked for"
    after = incremental.state()["xref"]
    assert _pairwise_f1(before, after) == 1.0
    assert before == after
    assert (relinked.ids.new, relinked.ids.merged, relinked.ids.split, relinked.ids.retired) == (0, 0, 0, 0)


def _crm(record_id: str, first: str, last: str, email: str, *, day: dt.date = DAY1, **values) -> dict:
    return contact("crm_contacts", record_id, day=day, first_name=first, last_name=last, email=email,
                   birth_date=values.pop("birth_date", "1980-01-01"), **values)


def _people(n: int, day: dt.date = DAY1) -> list[dict]:
    firsts = ("Ada", "Ben", "Cleo", "Dev", "Eve", "Finn", "Gia", "Hal", "Ivy", "Jon", "Kim", "Lea")
    return [
        _crm(f"C{i:03d}", firsts[i % len(firsts)], f"Surname{i}", f"person{i}@mail.example.org", day=day,
             birth_date=f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}", postcode=f"P{i:03d}")
        for i in range(n)
    ] + [
        # Each person's second record: same email, a typo in the surname.
        _crm(f"D{i:03d}", firsts[i % len(firsts)], f"Surnam{i}", f"person{i}@mail.example.org", day=day,
             birth_date=f"19{50 + i % 40}-0{1 + i % 9}-1{i % 10}", postcode=f"P{i:03d}")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    """A model trained once on the small population (training is not what these tests test)."""
    folder = tmp_path_factory.mktemp("small_model")
    wh = staged_warehouse(folder, _people(120), u_sample_pairs=50_000)
    resolve_identities(wh.conn, wh.config, "train")
    wh.conn.close()
    return wh.config.identity.model_path


@pytest.fixture
def small(tmp_path, small_model):
    (tmp_path / "identity").mkdir()
    shutil.copy(small_model, tmp_path / "identity" / "model.json")
    wh = staged_warehouse(tmp_path, _people(120), u_sample_pairs=50_000)
    first = resolve_identities(wh.conn, wh.config, "run-1")
    assert (first.mode.name, first.mode.reason) == ("full", "no stored graph yet")
    yield wh, tmp_path
    wh.conn.close()


def _config(folder: Path, **identity):
    return write_identity_config(folder, ("crm_contacts",), u_sample_pairs=50_000, **identity)


def test_nothing_changed_means_nothing_scored(small):
    wh, _ = small
    summary = resolve_identities(wh.conn, wh.config, "run-2")
    assert summary.mode.name == "incremental"
    assert summary.changes.changed == summary.changes.rescored == summary.changes.removed == 0
    assert summary.changes.scope == 0
    assert summary.matching.comparisons == 0
    assert (summary.ids.new, summary.ids.merged, summary.ids.split, summary.ids.retired) == (0, 0, 0, 0)
    assert summary.ids.customers == 120


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"max_cluster_size": 40}, "the engine, identity settings, sources or the overrides file changed"),
        ({"incremental": False}, "identity.incremental is off"),
    ],
)
def test_a_settings_change_runs_a_full_relink(small, change, reason):
    wh, folder = small
    summary = resolve_identities(wh.conn, _config(folder, **change), "run-2")
    assert (summary.mode.name, summary.mode.reason) == ("full", reason)


def test_an_overrides_edit_runs_a_full_relink_and_is_applied(small):
    wh, folder = small
    (folder / "identity" / "overrides.csv").write_text(
        "decision,source_name_l,source_record_id_l,source_name_r,source_record_id_r\n"
        "cannot_link,crm_contacts,C001,crm_contacts,D001\n"
    )
    summary = resolve_identities(wh.conn, wh.config, "run-2")
    assert (summary.mode.name, summary.mode.reason) == (
        "full", "the engine, identity settings, sources or the overrides file changed")
    assert summary.clusters.overrides == {"separated": 1}
    # The next night builds on it incrementally and keeps the override in force.
    insert_rows(wh.conn, "contacts", [_crm("C001", "Ben", "Surname1", "person1@mail.example.org", day=DAY2,
                                           birth_date="1951-02-11", postcode="P001")])
    night = resolve_identities(wh.conn, wh.config, "run-3")
    assert night.mode.name == "incremental" and night.changes.changed == 1
    assert night.clusters.overrides == {"separated": 1}
    ids = dict(wh.conn.execute(
        "SELECT source_record_id, customer_id FROM identity.customer_xref WHERE source_record_id IN ('C001', 'D001')"
    ).fetchall())
    assert ids["C001"] != ids["D001"]


def test_a_new_model_version_or_an_old_full_relink_runs_a_full_relink(small):
    wh, folder = small
    wh.conn.execute(
        "UPDATE identity.resolution_runs SET resolved_at = resolved_at - INTERVAL 8 DAY"
    )
    summary = resolve_identities(wh.conn, _config(folder, full_relink_every_days=7), "run-2")
    assert summary.mode.name == "full" and "full_relink_every_days" in summary.mode.reason
    summary = resolve_identities(wh.conn, _config(folder, full_relink_every_days=7), "run-3")
    assert summary.mode.name == "incremental"
    retrained = resolve_identities(wh.conn, wh.config, "run-4", retrain=True)
    assert (retrained.mode.name, retrained.mode.reason) == ("full", "model version 2 was trained this run")


def test_a_record_that_stops_linking_splits_its_customer(small):
    wh, _ = small
    before = dict(wh.conn.execute(
        "SELECT source_record_id, customer_id FROM identity.customer_xref WHERE source_record_id IN ('C007', 'D007')"
    ).fetchall())
    assert before["C007"] == before["D007"]
    # D007 is re-exported as somebody else entirely.
    insert_rows(wh.conn, "contacts", [_crm("D007", "Zed", "Other", "zed@elsewhere.example.net", day=DAY2,
                                           birth_date="2001-12-30", postcode="Z999")])
    wh.conn.execute("DELETE FROM staging.contacts WHERE source_record_id = 'D007' AND _partition_date = ?", [DAY1])
    summary = resolve_identities(wh.conn, wh.config, "run-2")
    assert summary.mode.name == "incremental"
    assert (summary.changes.changed, summary.changes.rescored) == (1, 1)
    assert summary.changes.scope == 2  # the record and the one it used to join
    assert (summary.ids.split, summary.ids.new, summary.ids.merged) == (1, 0, 0)
    after = dict(wh.conn.execute(
        "SELECT source_record_id, customer_id FROM identity.customer_xref WHERE source_record_id IN ('C007', 'D007')"
    ).fetchall())
    assert after["C007"] == before["C007"] and after["D007"] != before["D007"]


_KILL_IN_PUBLISH = textwrap.dedent(
    """
    import os, signal, sys
    from cdm_pipeline.config import load_config
    from cdm_pipeline.lib.identity import resolve
    from cdm_pipeline.lib.warehouse import connect

    real = resolve._save_graph
    def dies_half_way(conn, *, incremental):
        real(conn, incremental=incremental)  # the stored graph is rewritten, not yet committed
        os.kill(os.getpid(), signal.SIGKILL)
    resolve._save_graph = dies_half_way
    config = load_config(sys.argv[1])
    resolve.resolve_identities(connect(config.warehouse), config, "night-that-dies")
    """
)


def _published(conn: duckdb.DuckDBPyConnection) -> tuple:
    q = conn.execute
    return (
        sorted(q("SELECT * FROM identity.customer_xref").fetchall(), key=repr),
        sorted(q("SELECT * FROM identity.graph_nodes").fetchall(), key=repr),
        sorted(q("SELECT * FROM identity.scored_pairs").fetchall(), key=repr),
        q("SELECT count(*) FROM identity.resolution_runs").fetchall(),
    )


def test_a_night_killed_half_way_leaves_yesterday_and_the_next_night_resumes(small, tmp_path):
    wh, folder = small
    insert_rows(wh.conn, "contacts", _people(130, day=DAY2)[120:130] + [
        _crm("C003", "Dev", "Surname3", "new-address@mail.example.org", day=DAY2, birth_date="1953-04-13",
             postcode="P003"),
    ])
    yesterday = _published(wh.conn)
    wh.conn.close()
    script = tmp_path / "dies.py"
    script.write_text(_KILL_IN_PUBLISH)
    died = subprocess.run(
        [sys.executable, str(script), str(folder / "cdm.yaml")],
        capture_output=True, text=True, env={**os.environ, **cli_env()}, timeout=HANG_TIMEOUT,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr[-2000:]
    conn = connect(wh.config.warehouse)
    assert _published(conn) == yesterday
    # The next night finds the same changes in committed state, and ends where a full re-link does.
    night = resolve_identities(conn, wh.config, "next-night")
    assert night.mode.name == "incremental"
    assert night.changes.changed == 11  # ten new records and one new email
    assert night.ids.new == 10
    incremental = sorted(conn.execute("SELECT source_name, source_record_id, customer_id FROM identity.customer_xref"
                                      ).fetchall())
    copy = tmp_path / "relinked.duckdb"
    conn.close()
    shutil.copy(wh.config.warehouse, copy)
    conn = connect(copy)
    resolve_identities(conn, wh.config.model_copy(update={"warehouse": copy}), "relink", full=True)
    relinked = sorted(conn.execute("SELECT source_name, source_record_id, customer_id FROM identity.customer_xref"
                                   ).fetchall())
    assert relinked == incremental
    conn.close()
