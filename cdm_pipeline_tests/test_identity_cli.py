"""Identity resolution through the real CLI: demo scores, stable ids across runs, governance
overrides splitting and merging customers, masked explanations and model versions."""

import re
import subprocess
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

pytestmark = pytest.mark.slow

LAST_DAY = "2026-10-03"


def _cdm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CDM, *args], capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT, cwd=cwd)


@pytest.fixture
def demo_dir(demo_project) -> Path:
    """The session's demo project (conftest.demo_project), shared: read only."""
    return demo_project.root


@pytest.fixture
def demo(demo_project, tmp_path) -> Path:
    """A private copy of the demo project (warehouse, model, run storage): tests change it."""
    return demo_project.copy_to(tmp_path / "demo")


def _xref(folder: Path) -> dict[tuple[str, str], str]:
    conn = duckdb.connect(str(folder / "data/warehouse/cdm.duckdb"), read_only=True)
    try:
        rows = conn.execute("SELECT source_name, source_record_id, customer_id FROM identity.customer_xref").fetchall()
    finally:
        conn.close()
    return {(s, r): c for s, r, c in rows}


def _query(folder: Path, sql: str, params=None) -> list[tuple]:
    conn = duckdb.connect(str(folder / "data/warehouse/cdm.duckdb"), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def _scores(text: str) -> tuple[str, str, str]:
    found = re.search(r"precision ([0-9.]+),? +recall ([0-9.]+),? +F1 ([0-9.]+)", text)
    assert found, text
    return found.groups()


def test_demo_reports_pairwise_scores_that_evaluate_reproduces(demo_project, demo_dir):
    out = demo_project.stdout
    assert re.search(r"identity: [\d,]+ records -> [\d,]+ customers \([\d,]+ new, 0 merged, 0 split,"
                     r" 0 retired ids; model v1, trained this run\)", out)
    reported = _scores(out.split("identity vs ground truth:")[1])
    done = _cdm("identity", "evaluate", "--config", str(demo_dir / "cdm.yaml"),
                "--truth", str(demo_dir / "data/landing/ground_truth.parquet"))
    assert done.returncode == 0, done.stderr
    assert _scores(done.stdout) == reported
    precision, recall, f1 = (float(v) for v in reported)
    assert precision > 0.98 and recall > 0.9 and f1 > 0.95


def test_rerun_keeps_every_customer_id_and_the_model(demo):
    before = _xref(demo)
    done = _cdm("run", "--config", str(demo / "cdm.yaml"), "--date", LAST_DAY)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(0 new, 0 merged, 0 split, 0 retired ids; model v1)" in done.stdout
    assert _xref(demo) == before
    assert len(set(before.values())) < len(before)  # records really were merged into customers


def test_cannot_link_splits_a_customer_and_removing_it_merges_the_ids_back(demo):
    before = _xref(demo)
    # The two contact records of one customer, joined directly by a probabilistic link: however
    # the cluster splits, one of them keeps the id.
    (customer, left_name, left_id, right_name, right_id) = _query(
        demo,
        """SELECT customer_id, source_name_l, source_record_id_l, source_name_r, source_record_id_r
        FROM identity.match_edges WHERE rule = 'splink' AND customer_id IN (
            SELECT customer_id FROM identity.customer_xref WHERE identifier_type = 'record'
            GROUP BY 1 HAVING count(*) = 2)
        ORDER BY customer_id LIMIT 1""",
    )[0]
    overrides = demo / "data/identity/overrides.csv"
    overrides.write_text(
        "source_name_l,source_record_id_l,source_name_r,source_record_id_r,decision\n"
        f"{left_name},{left_id},{right_name},{right_id},cannot_link\n"
    )
    split = _cdm("run", "--config", str(demo / "cdm.yaml"), "--date", LAST_DAY)
    assert split.returncode == 0, split.stderr[-3000:]
    after = _xref(demo)
    assert after[(left_name, left_id)] != after[(right_name, right_id)]
    assert customer in (after[(left_name, left_id)], after[(right_name, right_id)])
    changes = _query(demo, "SELECT change, customer_id, related_customer_id FROM identity.customer_id_changes")
    split_ids = [c for change, c, related in changes if change == "split" and related == customer]
    assert split_ids
    assert _query(demo, "SELECT outcome FROM identity.overrides_applied") == [("separated",)]
    audit = _query(
        demo, "SELECT action, rows_affected FROM governance.audit_log WHERE action LIKE 'identity%'"
    )
    assert audit == [("identity_override_cannot_link", 1)]
    # Every record outside the split customer kept its id.
    untouched = {k: v for k, v in before.items() if v != customer}
    assert {k: after[k] for k in untouched} == untouched

    overrides.unlink()
    merged = _cdm("run", "--config", str(demo / "cdm.yaml"), "--date", LAST_DAY)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert _xref(demo) == before  # the older id survives the merge
    merges = _query(
        demo, "SELECT customer_id, related_customer_id FROM identity.customer_id_changes WHERE change = 'merged'"
    )
    assert set(merges) == {(split_id, customer) for split_id in split_ids}
    assert _query(demo, "SELECT status, merged_into FROM identity.customer_id_registry WHERE customer_id = ?",
                  [split_ids[0]]) == [("merged", customer)]


def test_explain_shows_members_and_match_weights_with_personal_values_masked(demo):
    (customer,) = _query(
        demo, "SELECT customer_id FROM identity.match_edges WHERE rule = 'splink' ORDER BY customer_id LIMIT 1"
    )[0]
    done = _cdm("identity", "explain", customer, "--config", str(demo / "cdm.yaml"))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    members = _query(
        demo,
        """SELECT r.first_name, r.last_name, r.email, r.phone, x.source_record_id
        FROM identity.customer_xref x LEFT JOIN staging.contacts r USING (source_name, source_record_id)
        WHERE x.customer_id = ?
        QUALIFY row_number() OVER (PARTITION BY x.source_name, x.source_record_id"""
        """ ORDER BY r._partition_date DESC) = 1""",
        [customer],
    )
    assert f"customer {customer}: {len(members)} records" in out
    # At or above the demo's match_threshold (0.95), to four places: a sure link shows as 1.0000.
    assert re.search(r"probabilistic, match probability (0\.9\d+|1\.0+) \(weight [+-][\d.]+\): first_name [+-]", out)
    for first, last, email, phone, record_id in members:
        assert record_id in out
        for value in (first, last, email, phone):
            if value and len(value) >= 3:
                assert value not in out

    unknown = _cdm("identity", "explain", "CUST-9999999999", "--config", str(demo / "cdm.yaml"))
    assert unknown.returncode == 1 and "was never issued" in unknown.stderr


def test_train_writes_a_new_model_version_that_the_next_run_uses(demo):
    model = demo / "data/identity/splink_model.json"
    first = model.read_text()
    done = _cdm("identity", "train", "--config", str(demo / "cdm.yaml"))
    assert done.returncode == 0, done.stderr
    assert "trained model version 2 on" in done.stdout
    assert (demo / "data/identity/splink_model.v1.json").read_text() == first
    assert '"version": 2' in model.read_text()
    run = _cdm("run", "--config", str(demo / "cdm.yaml"), "--date", LAST_DAY)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "model v2)" in run.stdout and "trained this run" not in run.stdout


def test_comparison_ceiling_fails_the_run_with_a_clean_message_and_keeps_the_customers(demo):
    before = _xref(demo)
    config = demo / "cdm.yaml"
    ceiling = "  match_threshold: 0.95\n  max_comparisons: 100\n"
    # A full re-link on demand counts every blocked pair against the ceiling.
    config.write_text(config.read_text().replace("  match_threshold: 0.95\n", ceiling))
    relink = _cdm("identity", "relink", "--config", str(config))
    assert relink.returncode == 1
    assert relink.stderr.startswith("cdm identity relink: blocking rules would generate")
    assert "above identity.max_comparisons (100)" in relink.stderr and "Traceback" not in relink.stderr
    assert _xref(demo) == before
    # So does a night with incremental linkage switched off (an incremental night counts only
    # the pairs of tonight's changed records, none here).
    config.write_text(config.read_text().replace(ceiling, ceiling + "  incremental: false\n"))
    done = _cdm("run", "--config", str(config), "--date", LAST_DAY)
    assert done.returncode == 1
    assert "failed: resolve_identities: blocking rules would generate" in done.stderr
    # Both names (in either order) block the most pairs of the demo.
    assert "above identity.max_comparisons (100); the largest rule is name_pair with" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _xref(demo) == before


def test_engine_spark_without_java_fails_in_one_line_and_keeps_the_customers(demo):
    before = _xref(demo)
    config = demo / "cdm.yaml"
    config.write_text(config.read_text() + "engine: spark\n")
    # No Java on the PATH (nor JAVA_HOME): a local Spark cannot start.
    env = {k: v for k, v in cli_env().items() if k != "JAVA_HOME"} | {"PATH": str(Path(CDM).parent)}
    done = subprocess.run(
        [CDM, "identity", "relink", "--config", str(config)], capture_output=True, text=True, env=env,
        timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 1
    assert done.stderr == (
        "cdm identity relink: engine: spark needs Java 17 for a local Spark:"
        " apt-get install openjdk-17-jre-headless\n"
    )
    assert _xref(demo) == before


def test_demo_run_writes_its_governance_report_and_the_insights_dashboard(demo_project, demo_dir):
    from cdm_pipeline_tests.browser import OfflineBrowser, require_chromium
    from cdm_pipeline_tests.report_pages import table_rows

    out = demo_project.stdout
    page = Path(re.search(r"governance report: (\S+)", out).group(1))
    insights = Path(re.search(r"insights dashboard: (\S+)", out).group(1))
    assert (
        page.parent.parent == demo_dir / "data/reports/runs"
        and insights == demo_dir / "data/reports/insights/index.html"
    )
    assert (page.parent.parent / "latest" / "index.html").read_text() == page.read_text()
    # The page's figures are the warehouse's: rows per source, identity's run, customers.
    landing = table_rows(page, "landing-table")
    for source, figures in landing.items():
        raw, rejects, staged = _query(demo_dir, f"""SELECT (SELECT count(*) FROM raw.{source}),
            (SELECT count(*) FROM quarantine.{source}_rejects),
            (SELECT count(*) FROM staging.{figures[0].split(' / ')[1]} WHERE source_name = ?)""", [source])[0]
        assert figures[3:5] == [f"{raw + rejects:,}", f"{rejects:,}"] and figures[7] == f"{staged:,}", source
    assert len(landing) == 5
    records, customers = _query(demo_dir, "SELECT records, customers FROM identity.resolution_runs")[0]
    identity = table_rows(page, "identity-table")
    assert identity["records resolved"][0] == f"{records:,}" and identity["customers"][0] == f"{customers:,}"
    tile = re.search(
        r'data-figure="customers"[^>]*>\s*<div class="tile"><div class="value[^"]*">([^<]+)<', insights.read_text()
    )
    assert tile.group(1) == f"{customers:,}"
    # Both pages, and the list of runs, render every chart with the network shut.
    require_chromium()
    with OfflineBrowser() as browser:
        loads = [browser.load(p) for p in (page, insights, page.parent.parent / "index.html")]
    for load in loads:
        assert not load.problems(), load.problems()
        assert not load.external_requests
    assert len(loads[0].charts) == 2 and len(loads[1].charts) == 6


def test_relink_keeps_every_id_on_unchanged_data_and_the_next_night_links_incrementally(demo):
    # The demo's one run trained the model, so it linked in full (its metadata has no change counts).
    assert _mode_metadata(demo) == {
        "identity_mode": "full", "identity_mode_reason": "model version 1 was trained this run",
        "identity_engine": "duckdb",
    }
    before = _xref(demo)
    done = _cdm("identity", "relink", "--config", str(demo / "cdm.yaml"))
    assert done.returncode == 0, done.stderr[-3000:]
    (run_id, mode, reason, records, customers, new, merged, split, retired, reclustered) = _query(
        demo,
        """SELECT run_id, mode, mode_reason, records, customers, new_ids, merged_ids, split_ids, retired_ids,
            reclustered_records FROM identity.resolution_runs ORDER BY resolved_at DESC LIMIT 1""",
    )[0]
    assert re.fullmatch(r"relink-\d{8}T\d{6}Z-[0-9a-f]{8}", run_id)
    assert (mode, reason) == ("full", "a full re-link was asked for")
    assert (new, merged, split, retired) == (0, 0, 0, 0)
    assert reclustered == records  # a full re-link clusters every record
    out = done.stdout
    assert out.startswith(f"full re-link {run_id}: done in ")
    assert "\n  identity mode: full (a full re-link was asked for)\n" in out
    assert (
        f"\n  identity: {records:,} records -> {customers:,} customers"
        " (0 new, 0 merged, 0 split, 0 retired ids; model v1) in "
    ) in out
    assert re.search(r"\n  marts rebuilt as of 2026-10-03 in [\d.]+ s\n", out)
    assert out.endswith("refresh on the next `cdm run`\n")
    assert _xref(demo) == before
    # The marts were rebuilt on the re-linked customers.
    assert _query(demo, "SELECT count(*) FROM marts.customer_360") == [(customers,)]

    # The same day again: nothing changed since the re-link, so nothing is scored or clustered again.
    night = _cdm("run", "--config", str(demo / "cdm.yaml"), "--date", LAST_DAY)
    assert night.returncode == 0, night.stderr[-3000:]
    assert (
        "\n  identity mode: incremental (only records changed since the last resolution):"
        " 0 records changed, 0 removed, 0 re-clustered\n"
    ) in night.stdout
    assert f"identity: {records:,} records -> {customers:,} customers (0 new, 0 merged," in night.stdout
    assert _query(
        demo,
        """SELECT mode, changed_records, removed_records, reclustered_records FROM identity.resolution_runs
        ORDER BY resolved_at DESC LIMIT 1""",
    ) == [("incremental", 0, 0, 0)]
    assert _xref(demo) == before
    assert _mode_metadata(demo) == {
        "identity_mode": "incremental", "identity_mode_reason": "only records changed since the last resolution",
        "changed_records": 0, "rescored_records": 0, "removed_records": 0, "reclustered_records": 0,
        "identity_engine": "duckdb",
    }


def _mode_metadata(folder: Path) -> dict:
    """The mode keys of the identity asset's latest materialisation in the project's run storage."""
    import dagster as dg

    from cdm_pipeline.lib.catalog import XREF

    with dg.DagsterInstance.from_config(str(folder / ".dagster_home")) as instance:
        metadata = instance.get_latest_materialization_event(XREF.asset_key).asset_materialization.metadata
    keys = ("identity_mode", "identity_mode_reason", "changed_records", "rescored_records", "removed_records",
            "reclustered_records", "identity_engine")
    return {k: metadata[k].value for k in keys if k in metadata}


def test_relink_refuses_before_identity_has_run(demo_dir, tmp_path):
    config = tmp_path / "cdm.yaml"
    config.write_text((demo_dir / "cdm.yaml").read_text())
    warehouse = tmp_path / "data/warehouse/cdm.duckdb"
    warehouse.parent.mkdir(parents=True)
    duckdb.connect(str(warehouse)).close()
    empty = _cdm("identity", "relink", "--config", str(config))
    assert (empty.returncode, empty.stdout) == (2, "")
    assert empty.stderr == "cdm identity relink: no staged contacts yet: run `cdm run` first\n"

    conn = duckdb.connect(str(warehouse))
    conn.execute("CREATE SCHEMA staging; CREATE TABLE staging.contacts (source_name VARCHAR)")
    conn.close()
    staged = _cdm("identity", "relink", "--config", str(config))
    assert (staged.returncode, staged.stdout) == (2, "")
    assert staged.stderr == "cdm identity relink: identity resolution has not run yet: run `cdm run` first\n"
    assert _query(tmp_path, "SELECT schema_name FROM duckdb_schemas() WHERE schema_name = 'identity'") == []
