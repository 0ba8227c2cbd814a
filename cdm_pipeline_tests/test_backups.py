"""Backups and restore: checksummed owner-only snapshots, and a restore that never brings an
erased person back; the suppression ledger and the privacy key's fingerprint behind it.

Each test works on a private copy of the session's demo project (``demo_project``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdm_pipeline.config import load_config
from cdm_pipeline.defs.governance.assets import build_nightly_backup_asset
from cdm_pipeline.lib.catalog import GOVERNANCE_REPORT_KEY_PATH, INSIGHTS_KEY_PATH
from cdm_pipeline.lib.extract.load import ExtractError, load_partition
from cdm_pipeline.lib.personal_data.keyed_hash import key_fingerprint
from cdm_pipeline.lib.personal_data.suppression_ledger import LEDGER_NAME, read_ledger
from cdm_pipeline.lib.privacy.backups import MANIFEST, WAREHOUSE_FILE, list_snapshots, write_snapshot
from cdm_pipeline.lib.warehouse import open_config_warehouse
from cdm_pipeline.resources import WarehouseResource
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

pytestmark = pytest.mark.slow

KEY = "backup-test-privacy-key-0123456789"
OTHER_KEY = "another-privacy-key-9876543210abcd"


def _cdm(*args: str, key: str | None = KEY) -> subprocess.CompletedProcess:
    env = cli_env()
    env.pop("CDM_PRIVACY_KEY", None)
    if key:
        env["CDM_PRIVACY_KEY"] = key
    return subprocess.run([CDM, *args], capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT)


@pytest.fixture
def project(demo_project, tmp_path) -> Path:
    """A private copy of the demo project; returns its config path."""
    return demo_project.copy_to(tmp_path / "project") / "cdm.yaml"


def _set(config_path: Path, section: str, **values) -> None:
    document = yaml.safe_load(config_path.read_text())
    document.setdefault(section, {}).update(values)
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))


def _query(warehouse: Path, sql: str, params=None) -> list:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def _person(warehouse: Path) -> tuple[str, str, str]:
    """(email, phone, last name) of a customer whose last name no other row of the warehouse holds.

    A row holding the name but neither of their e-mail address and phone may be someone else's (a
    namesake, a street): such a name could not prove anything by its bytes, so it is not chosen.
    """
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        candidates = conn.execute("""
            WITH c AS (SELECT x.customer_id, s.email, s.phone, s.last_name FROM staging.contacts s
                       JOIN identity.customer_xref x USING (source_name, source_record_id))
            SELECT any_value(email), any_value(phone), last_name FROM c
            WHERE email IS NOT NULL AND phone IS NOT NULL AND length(last_name) >= 6
            GROUP BY last_name
            HAVING count(DISTINCT customer_id) = 1 AND count(DISTINCT email) = 1 AND count(DISTINCT phone) = 1
            ORDER BY last_name""").fetchall()
        tables = conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables()"
            " WHERE schema_name IN ('raw', 'staging', 'quarantine', 'identity', 'marts')"
        ).fetchall()
        for email, phone, last in candidates:
            elsewhere = sum(
                conn.execute(
                    f'SELECT count(*) FROM "{schema}"."{table}" AS r WHERE contains(lower(CAST(r AS VARCHAR)), $name)'
                    " AND NOT contains(lower(CAST(r AS VARCHAR)), $email)"
                    " AND NOT contains(regexp_replace(CAST(r AS VARCHAR), '[^0-9]', '', 'g'), right($phone, 9))",
                    {"name": last.lower(), "email": email, "phone": phone},
                ).fetchone()[0]
                for schema, table in tables
            )
            if not elsewhere:
                return email, phone, last
    finally:
        conn.close()
    raise AssertionError("the demo has no customer whose last name only their own rows hold")


def _files_under(folder: Path, *skipped: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and not any(s in p.parents for s in skipped)]


def test_backup_writes_an_owner_only_snapshot_whose_manifest_checks_every_file(project):
    done = _cdm("backup", "--config", str(project))
    assert done.returncode == 0, done.stderr[-2000:]
    config = load_config(project)
    (snapshot,) = list_snapshots(config.backups.dir)
    assert f"backup {snapshot.path.name}:" in done.stdout and "checksums verified" in done.stdout
    manifest = json.loads((snapshot.path / MANIFEST).read_text())
    files = manifest["files"]
    assert {WAREHOUSE_FILE, "identity/model.json", "run_state/history/runs.db"} <= set(files)
    assert any(name.startswith("run_state/history/runs/") for name in files)  # the run's event log
    for name, entry in files.items():
        path = snapshot.path / name
        assert path.stat().st_size == entry["size"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    for folder in (config.backups.dir, snapshot.path, *(p for p in snapshot.path.rglob("*") if p.is_dir())):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert manifest["cdm_version"] and manifest["created_at"]
    # The copy is a whole warehouse: the same customers as the live one.
    count = "SELECT count(*) FROM identity.golden_customers"
    assert _query(snapshot.path / WAREHOUSE_FILE, count) == _query(config.warehouse, count)
    audit = _query(config.warehouse, "SELECT detail FROM governance.audit_log WHERE action = 'backup'")
    assert len(audit) == 1 and snapshot.path.name in audit[0][0]


def test_a_corrupt_snapshot_is_refused_and_the_warehouse_is_left_alone(project):
    assert _cdm("backup", "--config", str(project)).returncode == 0
    config = load_config(project)
    (snapshot,) = list_snapshots(config.backups.dir)
    copy = snapshot.path / WAREHOUSE_FILE
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    before = config.warehouse.read_bytes()

    refused = _cdm("restore", snapshot.path.name, "--config", str(project))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"cdm: error: not restored: snapshot {snapshot.path.name}: {WAREHOUSE_FILE} does not match its checksum"
        " (corrupt or changed)"
    ]
    assert config.warehouse.read_bytes() == before
    assert not config.warehouse.with_name(config.warehouse.name + ".restoring").exists()


def test_restoring_an_older_backup_does_not_bring_an_erased_person_back(project):
    config = load_config(project)
    email, phone, last = _person(config.warehouse)
    backup = _cdm("backup", "--config", str(project))
    assert backup.returncode == 0, backup.stderr[-2000:]
    (snapshot,) = list_snapshots(config.backups.dir)

    erased = _cdm("privacy", "erase", "--config", str(project), "--email", email, "--request-id", "R-GONE")
    assert erased.returncode == 0, erased.stdout[-2000:] + erased.stderr[-2000:]
    ledger = config.warehouse.parent / LEDGER_NAME
    assert stat.S_IMODE(ledger.stat().st_mode) == 0o600
    entries = read_ledger(ledger)
    assert {e.kind for e in entries} == {"email", "phone", "record"}
    assert {e.request_id for e in entries} == {"R-GONE"} and {e.key_fingerprint for e in entries} == {
        key_fingerprint(KEY.encode())
    }
    assert email.encode() not in ledger.read_bytes() and phone.encode() not in ledger.read_bytes()

    restored = _cdm("restore", snapshot.path.name, "--config", str(project))
    assert restored.returncode == 0, restored.stdout[-2000:] + restored.stderr[-3000:]
    assert f"restored {snapshot.path.name}" in restored.stdout and "1 people erased again" in restored.stdout
    for output in (restored.stdout, restored.stderr):
        assert email not in output and phone not in output and last not in output

    # Not a byte of them in any file of the data folder: warehouse, its WAL, reports, exports, ...
    # but the landing files (the source systems' exports, which erasure leaves to them) and the
    # backups.
    data_folder = config.warehouse.parent.parent
    for path in _files_under(data_folder, config.backups.dir, config.landing_dir):
        data = path.read_bytes()
        for value in (email, phone, last):
            assert value.encode() not in data, (path.name, "holds a value of the erased person")
    # ... nor in the run state the restore put back.
    for path in _files_under(project.parent / ".dagster_home"):
        assert email.encode() not in path.read_bytes(), path.name
    # The old snapshot still holds them, as a backup does until backups.keep ages it out.
    assert email.encode() in (snapshot.path / WAREHOUSE_FILE).read_bytes()

    for table, column, value in (
        ("staging.contacts", "email", email), ("staging.contacts", "phone", phone),
        ("identity.golden_customers", "email", email), ("marts.customer_360", "email", email),
        ("staging.contacts", "last_name", last),
    ):
        assert _query(config.warehouse, f"SELECT count(*) FROM {table} WHERE {column} = ?", [value]) == [(0,)]
    actions = [row[0] for row in _query(config.warehouse, "SELECT action FROM governance.audit_log")]
    assert "restore" in actions and "privacy_erasure" in actions
    # The warehouse is the snapshot's (the erasure's own audit row was written after it), re-erased.
    assert _query(
        config.warehouse, "SELECT count(*) FROM governance.audit_log WHERE request_id = 'R-GONE'"
    ) == [(0,)]
    assert _query(config.warehouse, "SELECT count(*) FROM governance.suppression_list") == [(len(entries),)]


def test_only_the_newest_snapshots_are_kept(project):
    _set(project, "backups", keep=2)
    config = load_config(project)
    names = []
    for _ in range(3):
        with open_config_warehouse(config) as conn:
            names.append(write_snapshot(conn, config, None, privacy_key=None, encryption=None).path.name)
    kept = list_snapshots(config.backups.dir)
    assert [s.path.name for s in kept] == sorted(names, reverse=True)[:2]
    assert all(s.verified for s in kept)
    assert not (config.backups.dir / names[0]).exists()
    assert not [p for p in config.backups.dir.iterdir() if p.name.endswith(".partial")]


def test_another_privacy_key_is_refused_after_an_erasure(project):
    config = load_config(project)
    email, phone, _ = _person(config.warehouse)
    assert _cdm("privacy", "erase", "--config", str(project), "--phone", phone).returncode == 0

    ((other,),) = _query(
        config.warehouse, "SELECT min(email) FROM staging.contacts WHERE email IS NOT NULL AND email <> ?", [email]
    )
    before = _query(config.warehouse, "SELECT count(*) FROM staging.contacts WHERE email = ?", [other])
    refused = _cdm("privacy", "erase", "--config", str(project), "--email", other, key=OTHER_KEY)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert "CDM_PRIVACY_KEY is not the key this warehouse's suppression list was written with" in line
    assert KEY not in line and OTHER_KEY not in line and other not in line
    # Refused before anything was deleted (the erasure's transaction rolled back).
    assert _query(config.warehouse, "SELECT count(*) FROM staging.contacts WHERE email = ?", [other]) == before
    assert before != [(0,)]
    # Also when the request finds nobody: under another key "no customer matches" would be a lie.
    nobody = _cdm("privacy", "erase", "--config", str(project), "--email", "nobody@nowhere.example", key=OTHER_KEY)
    assert nobody.returncode == 2 and "CDM_PRIVACY_KEY is not the key" in nobody.stderr, nobody.stdout

    # The extract refuses too, rather than loading the erased person's rows again.
    source = next(s for s in config.sources if s.name == "crm_contacts")
    ((day,),) = _query(config.warehouse, "SELECT min(_partition_date) FROM raw.crm_contacts")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CDM_PRIVACY_KEY", OTHER_KEY)
        refused_load = pytest.raises(ExtractError, match="CDM_PRIVACY_KEY is not the key")
        with open_config_warehouse(config) as conn, refused_load:
            load_partition(conn, source, config.landing_dir, day, dt.datetime.now(dt.timezone.utc), config=config)

    # And so does a restore, before touching anything.
    with open_config_warehouse(config) as conn:
        write_snapshot(conn, config, None, privacy_key=None, encryption=None)
    (snapshot,) = list_snapshots(config.backups.dir)
    before = config.warehouse.read_bytes()
    restore = _cdm("restore", snapshot.path.name, "--config", str(project), key=OTHER_KEY)
    assert restore.returncode == 2 and "CDM_PRIVACY_KEY is not the key" in restore.stderr
    assert config.warehouse.read_bytes() == before


def test_a_nightly_snapshot_follows_the_reports_when_backups_nightly_is_set(project, tmp_path):
    _set(project, "backups", nightly=True)
    config = load_config(project)
    asset = build_nightly_backup_asset(config)
    assert set(asset.dependency_keys) == {
        dg.AssetKey(list(GOVERNANCE_REPORT_KEY_PATH)), dg.AssetKey(list(INSIGHTS_KEY_PATH))
    }
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        result = dg.materialize(
            [asset], resources={"warehouse": WarehouseResource(database=str(config.warehouse))}, instance=instance,
        )
        assert result.success
        (snapshot,) = list_snapshots(config.backups.dir)
        # The run storage is the step's own instance: its run and event log are in the snapshot.
        assert (snapshot.path / "run_state").is_dir()
        (event,) = result.get_asset_materialization_events()
        metadata = event.materialization.metadata
        assert metadata["files"].value == snapshot.files
