"""Encryption at rest: the warehouse under a key, the files beside it, and the commands that manage it.

One real `cdm demo` (200 people, 2 days) runs on an encrypted warehouse in DuckDB's built-in crypto
mode (this machine cannot load httpfs), with an access request exported into its data folder;
then every file under ``data/`` except the landing folder is scanned for the demo's e-mail
addresses, phone numbers and names. The rest works on small hand-made warehouses: refusals
(no key, wrong key, a key file others can read, a key in cdm.yaml, httpfs missing),
``cdm warehouse encrypt / rotate-key / decrypt / verify``, and sealed access documents.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest
import yaml

from cdm_pipeline.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from cdm_pipeline.config import ConfigError, load_config
from cdm_pipeline.lib.encryption import (
    KEY_ENV_VAR,
    KEY_FILE_ENV_VAR,
    NEW_KEY_ENV_VAR,
    Encryption,
    EncryptionError,
    enable_crypto,
    encryption_from,
    is_encrypted_file,
)
from cdm_pipeline.lib.personal_data.keyed_hash import KEY_ENV_VAR as PRIVACY_KEY_ENV_VAR
from cdm_pipeline.lib.sealed_files import is_sealed, read_sealed, sealed_path, unseal, write_sealed
from cdm_pipeline.lib.warehouse import open_config_warehouse, open_warehouse
from cdm_pipeline.lib.warehouse_check import WarehouseCorrupt, verify_warehouse
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, REPO_ROOT, cli_env
from cdm_pipeline_tests.test_no_personal_data_leaks import collect_personal_values, scan_folder

KEY = "test-warehouse-key-5f1e0c9a7b3d"
OTHER_KEY = "another-warehouse-key-9c0ffee1"
PRIVACY_KEY = "test-privacy-key-encryption-77"
# Names as alphabetic tokens: at least this long, so a short one cannot turn up by chance in
# ciphertext or inside an ordinary word of a report.
NAME_MIN_CHARS = 6
NAME_TOKEN = re.compile(rb"[A-Za-z\x80-\xff]{%d,}" % NAME_MIN_CHARS)


# --- One encrypted demo ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encrypted_demo(tmp_path_factory) -> Path:
    """A finished `cdm demo` on an encrypted warehouse, plus one access document in data/."""
    root = tmp_path_factory.mktemp("encrypted_demo")
    document = yaml.safe_load((REPO_ROOT / "cdm.yaml").read_text(encoding="utf-8"))
    document["security"] = {**document.get("security", {}), "crypto": "builtin"}
    (root / "cdm.yaml").write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    env = cli_env(**{KEY_ENV_VAR: KEY, PRIVACY_KEY_ENV_VAR: PRIVACY_KEY})
    env.pop(KEY_FILE_ENV_VAR, None)
    done = subprocess.run(
        [CDM, "demo", "--config", str(root / "cdm.yaml"), "--people", "200", "--days", "2"],
        capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    email = _a_customer_email(root / "data" / "landing")
    exported = subprocess.run(
        [CDM, "privacy", "export", "--config", str(root / "cdm.yaml"), "--email", email,
         "--out", str(root / "data" / "privacy" / "access" / "req-1.json")],
        capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT,
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    return root


def _crm_rows(landing: Path) -> list[dict[str, str]]:
    rows = []
    for path in sorted(landing.glob("crm/contacts/*/*.csv")):
        reader = csv.DictReader(io.StringIO(path.read_bytes().decode("utf-8", "replace")))
        rows += [row for row in reader if None not in row]  # a planted malformed line has shifted cells
    return rows


def _a_customer_email(landing: Path) -> str:
    return next(row["Email"] for row in _crm_rows(landing) if re.fullmatch(r"[a-z0-9._]+@[a-z0-9.]+", row["Email"]))


def _landed_names(landing: Path) -> set[bytes]:
    """The CRM contacts' first and last names as landed, those long enough to scan for."""
    return {
        token
        for row in _crm_rows(landing)
        for column in ("FirstName", "LastName")
        for token in NAME_TOKEN.findall(row[column].encode("utf-8"))
    }


def _name_leaks(folder: Path, root: Path, names: set[bytes]) -> list[str]:
    leaks = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        found = set(NAME_TOKEN.findall(path.read_bytes())) & names
        if found:
            leaks.append(f"{path.relative_to(root)}: {len(found)} name(s)")
    return leaks


@pytest.mark.slow
def test_the_demo_warehouse_is_an_encrypted_database(encrypted_demo):
    warehouse = encrypted_demo / "data" / "warehouse" / "cdm.duckdb"
    assert is_encrypted_file(warehouse) is True
    assert not warehouse.with_name("cdm.duckdb.rewriting").exists()


@pytest.mark.slow
def test_no_demo_email_phone_or_name_is_in_any_file_under_data(encrypted_demo):
    data = encrypted_demo / "data"
    landing = data / "landing"
    values = collect_personal_values(landing)
    names = _landed_names(landing)
    assert len(values.emails) > 100 and len(values.phones) > 100 and len(names) > 50
    # The scanners see the values where they are (the landing files), so silence elsewhere means something.
    assert scan_folder(landing, data, values) and _name_leaks(landing, data, names)

    leaks: list[str] = []
    scanned = []
    for child in sorted(data.iterdir()):
        # data/landing is the user's own input (the exports they dropped there), not something
        # the pipeline wrote: it is the one place the values are expected.
        if child == landing:
            continue
        folder = child if child.is_dir() else None
        if folder is None:
            continue
        scanned += [p.relative_to(data).as_posix() for p in folder.rglob("*") if p.is_file()]
        leaks += [str(leak) for leak in scan_folder(folder, data, values)]
        leaks += _name_leaks(folder, data, names)
    # What the scan covered: the warehouse, the identity model, reports, exports, the access document.
    assert "warehouse/cdm.duckdb" in scanned
    assert any(name.startswith("identity/") and name.endswith(".json") for name in scanned)
    assert any(name.startswith("reports/") for name in scanned)
    assert any(name.startswith("exports/") for name in scanned)
    assert "privacy/access/req-1.json.enc" in scanned
    assert leaks == []


@pytest.mark.slow
def test_the_same_warehouse_decrypted_shows_the_values_the_scan_looks_for(encrypted_demo, tmp_path, monkeypatch):
    # So the clean scan above means "encrypted", not "the scan cannot see into a DuckDB file".
    copy = tmp_path / "project"
    (copy / "data").mkdir(parents=True)
    shutil.copy(encrypted_demo / "cdm.yaml", copy / "cdm.yaml")
    shutil.copytree(encrypted_demo / "data" / "warehouse", copy / "data" / "warehouse")
    monkeypatch.setenv(KEY_ENV_VAR, KEY)
    assert main(["warehouse", "decrypt", "--config", str(copy / "cdm.yaml")]) == EXIT_OK
    landing = encrypted_demo / "data" / "landing"
    kinds = {leak.kind for leak in scan_folder(copy / "data" / "warehouse", copy, collect_personal_values(landing))}
    assert kinds == {"email", "phone"}
    assert _name_leaks(copy / "data" / "warehouse", copy, _landed_names(landing))


@pytest.mark.slow
def test_without_the_key_or_with_another_the_warehouse_is_refused_in_one_line(encrypted_demo):
    config = str(encrypted_demo / "cdm.yaml")
    for key, message in ((None, "is encrypted: set CDM_WAREHOUSE_KEY"), (OTHER_KEY, "encrypted with a different key")):
        env = cli_env(**({KEY_ENV_VAR: key} if key else {}))
        if key is None:
            env.pop(KEY_ENV_VAR, None)
        env.pop(KEY_FILE_ENV_VAR, None)
        done = subprocess.run([CDM, "quality", "report", "--config", config], capture_output=True, text=True,
                              env=env, timeout=HANG_TIMEOUT)
        assert done.returncode == EXIT_USAGE
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
        assert KEY not in done.stderr + done.stdout


@pytest.mark.slow
def test_the_access_document_is_sealed_and_governance_can_decrypt_it(encrypted_demo, tmp_path):
    sealed = encrypted_demo / "data" / "privacy" / "access" / "req-1.json.enc"
    assert is_sealed(sealed) and not sealed.with_suffix("").exists()
    assert sealed.stat().st_mode & 0o077 == 0
    env = cli_env(**{KEY_ENV_VAR: KEY})
    out = tmp_path / "for-the-person.json"
    done = subprocess.run(
        [CDM, "privacy", "decrypt", str(sealed), "--out", str(out), "--config", str(encrypted_demo / "cdm.yaml")],
        capture_output=True, text=True, env=env, timeout=HANG_TIMEOUT,
    )
    assert done.returncode == EXIT_OK, done.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    email = _a_customer_email(encrypted_demo / "data" / "landing")
    assert email in out.read_text(encoding="utf-8") and document["staging"]
    assert out.stat().st_mode & 0o077 == 0
    wrong = subprocess.run(
        [CDM, "privacy", "decrypt", str(sealed), "--out", str(tmp_path / "x.json"),
         "--config", str(encrypted_demo / "cdm.yaml")],
        capture_output=True, text=True, env=cli_env(**{KEY_ENV_VAR: OTHER_KEY}), timeout=HANG_TIMEOUT,
    )
    assert wrong.returncode == EXIT_USAGE and "sealed with another key" in wrong.stderr
    assert not (tmp_path / "x.json").exists()


# --- Small hand-made warehouses ----------------------------------------------------------------


def _project(folder: Path, **security: object) -> Path:
    document = {
        "warehouse": "data/warehouse/cdm.duckdb",
        "landing_dir": "data/landing",
        "security": {"crypto": "builtin", **security},
        "sources": [{
            "name": "crm_contacts", "system": "crm", "kind": "contacts", "format": "csv",
            "path": "crm/{date}/*.csv", "id_column": "contact_id", "columns": {"email": "email"},
        }],
    }
    path = folder / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _fill(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("CREATE SCHEMA staging")
    conn.execute("CREATE TABLE staging.contacts AS SELECT range AS id, md5(range::VARCHAR) AS email FROM range(60000)")
    conn.execute("CREATE TABLE staging.orders AS SELECT range AS id, range * 1.5 AS amount FROM range(2500)")
    conn.execute("CREATE TABLE main.empty (x INTEGER)")


def _counts(path: Path, encryption: Encryption | None) -> dict[str, int]:
    with open_warehouse(path, settings={}, read_only=True, encryption=encryption) as conn:
        return {name: n for name, n in verify_warehouse(conn).items() if name != "governance.audit_log"}


def _audit_actions(path: Path, encryption: Encryption | None) -> list[str]:
    with open_warehouse(path, settings={}, read_only=True, encryption=encryption) as conn:
        return [a for (a,) in conn.execute("SELECT action FROM governance.audit_log ORDER BY occurred_at").fetchall()]


@pytest.fixture
def no_keys(monkeypatch):
    for name in (KEY_ENV_VAR, KEY_FILE_ENV_VAR, NEW_KEY_ENV_VAR, NEW_KEY_ENV_VAR + "_FILE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_encrypt_rotate_key_decrypt_keep_every_row_and_retire_the_old_key(tmp_path, no_keys, capsys):
    config = _project(tmp_path)
    warehouse = tmp_path / "data" / "warehouse" / "cdm.duckdb"
    with open_warehouse(warehouse, settings={}) as conn:
        _fill(conn)
    expected = _counts(warehouse, None)
    old, new = Encryption(KEY, "builtin"), Encryption(OTHER_KEY, "builtin")
    access = tmp_path / "data" / "privacy" / "access"
    access.mkdir(parents=True)
    write_sealed(access / "req-9.json.enc", b'{"who": "someone"}', old)

    no_keys.setenv(KEY_ENV_VAR, KEY)
    assert main(["warehouse", "encrypt", "--config", str(config)]) == EXIT_OK
    assert is_encrypted_file(warehouse) is True
    assert _counts(warehouse, old) == expected
    assert not warehouse.with_name("cdm.duckdb.rewriting").exists()

    no_keys.setenv(NEW_KEY_ENV_VAR, OTHER_KEY)
    assert main(["warehouse", "rotate-key", "--config", str(config)]) == EXIT_OK
    assert "now set CDM_WAREHOUSE_KEY" in capsys.readouterr().out
    with pytest.raises(EncryptionError, match="different key"):
        _counts(warehouse, old)
    assert _counts(warehouse, new) == expected
    assert read_sealed(access / "req-9.json.enc", new) == b'{"who": "someone"}'  # re-sealed too

    no_keys.setenv(KEY_ENV_VAR, OTHER_KEY)
    no_keys.delenv(NEW_KEY_ENV_VAR)
    assert main(["warehouse", "decrypt", "--config", str(config)]) == EXIT_OK
    assert is_encrypted_file(warehouse) is False
    assert _counts(warehouse, None) == expected
    assert _audit_actions(warehouse, None) == ["warehouse_encrypt", "warehouse_rotate_key", "warehouse_decrypt"]


def test_encrypt_refuses_without_a_key_and_on_an_encrypted_file(tmp_path, no_keys, capsys):
    config = _project(tmp_path)
    warehouse = tmp_path / "data" / "warehouse" / "cdm.duckdb"
    with open_warehouse(warehouse, settings={}) as conn:
        _fill(conn)
    assert main(["warehouse", "encrypt", "--config", str(config)]) == EXIT_USAGE
    assert "no key to encrypt with" in capsys.readouterr().err
    no_keys.setenv(NEW_KEY_ENV_VAR, KEY)
    assert main(["warehouse", "encrypt", "--config", str(config)]) == EXIT_OK
    assert "now set CDM_WAREHOUSE_KEY" in capsys.readouterr().out
    no_keys.setenv(KEY_ENV_VAR, KEY)
    assert main(["warehouse", "encrypt", "--config", str(config)]) == EXIT_USAGE
    assert "already encrypted" in capsys.readouterr().err
    no_keys.setenv(NEW_KEY_ENV_VAR, KEY)
    assert main(["warehouse", "rotate-key", "--config", str(config)]) == EXIT_USAGE
    assert "is the current key" in capsys.readouterr().err


def _corrupt_copy(warehouse: Path, copy: Path) -> None:
    """A copy of ``warehouse`` with 64 bytes in the middle of the file overwritten."""
    shutil.copy(warehouse, copy)
    with copy.open("r+b") as handle:
        handle.seek(copy.stat().st_size // 2)
        handle.write(b"\x5a" * 64)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_verify_reads_every_block_and_names_the_table_with_a_corrupt_one(tmp_path, no_keys, capsys, encrypted):
    config = _project(tmp_path)
    warehouse = tmp_path / "data" / "warehouse" / "cdm.duckdb"
    encryption = Encryption(KEY, "builtin") if encrypted else None
    if encrypted:
        no_keys.setenv(KEY_ENV_VAR, KEY)
    with open_warehouse(warehouse, settings={}, encryption=encryption) as conn:
        _fill(conn)
    good = tmp_path / "good.duckdb"
    shutil.copy(warehouse, good)
    assert main(["warehouse", "verify", "--config", str(config)]) == EXIT_OK
    assert "3 tables" in capsys.readouterr().out

    _corrupt_copy(good, warehouse)
    # A count alone is answered from metadata: the damage is invisible until the data is read.
    with open_warehouse(warehouse, settings={}, read_only=True, encryption=encryption) as conn:
        assert conn.execute("SELECT count(*) FROM staging.contacts").fetchone() == (60000,)
        with pytest.raises(WarehouseCorrupt) as caught:
            verify_warehouse(conn)
    assert caught.value.table == "staging.contacts"
    assert main(["warehouse", "verify", "--config", str(config)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "staging.contacts" in err


def test_a_key_file_others_can_read_is_refused(tmp_path, no_keys, capsys):
    config = _project(tmp_path)
    warehouse = tmp_path / "data" / "warehouse" / "cdm.duckdb"
    with open_warehouse(warehouse, settings={}, encryption=Encryption(KEY, "builtin")) as conn:
        _fill(conn)
    key_file = tmp_path / "warehouse.key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    key_file.chmod(0o644)
    no_keys.setenv(KEY_FILE_ENV_VAR, str(key_file))
    assert main(["warehouse", "verify", "--config", str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "can be read by other users" in err and "chmod 600" in err
    assert KEY not in err
    key_file.chmod(0o600)
    assert main(["warehouse", "verify", "--config", str(config)]) == EXIT_OK


def test_a_key_cannot_be_written_in_cdm_yaml(tmp_path):
    for security in ({"key": KEY}, {"encryption_key": KEY}):
        with pytest.raises(ConfigError) as caught:
            load_config(_project(tmp_path, **security))
        assert "security" in str(caught.value) and KEY not in str(caught.value)


def _httpfs_loads() -> bool:
    conn = duckdb.connect()
    try:
        enable_crypto(conn, Encryption(KEY, "httpfs"))
        return True
    except EncryptionError:
        return False
    finally:
        conn.close()


def test_httpfs_mode_without_httpfs_refuses_to_write_an_encrypted_warehouse(tmp_path, no_keys, capsys):
    if _httpfs_loads():
        pytest.skip("httpfs loads on this machine: its OpenSSL crypto writes the file, nothing to refuse")
    config = _project(tmp_path, crypto="httpfs")
    warehouse = tmp_path / "data" / "warehouse" / "cdm.duckdb"
    with open_warehouse(warehouse, settings={}) as conn:
        _fill(conn)
    no_keys.setenv(KEY_ENV_VAR, KEY)
    assert main(["warehouse", "encrypt", "--config", str(config)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "httpfs" in err and "security.crypto: builtin" in err
    assert is_encrypted_file(warehouse) is False and _counts(warehouse, None)  # left as it was
    fresh = tmp_path / "data" / "warehouse" / "new.duckdb"
    with pytest.raises(EncryptionError, match="cannot write an encrypted warehouse"):
        with open_warehouse(fresh, settings={}, encryption=encryption_from(None, "httpfs")):
            pass
    with pytest.raises(EncryptionError):
        with open_config_warehouse(load_config(config)):
            pass


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_identity_scratch_spilled_to_disk_is_encrypted_with_the_warehouse(tmp_path, encrypted):
    # The identity step's scratch (identity_work) is an in-memory database attached to the
    # warehouse connection: it reaches disk only as DuckDB spill files, in <warehouse>.tmp.
    path = tmp_path / "cdm.duckdb"
    spill = Path(str(path) + ".tmp")
    encryption = Encryption(KEY, "builtin") if encrypted else None
    with open_warehouse(path, settings={"memory_limit": "32MB", "threads": 1}, encryption=encryption) as conn:
        if not encrypted:  # the same folder, so the plain case shows the scan sees spilled values
            conn.execute("SET temp_directory = $folder", {"folder": str(spill)})
        conn.execute("ATTACH ':memory:' AS identity_work")
        conn.execute(
            "CREATE TABLE identity_work.records AS"
            " SELECT 'spilled-person-' || range || '@example.com' AS email, range AS id FROM range(700000)"
        )
        conn.execute("CREATE TABLE identity_work.sorted AS SELECT * FROM identity_work.records ORDER BY email DESC")
        files = [p for p in spill.rglob("*") if p.is_file() and p.stat().st_size]
        hits = sum(p.read_bytes().count(b"spilled-person-") for p in files)
    assert files  # it did spill
    assert (hits == 0) if encrypted else (hits > 0)


def test_a_sealed_document_is_refused_when_changed_or_under_another_key(tmp_path):
    key, other = Encryption(KEY, "builtin"), Encryption(OTHER_KEY, "builtin")
    path = sealed_path(tmp_path / "doc.json")
    write_sealed(path, b'{"email": "someone@example.com"}', key)
    blob = path.read_bytes()
    assert b"someone" not in blob and path.stat().st_mode & 0o077 == 0
    assert unseal(blob, key) == b'{"email": "someone@example.com"}'
    with pytest.raises(EncryptionError, match="another key"):
        unseal(blob, other)
    for at in (len(blob) // 2, len(blob) - 1, 30):  # ciphertext, tag, header (the salt)
        changed = bytearray(blob)
        changed[at] ^= 1
        with pytest.raises(EncryptionError, match="damaged"):
            unseal(bytes(changed), key)
    assert os.path.getsize(path) == len(blob)
