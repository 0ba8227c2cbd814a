"""The benchmark's own tooling (benchmarks/): the RESULTS.md rewrite, the target verdicts, the
chart's rows and the process-tree memory sampler. The benchmark runs themselves are `make bench`."""

import subprocess
import sys
import time

from cdm_pipeline_tests.conftest import HANG_TIMEOUT, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from benchmarks import report  # noqa: E402
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
