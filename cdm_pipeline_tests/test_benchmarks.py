"""The benchmark's own tooling (benchmarks/): the RESULTS.md rewrite, the target verdicts, the
chart's rows and the process-tree memory sampler. The benchmark runs themselves are `make bench`."""

import json
import math
import shutil
import subprocess
import sys
import time

import duckdb
import pytest

from cdm_pipeline_tests.conftest import HANG_TIMEOUT, REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from benchmarks import engines, incremental, report  # noqa: E402
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


@pytest.mark.parametrize("depth", [1, 2])
def test_tree_memory_counts_every_descendant(depth):
    # A process `depth` levels below the root holds 300 MB for two seconds; the processes above
    # it hold almost nothing. Depth 2 is the Spark child's JVM below the benchmark's Python child.
    # Rooted at a process of its own, as the benchmark's children are: the test worker's own tree
    # holds whatever other tests started (a Spark JVM of 3 GB).
    command = "import time; b = bytearray(300 * 2**20); time.sleep(2)"
    for _ in range(depth):
        command = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {command!r}])"
    root = subprocess.Popen([sys.executable, "-c", command])
    with TreeMemory(root.pid) as memory:
        root.wait(timeout=HANG_TIMEOUT)
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
    assert bench_line("ENGINE=duckdb").endswith("--people 10000")
    assert bench_line("SCALE=2000", "ENGINE=spark").endswith("--people 2000 --engine spark")
    assert bench_line("ENGINE=spark", "TRAIN=0").endswith("--people 10000 --engine spark --no-train")
    help_text = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / "bench.py"), "--help"],
                               capture_output=True, text=True, check=True).stdout
    assert "--incremental" in help_text and "--nights" in help_text
    assert "--engine" in help_text and "--no-train" in help_text


def test_blocking_exponents_and_their_projection_to_100_million_records():
    # 1,000 -> 10,000 records: "email" grows linearly (k 1), "name" quadratically (k 2), "city"
    # by 10^1.5; "rare" has no pair in the sample, so it cannot be fitted.
    sample = {"records": 1_000, "by_rule": {"email": 50, "name": 100, "city": 10, "rare": 0}}
    everyone = {"records": 10_000, "by_rule": {"email": 500, "name": 10_000, "city": 316, "rare": 7}}

    p = engines.projection(sample, everyone, target=100_000_000)

    rows = {r["rule"]: r for r in p["rules"]}
    assert (rows["email"]["exponent"], rows["name"]["exponent"]) == (1.0, 2.0)
    assert rows["city"]["exponent"] == round(math.log10(31.6), 4)  # 1.4997
    # 100 M is 10^4 times 10,000 records: x 10^4 linear, x 10^8 quadratic.
    assert rows["email"]["projected"] == 5_000_000 and rows["name"]["projected"] == 10**12
    assert rows["city"]["projected"] == round(316 * 10_000 ** math.log10(31.6))
    assert rows["rare"]["exponent"] is None and rows["rare"]["projected"] is None and p["unfitted"] == 1
    assert p["projected_total"] == 5_000_000 + 10**12 + rows["city"]["projected"]
    assert (p["comparisons_sample"], p["comparisons"]) == (160, 10_823)
    assert engines.fit_exponent(100, 0, 1_000, 10) is None
    assert engines.project(7, 10, None) is None
    # At 100,000 records (10x): email x 10, name x 100, city x 10^1.4997; "rare" left out.
    assert engines.projected_at(p, 100_000) == pytest.approx(5_000 + 1_000_000 + 316 * 10 ** math.log10(31.6))


def test_the_blocking_fit_is_checked_against_the_latest_larger_measured_run(tmp_path):
    p = engines.projection({"records": 1_000, "by_rule": {"name": 100}},
                           {"records": 10_000, "by_rule": {"name": 10_000}})
    results = tmp_path / "results.json"
    assert engines.scale_check(p, results) is None  # no results.json
    results.write_text(json.dumps([
        {"date": "2026-11-22", "people": 1_000_000, "contact_records": 100_000, "comparisons": 2_000_000},
        {"date": "2026-12-03", "people": 1_000_000, "contact_records": 100_000, "comparisons": 3_000_000},
        {"date": "2026-12-04", "people": 5_000, "contact_records": 8_000, "comparisons": 9_000},  # smaller
    ]))

    check = engines.scale_check(p, results)

    # k 2: 10,000 comparisons x 10^2 at 100,000 records; the 2026-12-03 run counted 3x that.
    assert check == {"date": "2026-12-03", "people": 1_000_000, "records": 100_000, "measured": 3_000_000,
                     "projected": 1_000_000, "measured_over_projected": 3.0}


def _engines_run(people: int, f1: float, differing: int, training: bool = True) -> dict:
    resolve = {"contact_records": 18_000, "comparisons": 25_000, "truth_f1": 0.9811}
    rules = [
        {"rule": "email", "comparisons_sample": 40, "comparisons": 400, "exponent": 1.0, "projected": 2_222_222},
        {"rule": "first_name_key+postcode", "comparisons_sample": 10, "comparisons": 1_000, "exponent": 2.0,
         "projected": 30_864_197_531},
        {"rule": "rare", "comparisons_sample": 0, "comparisons": 3, "exponent": None, "projected": None},
    ]
    return {
        "date": "2026-12-05", "machine": "x86_64, 2 cores, 24 GB, Linux", "people": people, "days": 14,
        "duckdb": {**resolve, "seconds": 2.5, "tree_peak_rss_mb": 400},
        "spark": {**resolve, "seconds": 31.25, "session_seconds": 6.5, "tree_peak_rss_mb": 2_345, "truth_f1": None},
        "spark_vs_duckdb": {"f1": f1, "records_id_differs": differing, "scored_pairs_both": 9_000,
                            "scored_pairs_only_spark": 2, "scored_pairs_only_duckdb": 1, "scored_pairs_moved": 13,
                            "scored_pairs_across_threshold": 2, "max_probability_difference": 0.69869},
        "training": {"spark": {"seconds": 95.0}, "duckdb": {"seconds": 7.25}} if training else None,
        "projection": {"target_records": 100_000_000, "records_sample": 1_800, "records": 18_000,
                       "comparisons_sample": 50, "comparisons": 1_403, "rules": rules,
                       "projected_total": 30_866_419_753, "unfitted": 1, "exponent_total": 1.45,
                       "people": people, "people_sample": people // 10, "sample_share": 0.1,
                       "check": {"date": "2026-12-03", "people": 1_000_000, "records": 1_561_723,
                                 "measured": 67_378_524, "projected": 38_732_919, "measured_over_projected": 1.74}},
        "max_comparisons": 200_000_000,
    }


def test_the_engines_section_is_appended_then_rewritten_and_leaves_the_others_alone(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"# Benchmarks\n\nHand-written.\n\n{report.START}\nresults table\n{report.END}\n\n"
                    f"{incremental.START_MARK}\nincremental table\n{incremental.END_MARK}\n\nFindings.\n")
    original = page.read_text()

    engines.write_section([_engines_run(2_000, 0.99876, 5, training=False)], tmp_path)
    appended = page.read_text()
    engines.write_section([_engines_run(2_000, 0.99876, 5, training=False), _engines_run(100_000, 1.0, 0)],
                          tmp_path)

    text = page.read_text()
    # Appended after everything there was, then rewritten in place.
    assert appended.startswith(original.rstrip("\n") + "\n\n" + engines.START_MARK)
    assert text.startswith(original.rstrip("\n") + "\n\n" + engines.START_MARK) and text.endswith("\n")
    assert text.count(engines.START_MARK) == 1 and text.count(engines.END_MARK) == 1
    assert "results table" in text and "incremental table" in text and "Findings." in text
    rows = [line for line in text.splitlines() if line.startswith(("| 1 | 2026-12-05", "| 2 | 2026-12-05"))]
    assert rows[0] == ("| 1 | 2026-12-05 | 2,000 | 18,000 | 25,000 | 2.5 / 31.2 (+ 6.5) | 400 / 2,345 | – | 0.99876"
                       " | 5 | 9,000 (3); 13, 2; 0.7 | 0.9811 / – |")
    assert "| 100,000 | 18,000 | 25,000 | 2.5 / 31.2 (+ 6.5) | 400 / 2,345 | 95.0 / 7.2 | 1.00000 | 0 |" in rows[1]
    assert "Machine: x86_64, 2 cores, 24 GB, Linux." in text
    # The projection is the latest run's, its rules largest first, the unfitted one shown as such.
    assert "### Blocking at 100,000,000 contact records (run #2, 2026-12-05, 100,000 people)" in text
    table = [line for line in text.splitlines() if line.startswith(("| email", "| first_name", "| rare", "| **"))]
    assert table == [
        "| first_name_key+postcode | 1,000 | 2.00 | 30,864,197,531 |",
        "| email | 400 | 1.00 | 2,222,222 |",
        "| rare | 3 | – | – |",
        "| **total** (1 rule(s) without comparisons in the sample left out) | 1,403 | 1.45 | 30,866,419,753 |",
    ]
    flat = " ".join(text.split())  # the paragraphs are wrapped
    assert "10% of the people (10,000 people, 1,800 records)" in flat
    assert ("this fit gives 38,732,919 comparisons at 1,561,723 contact records, where `make bench` counted"
            " 67,378,524 (1,000,000 people, 2026-12-03, the blocking rules of that day): 1.74x the fit.") in flat


def test_engines_compare_customers_pairwise_and_scored_pairs_by_probability():
    conn = duckdb.connect()
    # Records a..e. DuckDB: {a, b, c} C1, {d} C2, {e} C3. Spark: {a, b} C1, {c, d} C2, {e} C3.
    xrefs = {
        "ws": [("a", "C1"), ("b", "C1"), ("c", "C2"), ("d", "C2"), ("e", "C3")],
        "wd": [("a", "C1"), ("b", "C1"), ("c", "C1"), ("d", "C2"), ("e", "C3")],
    }
    pairs = {
        "ws": [(1, 2, 0.99), (3, 4, 0.97), (1, 3, 0.5)],
        "wd": [(1, 2, 0.99), (3, 4, 0.40), (1, 3, 0.96), (2, 3, 0.96)],
    }
    for name in ("ws", "wd"):
        conn.execute(f"ATTACH ':memory:' AS {name}")
        conn.execute(f"CREATE SCHEMA {name}.identity")
        conn.execute(f"CREATE TABLE {name}.identity.customer_xref (source_name VARCHAR,"
                     " source_record_id VARCHAR, customer_id VARCHAR)")
        conn.executemany(f"INSERT INTO {name}.identity.customer_xref VALUES ('crm', ?, ?)", xrefs[name])
        conn.execute(f"CREATE TABLE {name}.identity.scored_pairs (record_id_l BIGINT, record_id_r BIGINT,"
                     " match_probability DOUBLE)")
        conn.executemany(f"INSERT INTO {name}.identity.scored_pairs VALUES (?, ?, ?)", pairs[name])
        conn.execute(f"CREATE TABLE {name}.identity.graph_nodes AS SELECT range + 1 AS record_id,"
                     " 'crm' AS source_name, chr(97 + range::INT) AS source_record_id FROM range(5)")
    conn.execute("UPDATE ws.identity.graph_nodes SET source_record_id = 'z' WHERE record_id = 5")

    same = engines.compare(conn, "ws", "wd", threshold=0.95)

    # Pairs: Spark ab cd (2), DuckDB ab ac bc (3), both ab (1).
    assert (same["pairs_spark"], same["pairs_duckdb"], same["pairs_both"]) == (2, 3, 1)
    assert (same["precision"], same["recall"], same["f1"]) == (0.5, round(1 / 3, 6), 0.4)
    assert same["records_id_differs"] == 1  # c: C2 against C1
    assert (same["scored_pairs_both"], same["scored_pairs_only_spark"], same["scored_pairs_only_duckdb"]) == (3, 0, 1)
    # (3, 4) 0.97 against 0.40 and (1, 3) 0.5 against 0.96 moved, both across 0.95; (1, 2) did not.
    assert (same["scored_pairs_moved"], same["scored_pairs_across_threshold"]) == (2, 2)
    assert same["max_probability_difference"] == pytest.approx(0.57)
    assert same["record_ids_differ"] == 1
