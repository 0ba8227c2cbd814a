"""The run's governance report, built from a small warehouse whose figures are known by hand."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from cdm_pipeline.config import load_config
from cdm_pipeline.defs.reports.failed_runs import REPORT_SENSOR, build_failed_run_report_sensor
from cdm_pipeline.lib.governance.audit_log import ensure_audit_log
from cdm_pipeline.lib.governance.extract_log import record_extract
from cdm_pipeline.lib.governance.quality_results import QualityRow, append_results
from cdm_pipeline.lib.reports.governance_report import write_governance_report
from cdm_pipeline.lib.reports.runs import latest_run_id
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env, warehouse_lock_held, write_config
from cdm_pipeline_tests.report_pages import chart_images, page_tables, table_rows, tables_in

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 10, 2, 2, 0, tzinfo=UTC)  # the previous night's run, "run-A"
T1 = dt.datetime(2026, 10, 3, 2, 0, tzinfo=UTC)  # the run reported on, "run-B"
MINUTE = dt.timedelta(minutes=1)
PERSONAL = ("Zebedee", "Quigley", "zebedee.q@example.org", "+447700900123", "12 Acacia Avenue")

CONFIG = """
warehouse: warehouse/cdm.duckdb
landing_dir: landing
reports_dir: reports
start_date: 2026-10-01
timezone: {timezone}
sources:
  - {{name: crm_contacts, system: crm, kind: contacts, format: csv, path: "crm/{{date}}/*.csv",
     id_column: contact_id, columns: {{first_name: FirstName, email: Email}}}}
  - {{name: email_subscribers, system: email, kind: contacts, format: jsonl, path: "email/{{date}}/*.jsonl",
     id_column: subscriber_id, columns: {{email: email}}}}
  - {{name: crm_orders, system: crm, kind: orders, format: csv, path: "orders/{{date}}/*.csv",
     id_column: order_id, columns: {{contact_id: contact_id}}}}
"""


def _quality(name, severity, success, unexpected, elements):
    return QualityRow("staging.contacts" if not name.startswith("order") else "staging.orders", name,
                      "expect_x", None, severity, success, unexpected, elements, None, None)


def build_fixture_warehouse(path: Path) -> None:
    """Two nights: run-A (2 Oct) and run-B (3 Oct), whose report the tests read."""
    conn = connect(path)
    # Extract: run-B loaded 2 and 3 Oct of crm_contacts (2 Oct twice: a retried step) and 2 Oct
    # of email_subscribers; run-A loaded 1 Oct.
    record_extract(conn, "run-A", "crm_contacts", dt.date(2026, 10, 1), 1, 10, 1, 0, T0)
    record_extract(conn, "run-B", "crm_contacts", dt.date(2026, 10, 2), 1, 99, 9, 9, T1)
    record_extract(conn, "run-B", "crm_contacts", dt.date(2026, 10, 2), 1, 20, 2, 1, T1 + MINUTE)
    record_extract(conn, "run-B", "crm_contacts", dt.date(2026, 10, 3), 2, 5, 0, 0, T1 + MINUTE)
    record_extract(conn, "run-B", "email_subscribers", dt.date(2026, 10, 2), 1, 7, 1, 0, T1 + MINUTE)
    conn.execute("CREATE SCHEMA quarantine; CREATE SCHEMA staging; CREATE SCHEMA identity")
    for source in ("crm_contacts", "email_subscribers"):
        conn.execute(
            f"CREATE TABLE quarantine.{source}_rejects (error_type VARCHAR, raw_line VARCHAR, _partition_date DATE)"
        )
    conn.execute("""INSERT INTO quarantine.crm_contacts_rejects VALUES
        ('TOO MANY COLUMNS', 'x', '2026-10-01'), ('TOO MANY COLUMNS', 'Zebedee,Quigley', '2026-10-02'),
        ('INVALID UNICODE', 'y', '2026-10-02')""")
    conn.execute("INSERT INTO quarantine.email_subscribers_rejects VALUES ('INVALID JSON', '{', '2026-10-02')")
    conn.execute("""CREATE TABLE staging.contacts (source_name VARCHAR, first_name VARCHAR, last_name VARCHAR,
        email VARCHAR, phone VARCHAR, address_line1 VARCHAR, quality_flags VARCHAR[], _partition_date DATE)""")
    staged = (
        [("crm_contacts", [], "2026-10-01")] * 9
        + [("crm_contacts", ["invalid_phone"], "2026-10-02")] * 2
        + [("crm_contacts", ["invalid_email", "invalid_phone"], "2026-10-02")]
        + [("crm_contacts", [], "2026-10-02")] * 14
        + [("crm_contacts", [], "2026-10-03")] * 5
        + [("email_subscribers", [], "2026-10-02")] * 6
    )
    conn.executemany(
        "INSERT INTO staging.contacts VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(s, *PERSONAL, flags, d) for s, flags, d in staged],
    )
    conn.execute("""CREATE TABLE quarantine.contacts AS SELECT *, 'no_usable_identifier' AS quarantine_reason
        FROM staging.contacts LIMIT 0""")
    conn.executemany(
        "INSERT INTO quarantine.contacts VALUES (?, ?, ?, ?, ?, ?, [], ?, ?)",
        [(s, *PERSONAL, d, r) for s, d, r in [
            ("crm_contacts", "2026-10-02", "no_usable_identifier"),
            ("crm_contacts", "2026-10-02", "no_usable_identifier"),
            ("crm_contacts", "2026-10-03", "duplicate_in_partition"),
            ("crm_contacts", "2026-10-01", "no_usable_identifier"),
            ("email_subscribers", "2026-10-02", "duplicate_in_partition"),
        ]],
    )
    # Quality: run-A failed the e-mail check; run-B passes it, fails the phone check (1 of 20 on
    # 2 Oct, 1 of 5 on 3 Oct) and validates orders for the first time.
    append_results(conn, "run-A", [
        _quality("email_syntax_all_valid", "warning", False, 3, 100),
        _quality("row_count_positive", "critical", True, 0, 100),
        _quality("phone_e164_all_valid", "warning", True, 0, 100),
    ], dt.date(2026, 10, 1), dt.date(2026, 10, 1), T0 + 5 * MINUTE)
    append_results(conn, "run-B", [
        _quality("email_syntax_all_valid", "warning", True, 0, 20),
        _quality("row_count_positive", "critical", True, 0, 20),
        _quality("phone_e164_all_valid", "warning", False, 1, 20),
    ], dt.date(2026, 10, 2), dt.date(2026, 10, 2), T1 + 5 * MINUTE)
    append_results(conn, "run-B", [
        _quality("email_syntax_all_valid", "warning", True, 0, 5),
        _quality("row_count_positive", "critical", True, 0, 5),
        _quality("phone_e164_all_valid", "warning", False, 1, 5),
        _quality("orders_amount_not_negative", "critical", False, 4, 10),
    ], dt.date(2026, 10, 3), dt.date(2026, 10, 3), T1 + 6 * MINUTE)
    # Identity: two resolutions; the customers as they are now (records per customer).
    conn.execute("""CREATE TABLE identity.resolution_runs (run_id VARCHAR, resolved_at TIMESTAMPTZ,
        model_version INTEGER, model_trained BOOLEAN, records BIGINT, contact_records BIGINT,
        web_identities BIGINT, deterministic_edges BIGINT, comparisons BIGINT, match_edges BIGINT,
        clusters BIGINT, largest_cluster BIGINT, oversize_clusters BIGINT, overrides_applied BIGINT,
        new_ids BIGINT, merged_ids BIGINT, split_ids BIGINT, retired_ids BIGINT, customers BIGINT,
        blocklisted_values BIGINT, over_cap_values BIGINT, pairwise_precision DOUBLE,
        pairwise_recall DOUBLE, pairwise_f1 DOUBLE)""")
    conn.execute("INSERT INTO identity.resolution_runs VALUES (?, ?, 1, true, 40, 35, 5, 12, 250, 20, 28, 9,"
                 " 0, 0, 28, 0, 0, 0, 28, 1, 0, 0.98, 0.94, 0.9596)",
                 ["run-A", T0 + 10 * MINUTE])
    conn.execute("INSERT INTO identity.resolution_runs VALUES (?, ?, 1, false, 52, 45, 7, 15, 300, 26, 30, 12,"
                 " 1, 2, 3, 1, 1, 0, 30, 1, 2, 0.99, 0.95, 0.9696)",
                 ["run-B", T1 + 10 * MINUTE])
    # Re-resolutions after erasures (a queued one in run-B, one from the command line later)
    # are logged under ids of their own: no run, and never "the latest run".
    for run_id, at in (("run-B-privacy", T1 + 12 * MINUTE), ("privacy-req-11", T1 + 41 * MINUTE)):
        conn.execute("INSERT INTO identity.resolution_runs SELECT * REPLACE (? AS run_id, ? AS resolved_at)"
                     " FROM identity.resolution_runs WHERE run_id = 'run-B'", [run_id, at])
    conn.execute("CREATE TABLE identity.golden_customers"
                 " (customer_id VARCHAR, first_name VARCHAR, email VARCHAR, record_count BIGINT)")
    sizes = [1] * 20 + [2] * 6 + [3] * 3 + [12]
    conn.executemany("INSERT INTO identity.golden_customers VALUES (?, 'Zebedee', 'zebedee.q@example.org', ?)",
                     [(f"C{i:04d}", n) for i, n in enumerate(sizes)])
    conn.execute("""CREATE TABLE identity.oversize_clusters (run_id VARCHAR, resolved_at TIMESTAMPTZ,
        customer_id VARCHAR, records_before BIGINT, resolved_by VARCHAR, largest_after BIGINT)""")
    conn.execute(
        "INSERT INTO identity.oversize_clusters VALUES ('run-B', ?, 'C0029', 25, 'weakest links cut', 12)", [T1]
    )
    conn.execute("""CREATE TABLE identity.overrides_applied (run_id VARCHAR, resolved_at TIMESTAMPTZ, line INTEGER,
        decision VARCHAR, source_name_l VARCHAR, source_record_id_l VARCHAR, source_name_r VARCHAR,
        source_record_id_r VARCHAR, outcome VARCHAR)""")
    conn.execute("""INSERT INTO identity.overrides_applied VALUES
        ('run-B', ?, 3, 'must_link', 'crm_contacts', 'a', 'email_subscribers', 'b', 'applied'),
        ('run-B', ?, 7, 'cannot_link', 'crm_contacts', 'c', 'crm_contacts', 'd', 'applied: split')""", [T1, T1])
    # Privacy: what happened before run-A's report is not run-B's; an erasure from the command
    # line between the runs and a request during run-B are.
    conn.execute("""CREATE TABLE governance.run_reports (run_id VARCHAR NOT NULL, started_at TIMESTAMPTZ NOT NULL,
        reported_at TIMESTAMPTZ NOT NULL, outcome VARCHAR NOT NULL, page VARCHAR NOT NULL)""")
    conn.execute("INSERT INTO governance.run_reports VALUES ('run-A', ?, ?, 'succeeded', '2026-10-02/run-run-A.html')",
                 [T0, T0 + 20 * MINUTE])
    ensure_audit_log(conn)
    conn.executemany("INSERT INTO governance.audit_log (occurred_at, action, request_id, rows_affected, detail)"
                     " VALUES (?, ?, ?, ?, ?)", [
        (T0 + 15 * MINUTE, "audience_export", None, 50, "segment rfm:Champions -> 50 exported"),
        (T1 - 60 * MINUTE, "privacy_erasure", "req-9", 14, "1 customers, 3 records; 14 rows deleted"),
        (T1 + 15 * MINUTE, "audience_export", None, 40, "segment rfm:Champions -> 40 exported"),
        (T1 + 40 * MINUTE, "privacy_erasure", "req-11", 5, "after the report"),
    ])
    conn.execute("""CREATE TABLE governance.privacy_requests (request_id VARCHAR PRIMARY KEY, action VARCHAR NOT NULL,
        status VARCHAR NOT NULL, processed_at TIMESTAMPTZ NOT NULL, customers BIGINT, rows_affected BIGINT)""")
    conn.executemany("INSERT INTO governance.privacy_requests VALUES (?, ?, ?, ?, ?, ?)", [
        ("req-8", "erase", "done", T0 + 14 * MINUTE, 1, 9),
        ("req-9", "erase", "done", T1 - 60 * MINUTE, 1, 14),
        ("req-10", "access", "not_found", T1 + 12 * MINUTE, 0, 0),
    ])
    conn.execute("CREATE TABLE governance.suppression_list (kind VARCHAR, value_hash VARCHAR)")
    conn.execute("INSERT INTO governance.suppression_list VALUES ('email', 'ab'), ('phone', 'cd')")
    conn.close()


@pytest.fixture
def project(tmp_path):
    def make(timezone: str = "UTC"):
        config = load_config(write_config(tmp_path, CONFIG.format(timezone=timezone)))
        build_fixture_warehouse(config.warehouse)
        return config
    return make


def _report(config, run_id="run-B", now=T1 + 30 * MINUTE, **kwargs):
    conn = connect(config.warehouse)
    try:
        return write_governance_report(conn, config, run_id, outcome="succeeded", now=now, **kwargs)
    finally:
        conn.close()


def test_landing_figures_count_each_partition_of_the_run_once_with_the_reasons(project):
    config = project()
    report = _report(config)
    assert report.page == config.reports_dir / "runs" / "2026-10-03" / "index.html"
    assert report.run_page.read_text() == report.page.read_text() == report.latest.read_text()
    landing = table_rows(report.page, "landing-table")
    # source: system/kind, partitions, files, landed, rejected, suppressed, quarantined, staged
    assert landing == {
        "crm_contacts": ["crm / contacts", "2026-10-02 to 2026-10-03 (2)", "3", "28", "2", "1", "3", "22"],
        "email_subscribers": ["email / contacts", "2026-10-02", "1", "8", "1", "0", "1", "6"],
    }  # crm_orders loaded nothing in run-B: no row
    reasons = page_tables(report.page)["reasons-table"][1:]
    assert reasons == [
        ["crm_contacts", "rejected", "INVALID UNICODE", "1"],
        ["crm_contacts", "rejected", "TOO MANY COLUMNS", "1"],
        ["crm_contacts", "quarantined", "no_usable_identifier", "2"],
        ["crm_contacts", "quarantined", "duplicate_in_partition", "1"],
        ["crm_contacts", "staged with a warning", "invalid_phone", "3"],
        ["crm_contacts", "staged with a warning", "invalid_email", "1"],
        ["email_subscribers", "rejected", "INVALID JSON", "1"],
        ["email_subscribers", "quarantined", "duplicate_in_partition", "1"],
    ]
    assert (report.landed, report.rejected, report.quarantined) == (36, 3, 4)


def test_quality_results_are_compared_with_the_previous_run_of_each_table(project):
    report = _report(project())
    quality = table_rows(report.page, "quality-table")
    # partitions, expectations, passed, critical failed, warnings, failed last time, change
    assert quality["staging.contacts"] == ["2026-10-02 to 2026-10-03", "3", "2", "0", "1", "1", "±0"]
    assert quality["staging.orders"] == ["2026-10-03", "1", "0", "1", "0", "no earlier run", "–"]
    assert report.expectations_failed == 2
    contacts = page_tables(report.page)["changes-staging.contacts"]
    # The phone check failed 2 of 25 (8%) after passing; the e-mail check recovered from 3%.
    assert contacts[1:] == [
        ["email_syntax_all_valid", "warning", "passed", "0 of 25", "0.00%", "3.00%", "failed"],
        ["phone_e164_all_valid", "warning", "failed", "2 of 25", "8.00%", "0.00%", "passed"],
    ]


def test_identity_figures_come_with_the_previous_resolution_and_the_cluster_sizes(project):
    report = _report(project())
    identity = table_rows(report.page, "identity-table")
    assert identity["records resolved"] == ["52", "40", "+12"]
    assert identity["pairs compared by the model"] == ["300", "250", "+50"]
    assert identity["customers"] == ["30", "28", "+2"]
    assert identity["customer ids merged"] == ["1", "0", "+1"]
    assert identity["customer ids split"] == ["1", "0", "+1"]
    assert identity["identifiers ignored (shared too widely)"] == ["2", "0", "+2"]
    assert table_rows(report.page, "evaluation-table")["pairwise F1"] == ["0.9696", "0.9596"]
    sizes = table_rows(report.page, "cluster-sizes")
    assert sizes["1"] == ["20", "20"] and sizes["2"] == ["6", "12"] and sizes["3"] == ["3", "9"]
    assert sizes["11–20"] == ["1", "12"] and sizes["21+"] == ["0", "0"]
    assert table_rows(report.page, "oversize-table") == {"C0029": ["25", "weakest links cut", "12"]}
    assert table_rows(report.page, "overrides-table") == {
        "3": ["must_link", "applied"], "7": ["cannot_link", "applied: split"]
    }
    charts = chart_images(report.page)
    assert set(charts) == {"rows_held_back", "cluster_sizes"}
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000 for png in charts.values())


def test_identity_signals_untrained_levels_and_warnings_are_on_the_page(project):
    config = project()
    conn = connect(config.warehouse)
    # The columns later versions add to resolution_runs (an old warehouse lacks them: run-A).
    for column, kind in (("expected_precision", "DOUBLE"), ("expected_recall", "DOUBLE"),
                         ("singleton_share", "DOUBLE"), ("untrained_levels", "VARCHAR[]"),
                         ("merges_on_cluster_evidence", "BIGINT"), ("signal_warnings", "VARCHAR[]")):
        conn.execute(f"ALTER TABLE identity.resolution_runs ADD COLUMN {column} {kind}")
    conn.execute("""UPDATE identity.resolution_runs SET expected_precision = 0.9712, expected_recall = 0.8125,
        singleton_share = 0.25, merges_on_cluster_evidence = 4,
        untrained_levels = ['phone: Levenshtein distance of phone <= 1'],
        signal_warnings = ['expected recall moved from 0.912 to 0.813'] WHERE run_id = 'run-B'""")
    conn.close()

    report = _report(config)

    signals = table_rows(report.page, "signals-table")
    assert signals["expected precision"] == ["0.9712", "–"]
    assert signals["expected recall"] == ["0.8125", "–"]
    assert signals["share of contact records alone in their cluster"] == ["0.2500", "–"]
    assert signals["clusters merged on cluster evidence"] == ["4", "–"]
    html = report.page.read_text()
    assert "phone: Levenshtein distance of phone &lt;= 1" in html
    assert '<p class="warning" data-warning>expected recall moved from 0.912 to 0.813</p>' in html


def test_privacy_actions_are_those_since_the_previous_report(project):
    report = _report(project())
    assert table_rows(report.page, "requests-table") == {
        "access": ["not_found", "1", "0", "0"], "erase": ["done", "1", "1", "14"],
    }
    audit = page_tables(report.page)["audit-table"][1:]
    assert [(row[1], row[2], row[3]) for row in audit] == [
        ("privacy_erasure", "req-9", "14"), ("audience_export", "–", "40"),
    ]
    assert "2 identifiers are on the suppression list" in report.page.read_text()


def test_the_page_holds_no_personal_value_and_loads_nothing_from_elsewhere(project):
    report = _report(project())
    html = report.page.read_text()
    for value in PERSONAL:
        assert value not in html
    assert "http://" not in html and "https://" not in html
    assert 'href="../../data_docs/index.html"' in html


def test_reports_of_later_runs_link_back_and_a_later_run_on_the_same_day_takes_the_page(project):
    config = project()
    first = _report(config)
    assert first.latest.read_text() == first.page.read_text()
    # A re-run the same day (run-C) after a privacy action: its page replaces the day's page and
    # compares with run-B's report; the index lists all three runs, linking one page per day.
    conn = connect(config.warehouse)
    record_extract(conn, "run-C", "email_subscribers", dt.date(2026, 10, 3), 1, 4, 0, 0, T1 + 60 * MINUTE)
    conn.close()
    second = _report(config, "run-C", now=T1 + 70 * MINUTE)
    assert second.page == first.page and second.latest.read_text() == second.page.read_text()
    # run-B's own page stays, beside the day's page that now shows run-C.
    assert first.run_page.name == "run-run-B.html" and second.run_page.name == "run-run-C.html"
    assert "run-B" in first.run_page.read_text() and "run-C" not in first.run_page.read_text()
    html = second.page.read_text()
    assert "run-B" in html and "run-C" in html
    assert table_rows(second.page, "landing-table") == {
        "email_subscribers": ["email / contacts", "2026-10-03", "1", "4", "0", "0", "0", "0"]}
    # Only the erasure logged after run-B's report at 02:30 belongs to run-C.
    assert [row[2] for row in page_tables(second.page)["audit-table"][1:]] == ["req-11"]
    runs = page_tables(config.reports_dir / "runs" / "index.html")["runs-table"][1:]
    assert [(r[0], r[2], r[3]) for r in runs] == [
        ("2026-10-03", "run-C", "succeeded"),
        ("2026-10-03", "run-B", "succeeded"),
        ("2026-10-02", "run-A", "succeeded"),
    ]
    index = (config.reports_dir / "runs" / "index.html").read_text()
    assert index.count('href="2026-10-03/index.html"') == 2
    assert 'href="2026-10-03/run-run-B.html"' in index and 'href="2026-10-03/run-run-C.html"' in index
    # Rebuilding run-B's report later refreshes its own page only: the day and latest stay run-C's.
    before = first.run_page.read_text()
    again = _report(config, "run-B", now=T1 + 90 * MINUTE)
    assert again.page == first.run_page
    assert "run-C" not in again.page.read_text()
    # The same period as the first time: req-11 (logged after run-B's report) stays run-C's.
    assert page_tables(again.page)["audit-table"] == tables_in(before)["audit-table"]
    assert "run-C" in second.page.read_text() and "run-C" in second.latest.read_text()


def test_the_run_day_is_the_day_the_run_started_in_the_configured_time_zone(project):
    # 02:00 UTC on 3 Oct is 22:00 on 2 Oct in New York.
    report = _report(project("America/New_York"))
    assert report.run_date == dt.date(2026, 10, 2)
    assert report.page.parent.name == "2026-10-02"


def test_cdm_report_rebuilds_the_pages_of_the_latest_run_and_opens_them(project, tmp_path):
    config = project()
    conn = duckdb.connect(str(config.warehouse), read_only=True)
    assert latest_run_id(conn) == "run-B"
    conn.close()
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> {opened}\n")
    browser.chmod(0o755)
    done = subprocess.run(
        [CDM, "report", "--config", str(config.config_path), "--open"],
        capture_output=True, text=True, env=cli_env(BROWSER=str(browser)), timeout=HANG_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = config.reports_dir / "runs" / "2026-10-03" / "index.html"
    insights = config.reports_dir / "insights" / "index.html"
    assert f"governance report (run run-B, outcome unknown: not in this run storage): {page}" in done.stdout
    assert f"insights dashboard (as of no marts yet): {insights}" in done.stdout
    assert opened.read_text().split() == [page.as_uri(), insights.as_uri()]
    assert page.exists() and insights.exists()


def test_cdm_report_refuses_a_run_id_it_has_never_seen(project):
    config = project()
    done = subprocess.run([CDM, "report", "--config", str(config.config_path), "--run-id", "run-Z"],
                          capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.strip() == "cdm report: error: no run 'run-Z' in the warehouse or the run storage"
    assert not (config.reports_dir / "runs").exists()


def test_cdm_report_on_a_warehouse_without_runs_says_so(tmp_path):
    config = write_config(tmp_path, CONFIG.format(timezone="UTC"))
    connect(tmp_path / "warehouse" / "cdm.duckdb").close()
    done = subprocess.run(
        [CDM, "report", "--config", str(config)], capture_output=True, text=True, env=cli_env(), timeout=HANG_TIMEOUT
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "cdm report: error: the warehouse has no run yet: run `cdm run` or `cdm demo` first"


def test_report_and_index_render_every_chart_in_chromium_with_the_network_shut(project):
    from cdm_pipeline_tests.browser import OfflineBrowser, require_chromium

    require_chromium()
    report = _report(project())
    with OfflineBrowser() as browser:
        page = browser.load(report.page)
        index = browser.load(report.index)
    for load in (page, index):
        assert not load.problems(), load.problems()
        assert not load.external_requests
    assert {c.chart for c in page.charts} == {"rows_held_back", "cluster_sizes"}
    assert all(c.rendered and c.natural_width > 300 for c in page.charts)
    assert "Run report 2026-10-03" in page.text and "run-B" in index.text


# --- a failed run's report, written by the run-failure sensor ----------------------------------

@dg.asset
def loses_its_file():
    raise dg.Failure(description="source 'crm_contacts': crm/a.csv has no column 'Email'", allow_retries=False)


def _failed_run(instance, tags=None):
    result = dg.materialize([loses_its_file], instance=instance, raise_on_error=False, tags=tags)
    assert not result.success
    return result


def _sensor_says(sensor, instance, result):
    context = dg.build_run_status_sensor_context(
        sensor_name=REPORT_SENSOR, dagster_event=result.get_run_failure_event(),
        dagster_instance=instance, dagster_run=result.dagster_run,
    )
    return sensor(context)


def test_a_run_that_fails_before_its_reports_step_gets_its_report_from_the_sensor(project):
    config = project()
    sensor = build_failed_run_report_sensor(config)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.DagsterInstance.ephemeral() as instance:
        cli_run = _failed_run(instance, tags={"cdm/launched_by": "cli"})
        assert "wrote its report" in _sensor_says(sensor, instance, cli_run).skip_message
        result = _failed_run(instance)
        assert _sensor_says(sensor, instance, result) is None
        started = instance.get_run_record_by_id(result.run_id).start_time
    day = dt.datetime.fromtimestamp(started, UTC).date().isoformat()
    page = config.reports_dir / "runs" / day / "index.html"
    html = page.read_text()
    assert result.run_id in html and "failed: loses_its_file" in html
    assert "has no column" not in html  # step names only: a message could quote a value
    conn = duckdb.connect(str(config.warehouse), read_only=True)
    assert conn.execute("SELECT outcome FROM governance.run_reports WHERE run_id = ?", [result.run_id]).fetchall() == [
        ("failed: loses_its_file",)]
    assert cli_run.run_id not in str(conn.execute("SELECT list(run_id) FROM governance.run_reports").fetchall())
    conn.close()


def test_the_sensor_leaves_the_report_for_later_while_another_process_holds_the_warehouse(project):
    config = project()
    with warehouse_lock_held(config.warehouse), dg.DagsterInstance.ephemeral() as instance:
        result = _failed_run(instance)
        said = _sensor_says(build_failed_run_report_sensor(config), instance, result)
    assert said.skip_message == (
        f"the warehouse is in use: write the report with `cdm report --run-id {result.run_id}`")
    assert not (config.reports_dir / "runs").exists()
