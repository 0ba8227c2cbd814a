"""Quality gates in real runs: a failed critical expectation blocks what is downstream, results
are recorded in governance.quality_results, `cdm quality report` and Data Docs show them."""

import re
import subprocess
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdm_pipeline.config import load_config
from cdm_pipeline.defs.raw.assets import build_raw_asset
from cdm_pipeline.defs.staging.assets import build_staging_asset
from cdm_pipeline.lib.catalog import staging_table
from cdm_pipeline.lib.quality.expectations import SUITES
from cdm_pipeline.project import daily_partitions
from cdm_pipeline.resources import WarehouseResource
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

CONFIG = textwrap.dedent(
    """
    warehouse: wh/cdm.duckdb
    landing_dir: landing
    reports_dir: reports
    sources:
      - name: crm_contacts
        system: crm
        kind: contacts
        format: csv
        path: crm/{date}/*.csv
        id_column: id
        columns: {first_name: first, last_name: last, email: email, phone: phone}
    """
)
GOOD = [f"C{i},Ann,Lee{i},ann.lee{i}@example.com,+44 20 7946 00{i:02d}" for i in range(10)]
# An export whose email column came out garbled: 8 of 10 values are not addresses.
GARBLED = [
    f"C{i},Ann,Lee{i},{'ann.lee' + str(i) + '@example.com' if i < 2 else 'ann.lee' + str(i) + ' at example'},"
    f"+44 20 7946 00{i:02d}"
    for i in range(10)
]


def _email_critical_key() -> str:
    return next(
        s.key for s in SUITES["contacts"] if s.severity == "critical" and s.kwargs.get("column") == "email"
    )


def _project(tmp_path: Path, lines: list[str]):
    (tmp_path / "cdm.yaml").write_text(CONFIG)
    crm = tmp_path / "landing" / "crm" / "2026-10-01"
    crm.mkdir(parents=True)
    (crm / "contacts.csv").write_text("id,first,last,email,phone\n" + "\n".join(lines) + "\n")
    return load_config(tmp_path / "cdm.yaml")


def _run_with_a_downstream_asset(config, **kwargs):
    """Materialise raw + staging contacts + an asset that depends on them, in one real run."""
    ran = []

    @dg.asset(
        deps=[staging_table("contacts").asset_key], partitions_def=daily_partitions(config),
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def downstream_of_contacts() -> None:
        ran.append(True)

    result = dg.materialize(
        [build_raw_asset(config.sources[0], config), build_staging_asset("contacts", config), downstream_of_contacts],
        partition_key="2026-10-01",
        resources={"warehouse": WarehouseResource(database=str(config.warehouse))},
        **kwargs,
    )
    return result, ran


@pytest.mark.slow
def test_failed_critical_expectation_blocks_downstream_assets(tmp_path):
    result, ran = _run_with_a_downstream_asset(_project(tmp_path, GARBLED), raise_on_error=False)
    assert not result.success
    assert ran == []
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    failed = evaluations[_email_critical_key()]
    assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert failed.metadata["unexpected_count"].value == 8
    assert failed.metadata["failed_partitions"].value == "2026-10-01"
    assert evaluations["row_conservation"].passed


@pytest.mark.slow
def test_clean_export_passes_and_downstream_runs(tmp_path):
    result, ran = _run_with_a_downstream_asset(_project(tmp_path, GOOD))
    assert result.success and ran == [True]
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []


@pytest.mark.slow
def test_cli_run_reports_the_gate_and_quality_report_reads_the_history(tmp_path):
    config = _project(tmp_path, GARBLED)
    key = _email_critical_key()
    done = subprocess.run(
        [CDM, "run", "--config", str(tmp_path / "cdm.yaml"), "--date", "2026-10-01"],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    assert f"critical failed: staging/contacts {key}" in done.stdout
    assert "ann.lee5" not in done.stdout + done.stderr  # counts, never values

    conn = duckdb.connect(str(config.warehouse), read_only=True)
    row = conn.execute(
        "SELECT success, unexpected_count, element_count, severity FROM governance.quality_results"
        " WHERE table_name = 'staging.contacts' AND expectation = ?", [key]
    ).fetchone()
    conservation = conn.execute(
        "SELECT success, element_count FROM governance.quality_results WHERE expectation = 'row_conservation'"
        " AND table_name = 'staging.contacts'"
    ).fetchone()
    conn.close()
    assert row == (False, 8, 10, "critical")
    assert conservation == (True, 10)

    report = subprocess.run(
        [CDM, "quality", "report", "--config", str(tmp_path / "cdm.yaml")],
        capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT,
    )
    assert report.returncode == 1
    assert re.search(rf"FAIL critical\s+{key}\s+8 of 10", report.stdout)
    docs = tmp_path / "reports" / "data_docs" / "index.html"
    assert f"Data Docs: {docs}" in report.stdout and docs.exists()
    for page in docs.parent.rglob("*.html"):
        assert "ann.lee5" not in page.read_text(encoding="utf-8")
