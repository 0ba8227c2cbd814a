"""The benchmark's own tooling (benchmarks/): the RESULTS.md rewrite, the target verdicts, the
chart's rows and the process-tree memory sampler. The benchmark runs themselves are `make bench`."""

import shutil
import subprocess
import sys
import time

import duckdb
import pytest

from cdm_pipeline_tests.conftest import HANG_TIMEOUT, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from benchmarks import incremental, report  # noqa: E402
from benchmarks.bench import TreeMemory  # noqa: E402


def _run(people: int, total: float, f1: float, **extra) -> dict:
    stages = {"extract": 10.0, "staging": 20.0, "identity": 30.0, "privacy": 0.1, "marts": 5.0,
              "exports": 0.5, "orchestration": 4.0}
    return {
        "date": "2026-11-22", "machine": "x86_64, 2 cores, 24 GB, Linux", "people": people,
        "duckdb_memory_limit": "4GB", "total_seconds": total, "peak_rss_mb": 5000,
        "stage_seconds": stages, "bare_splink_seconds": 25.0, "plain_scan_seconds": 8.0,
        "identity_vs_bare_splink_ratio": 1.2, "extract_vs_scan_ratio": 1.25, "pairwise_f1": f1,
        "comparisons": 1234, "clusters": 567, **extra,
    }


def test_report_rewrites_only_its_section_and_judges_the_latest_million_run(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"# Benchmarks\n\nHand-written findings.\n\n{report.START}\nold table\n{report.END}\n\nFooter.\n")
    runs = [
        _run(1_000_000, 700.0, 0.99),  # an older million-person run: not the one judged
        _run(100_000, 60.0, 0.95),
        _run(1_000_000, 590.0, 0.9799, peak_rss_mb=6200),
    ]

    report.write_report(runs, tmp_path)

    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written findings.\n\n") and text.endswith("\n\nFooter.\n")
    assert "old table" not in text
    rows = [line for line in text.splitlines() if line.startswith(("| 1 |", "| 2 |", "| 3 |"))]
    assert [row.split(" | ")[2] for row in rows] == ["1,000,000", "100,000", "1,000,000"]
    assert "## Targets at 1,000,000 people (run #3, 2026-11-22)" in text
    assert "| peak RSS | ≤ 6,144 MB | 6,200 MB | MISSED |" in text
    assert "| pairwise F1 | ≥ 0.9800 | 0.9799 | MISSED |" in text
    assert "| identity vs bare Splink | ≤ 1.30x | 1.20x | met |" in text
    assert "| whole nightly pipeline | ≤ 600 s | 590 s | met |" in text
    assert (tmp_path / report.CHART).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_two_runs_of_one_size_on_one_day_get_their_own_chart_rows():
    runs = [_run(1_000_000, 280.0, 0.97), _run(1_000_000, 250.0, 0.98)]

    labels = report.chart_labels(runs)

    assert len(set(labels)) == 2 and labels[0].startswith("#1 1,000,000 people")


def test_tree_memory_counts_the_children_of_the_process(tmp_path):
    # A child that holds 300 MB for two seconds, under a parent that holds almost nothing.
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys; subprocess.run([sys.executable, '-c',"
        " 'import time; b = bytearray(300 * 2**20); time.sleep(2)'])"
    )])
    with TreeMemory(parent.pid) as memory:
        parent.wait(timeout=HANG_TIMEOUT)
        time.sleep(0.2)

    assert memory.peak_bytes >= 300 * 2**20
    assert memory.peak_bytes < 800 * 2**20


def _incremental_run(people: int, f1: float, unchanged_differing: int) -> dict:
    same = {"f1": f1, "records_id_differs": 12, "new_records_id_differs": 10,
            "unchanged_customers": 900, "unchanged_customers_id_differs": unchanged_differing}
    return {
        "date": "2026-12-04", "machine": "x86_64, 2 cores, 24 GB, Linux", "people": people, "days": 14,
        "nights": 1, "changed_share": 0.015, "seconds_ratio": 0.08,
        "incremental": {"changes": {"changed": 150}, "comparisons": 300, "seconds": 8.0, "peak_rss_mb": 900},
        "full": {"comparisons": 9000, "seconds": 100.0, "peak_rss_mb": 1000},
        "night": {"identity_seconds": 9.5, "mode": "incremental"},
        "incremental_vs_full": same, "night_vs_full": same,
    }


def test_the_incremental_section_and_the_results_section_leave_each_other_alone(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"# Benchmarks\n\nHand-written.\n\n{report.START}\nold table\n{report.END}\n\nFooter.\n")

    incremental.write_section([_incremental_run(20_000, 0.9991, 0)], tmp_path)
    report.write_report([_run(10_000, 60.0, 0.98)], tmp_path)
    incremental.write_section([_incremental_run(20_000, 0.9991, 0), _incremental_run(1_000_000, 0.9989, 3)],
                              tmp_path)

    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nHand-written.\n\n") and "\n\nFooter.\n" in text
    assert "old table" not in text and text.count(report.START) == 1
    assert text.count(incremental.START_MARK) == 1 and text.index(report.END) < text.index(incremental.START_MARK)
    rows = [line for line in text.splitlines() if line.startswith(("| 1 | 2026-12-04", "| 2 | 2026-12-04"))]
    assert len(rows) == 2 and "| 0.99890 | 12 (10 new) / 3 of 900 |" in rows[1]
    assert "| pairwise F1 vs full | ≥ 0.999 | 0.99890 | MISSED |" in text
    assert "| incremental / full identity seconds | ≤ 0.10 | 0.080 | met |" in text
    assert "| unchanged customers with another id | 0 | 3 | MISSED |" in text


def test_incremental_clusters_are_compared_pairwise_and_by_unchanged_customer():
    conn = duckdb.connect()
    # Records a..e. Before: {a, b} C1, {c} C2, {d} C3. Incremental: e joins C1; c and d stay.
    # Full: the same, but it merges C3 into C2 (d, untouched by the night, gets another id).
    xrefs = {
        "before": [("a", "C1"), ("b", "C1"), ("c", "C2"), ("d", "C3")],
        "inc": [("a", "C1"), ("b", "C1"), ("e", "C1"), ("c", "C2"), ("d", "C3")],
        "ful": [("a", "C1"), ("b", "C1"), ("e", "C1"), ("c", "C2"), ("d", "C2")],
    }
    for name, rows in xrefs.items():
        conn.execute(f"ATTACH ':memory:' AS {name}")
        conn.execute(f"CREATE SCHEMA {name}.identity")
        conn.execute(f"CREATE TABLE {name}.identity.customer_xref (source_name VARCHAR,"
                     " source_record_id VARCHAR, customer_id VARCHAR)")
        conn.executemany(f"INSERT INTO {name}.identity.customer_xref VALUES ('crm', ?, ?)", rows)

    same = incremental.compare(conn, "inc", "ful", "before")

    # Pairs: incremental ab ae be (3), full ab ae be cd (4), both 3.
    assert (same["pairs_incremental"], same["pairs_full"], same["pairs_both"]) == (3, 4, 3)
    assert (same["precision"], same["recall"], same["f1"]) == (1.0, 0.75, round(6 / 7, 6))
    assert (same["records_id_differs"], same["new_records_id_differs"]) == (1, 0)
    # C2 and C3 kept their records; C1 gained e. Of the two, C3 has another id in the full run.
    assert (same["unchanged_customers"], same["unchanged_customers_id_differs"]) == (2, 1)


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_bench_passes_incremental_only_when_asked():
    def bench_line(*variables: str) -> str:
        out = subprocess.run(["make", "-n", "bench", *variables], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout
        return next(line for line in out.splitlines() if "benchmarks/bench.py" in line)

    assert bench_line().endswith("--people 10000")
    assert bench_line("INCREMENTAL=0").endswith("--people 10000")
    assert bench_line("SCALE=20000", "INCREMENTAL=1").endswith("--people 20000 --incremental")
    help_text = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--incremental" in help_text and "--nights" in help_text
