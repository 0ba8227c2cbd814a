"""The analyst warehouse: the demo's marts in a separate DuckDB file, pseudonymous.

Built from a copy of the shared demo's warehouse (`demo_project`), then searched for every e-mail,
phone and name the demo staged — in the file's bytes and in its decoded table contents.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import yaml

from cdm_pipeline.config import load_config
from cdm_pipeline.lib.catalog import ANALYST_MANIFEST, CUSTOMER_360, MART_TABLES, SEGMENTS
from cdm_pipeline.lib.personal_data.keyed_hash import KEY_ENV_VAR, key_fingerprint
from cdm_pipeline.lib.privacy.analyst_export import COLUMN_RULES, UnreviewedColumns, output_columns
from cdm_pipeline.lib.privacy.analyst_warehouse import AnalystWarehouseError, build_analyst_warehouse
from cdm_pipeline.lib.warehouse import connect, table_columns

KEY = b"analyst-warehouse-test-key-5b8e21"
# Names this short occur by chance in any compressed file's bytes ("Li", "Hp"); they are still
# searched for among the decoded values.
MIN_NAME_BYTES = 5


@pytest.fixture(scope="module")
def personal_values(demo_project) -> dict[str, set[str]]:
    conn = duckdb.connect(str(demo_project.root / "data" / "warehouse" / "cdm.duckdb"), read_only=True)
    try:
        def distinct(column: str) -> set[str]:
            rows = conn.execute(f"SELECT DISTINCT {column} FROM staging.contacts WHERE {column} <> ''").fetchall()
            return {row[0] for row in rows}

        values = {"email": distinct("email"), "phone": distinct("phone"),
                  "name": distinct("first_name") | distinct("last_name")}
    finally:
        conn.close()
    assert len(values["email"]) > 1000 and len(values["phone"]) > 500 and len(values["name"]) > 500
    return values


@pytest.fixture
def warehouse(demo_project, tmp_path) -> Path:
    path = tmp_path / "warehouse" / "cdm.duckdb"
    path.parent.mkdir()
    shutil.copyfile(demo_project.root / "data" / "warehouse" / "cdm.duckdb", path)
    return path


def _build(warehouse: Path, target: Path):
    conn = connect(warehouse)
    try:
        return build_analyst_warehouse(conn, target, KEY)
    finally:
        conn.close()


def _mart_counts(warehouse: Path) -> dict[str, int]:
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {t.name: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in MART_TABLES}
    finally:
        conn.close()


def _text_values(path: Path) -> set[str]:
    """Every word-like token of every text value (lists included) in the analyst file's own tables."""
    conn = duckdb.connect(str(path), read_only=True)
    try:
        columns = conn.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns()"
            " WHERE database_name = current_database() AND NOT internal AND data_type LIKE 'VARCHAR%'"
        ).fetchall()
        assert len(columns) > 20
        tokens: set[str] = set()
        for schema, table, column, data_type in columns:
            value = f'"{column}"' if data_type == "VARCHAR" else f"array_to_string(\"{column}\", ' ')"
            for (text,) in conn.execute(f'SELECT DISTINCT {value} FROM "{schema}"."{table}"').fetchall():
                if text:
                    tokens.add(text)
                    tokens.update(re.findall(r"[^\W\d_]+|[\w.+-]+@[\w.-]+|\+\d+", text))
        return tokens
    finally:
        conn.close()


def test_the_analyst_warehouse_holds_no_demo_email_phone_or_name(warehouse, tmp_path, personal_values):
    target = tmp_path / "analyst" / "cdm_analyst.duckdb"
    built = _build(warehouse, target)

    data = target.read_bytes()
    assert not target.with_name(target.name + ".wal").exists()
    leaked = [kind for kind, values in personal_values.items()
              for value in values if (kind != "name" or len(value.encode()) >= MIN_NAME_BYTES)
              and value.encode() in data]
    digits = [p for p in personal_values["phone"] if p.lstrip("+").encode() in data]
    assert (leaked, digits) == ([], [])
    tokens = _text_values(target)
    assert tokens.isdisjoint(personal_values["email"] | personal_values["phone"] | personal_values["name"])
    # ... while the file does hold the marts: same rows, the analyst columns, hashed ids.
    counts = _mart_counts(warehouse)
    assert built.rows == counts and min(counts.values()) > 0
    conn = duckdb.connect(str(target), read_only=True)
    try:
        for table in MART_TABLES:
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == counts[table.name]
            assert table_columns(conn, table) == output_columns(table.name)
        ids = conn.execute(f"SELECT min(customer_id), max(length(customer_id)) FROM {CUSTOMER_360}").fetchone()
        assert re.fullmatch(r"[0-9a-f]{64}", ids[0]) and ids[1] == 64
        joined = conn.execute(
            f"SELECT count(*) FROM {CUSTOMER_360} c JOIN {SEGMENTS} s USING (customer_id)"
        ).fetchone()[0]
        assert joined == counts[CUSTOMER_360.name]  # hashed alike in every table, so they still join
        manifest = conn.execute(
            f"SELECT table_name, row_count, as_of_date, key_fingerprint, columns FROM {ANALYST_MANIFEST}"
            " ORDER BY table_name"
        ).fetchall()
    finally:
        conn.close()
    assert sorted((row[0], row[1]) for row in manifest) == sorted((t.full_name, counts[t.name]) for t in MART_TABLES)
    assert {row[2] for row in manifest} == {built.as_of_date}
    assert {row[3] for row in manifest} == {key_fingerprint(KEY)}
    assert {row[0]: row[4] for row in manifest}[CUSTOMER_360.full_name] == output_columns(CUSTOMER_360.name)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["cdm_analyst.duckdb"]
    audit = connect(warehouse, read_only=True)
    try:
        rows = audit.execute(
            "SELECT actor, rows_affected, detail FROM governance.audit_log WHERE action = 'analyst_warehouse'"
        ).fetchall()
    finally:
        audit.close()
    assert len(rows) == 1 and rows[0][0] and rows[0][1] == sum(counts.values())


def test_a_failed_refresh_leaves_the_previous_file_and_no_leftovers(warehouse, tmp_path):
    target = tmp_path / "analyst" / "cdm_analyst.duckdb"
    _build(warehouse, target)
    before = target.read_bytes()
    conn = connect(warehouse)
    try:
        conn.execute(f"ALTER TABLE {CUSTOMER_360} ADD COLUMN nickname VARCHAR")
        with pytest.raises(UnreviewedColumns, match="customer_360.nickname has no rule"):
            build_analyst_warehouse(conn, target, KEY)
    finally:
        conn.close()
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["cdm_analyst.duckdb"]


def test_a_refresh_replaces_only_an_analyst_warehouse_and_keeps_a_granted_group_read(warehouse, tmp_path):
    other = tmp_path / "notes.duckdb"
    duckdb.connect(str(other)).close()
    text = tmp_path / "notes.txt"
    text.write_text("not a database")
    for path in (other, text, tmp_path):
        with pytest.raises(AnalystWarehouseError, match="is not an analyst warehouse written by cdm"):
            _build(warehouse, path)
    assert text.read_text() == "not a database"

    target = tmp_path / "cdm_analyst.duckdb"
    _build(warehouse, target)
    os.chmod(target, 0o644)  # the operator shares it with a group (and, wrongly, with everyone)
    _build(warehouse, target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_every_mart_column_has_a_rule_and_the_analyst_warehouse_uses_them(warehouse):
    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        assert {t.name: table_columns(conn, t) for t in MART_TABLES} == {
            name: list(rules) for name, rules in COLUMN_RULES.items()
        }
    finally:
        conn.close()


# --- the nightly asset ----------------------------------------------------------------------------


def _project(demo_project, tmp_path):
    """The demo's config and a copy of its warehouse in ``tmp_path`` (the analyst file goes beside it)."""
    project = tmp_path / "project"
    (project / "data" / "warehouse").mkdir(parents=True)
    shutil.copyfile(demo_project.root / "cdm.yaml", project / "cdm.yaml")
    warehouse = Path("data") / "warehouse" / "cdm.duckdb"
    shutil.copyfile(demo_project.root / warehouse, project / warehouse)
    return load_config(project / "cdm.yaml")


def _materialize(demo_project, tmp_path, monkeypatch, key: str | None):
    from cdm_pipeline.defs.exports.assets import build_analyst_warehouse_asset
    from cdm_pipeline.project import WAREHOUSE_POOL
    from cdm_pipeline.resources import WarehouseResource

    config = _project(demo_project, tmp_path)
    if key is None:
        monkeypatch.delenv(KEY_ENV_VAR, raising=False)
    else:
        monkeypatch.setenv(KEY_ENV_VAR, key)
    asset = build_analyst_warehouse_asset(config)
    assert asset.op.pool == WAREHOUSE_POOL
    result = dg.materialize(
        [asset], resources={"warehouse": WarehouseResource(database=str(config.warehouse))},
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
    )
    return config, result


def test_the_nightly_asset_builds_the_file_configured_in_security(demo_project, tmp_path, monkeypatch):
    config, result = _materialize(demo_project, tmp_path, monkeypatch, KEY.decode())
    assert result.success
    assert config.security.analyst_warehouse == tmp_path / "project" / "data" / "analyst" / "cdm_analyst.duckdb"
    assert config.security.analyst_warehouse.exists()
    (materialization,) = result.get_asset_materialization_events()
    metadata = materialization.materialization.metadata
    assert metadata["dagster/row_count"].value == sum(_mart_counts(config.warehouse).values())
    assert metadata["key_fingerprint"].value == key_fingerprint(KEY)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


def test_without_the_privacy_key_the_asset_skips_with_a_warning_and_writes_nothing(
    demo_project, tmp_path, monkeypatch
):
    config, result = _materialize(demo_project, tmp_path, monkeypatch, None)
    assert result.success  # the night goes on: consent, suppression and audiences do not wait for it
    (materialization,) = result.get_asset_materialization_events()  # a backfill must not count it as failed
    assert materialization.materialization.metadata["refreshed"].value is False
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert "CDM_PRIVACY_KEY is not set" in check.metadata["detail"].value
    assert not config.security.analyst_warehouse.parent.exists()


def test_the_demo_run_reports_the_skipped_refresh_in_its_summary(demo_project):
    """The shared demo ran without CDM_PRIVACY_KEY: `cdm run`'s summary says why there is no file."""
    assert "exports/analyst_warehouse refreshed" in demo_project.stdout
    assert "CDM_PRIVACY_KEY is not set" in demo_project.stdout
    assert not (demo_project.root / "data" / "analyst").exists()


def test_a_null_path_turns_the_analyst_warehouse_off(tmp_path, monkeypatch):
    from cdm_pipeline.defs.exports import assets
    from cdm_pipeline.project import _load

    config = tmp_path / "cdm.yaml"
    document = yaml.safe_load((Path(__file__).resolve().parents[1] / "cdm.yaml").read_text())
    document.setdefault("security", {}).pop("analyst_warehouse", None)
    off = {**document, "security": {**document["security"], "analyst_warehouse": None}}
    keys = {}
    for name, value in (("default", document), ("off", off)):
        config.write_text(yaml.safe_dump(value, sort_keys=False))
        monkeypatch.setenv("CDM_CONFIG", str(config))
        _load.cache_clear()
        keys[name] = {asset.key.to_user_string() for asset in assets.defs().assets}
    _load.cache_clear()
    assert keys["default"] - keys["off"] == {"exports/analyst_warehouse"}


def test_an_erasure_refreshes_the_analyst_warehouse_at_once(demo_project, tmp_path, monkeypatch):
    """Pseudonymous is not anonymous: an erased customer's rows leave the analyst file with the
    erasure, not at the next night's refresh."""
    from cdm_pipeline.lib.privacy.erasure import erase_subject
    from cdm_pipeline.lib.privacy.subject import find_subject

    config = _project(demo_project, tmp_path)
    target = config.security.analyst_warehouse
    _build(config.warehouse, target)
    conn = connect(config.warehouse)
    try:
        (customer_id,) = conn.execute(
            f"SELECT customer_id FROM {CUSTOMER_360} WHERE email IS NOT NULL ORDER BY customer_id LIMIT 1"
        ).fetchone()
        subject = find_subject(conn, config, customer_id=customer_id)
        assert subject.found
        before = _customer_rows(target)
        erase_subject(conn, config, subject, "R-analyst-1", KEY)
    finally:
        conn.close()
    after = _customer_rows(target)
    assert after == before - 1
    assert after == _mart_counts(config.warehouse)[CUSTOMER_360.name]


def _customer_rows(path: Path) -> int:
    conn = duckdb.connect(str(path), read_only=True)
    try:
        return conn.execute(f"SELECT count(*) FROM {CUSTOMER_360}").fetchone()[0]
    finally:
        conn.close()
