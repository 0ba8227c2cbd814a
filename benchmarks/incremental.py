"""`make bench SCALE=N INCREMENTAL=1`: one incremental identity night beside a full re-link.

    .venv/bin/python benchmarks/bench.py --incremental --people 20000 [--days 14] [--nights 1] [--keep]
    .venv/bin/python benchmarks/incremental.py --people 20000          # the same, directly

1. Generates N demo people over D days and runs the real pipeline (`cdm run`) on days 1..D-1
   (with ``--nights K``: days 1..D-K in one run, then each later day as its own nightly run).
   The warehouse after night D-1 is copied: W13, the identity state the last night starts from.
2. `cdm run` for day D, the real nightly run, whose identity step runs incrementally: its step
   seconds from the Dagster event log, its mode and change counts from
   ``identity.resolution_runs``. The warehouse after it is W14.
3. Side by side on identical input: W14' is W14 with every ``identity.*`` table put back as it
   was in W13 (staging has day D, identity has not seen it). On a copy of W14' each, one child
   process runs ``resolve_identities`` incrementally, another with ``full=True``: seconds per
   phase, peak memory, comparisons, mode and changes.
4. Equality: the incremental child's customers against the full child's (pairwise precision,
   recall and F1 over the records both hold, records whose customer id differs, and customers
   night D did not touch whose id differs); the same for the pipeline's own W14.
5. Appends the run to ``benchmarks/incremental.json`` and rewrites its section of
   ``benchmarks/RESULTS.md`` (between the ``incremental`` markers; report.py's section is left
   alone, as report.py leaves this one).

Scratch data lives in ``benchmarks/scratch/incremental_<N>/`` (git-ignored; removed unless --keep).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "incremental.json"
START_MARK = "<!-- incremental:start (written by benchmarks/incremental.py) -->"
END_MARK = "<!-- incremental:end -->"
RUN_COLUMNS = (
    "mode", "mode_reason", "changed_records", "removed_records", "reclustered_records", "comparisons",
    "records", "pairwise_f1",
)
NIGHTS_HELP = "the last K days each run as a nightly `cdm run` of their own (default 1: the last day only)"
# The targets at 1,000,000 people.
MAX_SECONDS_RATIO = 0.10
MIN_F1 = 0.999


# --- child processes: one resolution each --------------------------------------------------------


def _child(kind: str, config_path: str, warehouse: str) -> None:
    """``resolve_identities`` (incremental or full) on ``warehouse``; prints its figures as JSON."""
    import logging

    import duckdb

    from cdm_pipeline.config import load_config
    from cdm_pipeline.lib.identity.evaluation import evaluate_clusters
    from cdm_pipeline.lib.identity.resolve import resolve_identities
    from cdm_pipeline.lib.warehouse import prepare_connection

    logging.basicConfig(level=logging.WARNING)
    config = load_config(config_path)
    # The pipeline's model file (read, never retrained: it exists). No truth file inside the
    # timed stage: production has no labels; the children are scored after the clock stops.
    truth = config.identity.truth_path
    identity = config.identity.model_copy(update={"truth_path": None})
    config = config.model_copy(update={"warehouse": Path(warehouse), "identity": identity})
    conn = duckdb.connect(warehouse, config=config.duckdb.connection_settings())
    prepare_connection(conn)
    summary = resolve_identities(conn, config, f"bench-{kind}", full=kind == "full")
    changes = summary.changes
    figures = {
        "mode": summary.mode.name,
        "mode_reason": summary.mode.reason,
        "changes": None if changes is None else {
            "changed": changes.changed, "rescored": changes.rescored, "removed": changes.removed,
            "scope": changes.scope,
        },
        "records": summary.records.total,
        "comparisons": summary.matching.comparisons,
        "clusters": summary.clusters.clusters,
        "seconds": round(summary.seconds["total"], 2),
        "phases": {k: round(v, 2) for k, v in summary.seconds.items()},
        # The high-water mark of this process, exact (the sampler below can miss a short peak).
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "truth_f1": round(evaluate_clusters(conn, truth).f1, 5) if truth and truth.exists() else None,
    }
    conn.close()
    print(json.dumps(figures))


def measure(kind: str, config: Path, source: Path, scratch: Path) -> tuple[dict, Path]:
    """One child on its own copy of ``source``; returns its figures and the copy (for comparing)."""
    from benchmarks.bench import TreeMemory

    copy = scratch / f"{kind}.duckdb"
    copy_warehouse(source, copy)
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", kind, str(config), str(copy)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Sampled over the child's process tree as bench.py samples `cdm run`'s.
    with TreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{kind} resolution failed ({process.returncode}):\n{stderr[-4000:]}")
    figures = json.loads(stdout.strip().splitlines()[-1])
    figures["tree_peak_rss_mb"] = round(memory.peak_bytes / 2**20)
    figures["peak_rss_mb"] = max(figures["tree_peak_rss_mb"], figures["self_peak_rss_mb"])
    return figures, copy


# --- warehouses --------------------------------------------------------------------------------------


def copy_warehouse(source: Path, target: Path) -> None:
    """The file and its WAL, if any (a WAL left at the target would be replayed onto the copy)."""
    for suffix in ("", ".wal"):
        src, dst = Path(f"{source}{suffix}"), Path(f"{target}{suffix}")
        dst.unlink(missing_ok=True)
        if src.exists():
            shutil.copyfile(src, dst)
            shutil.copymode(src, dst)  # the warehouse is owner-only: its copies too


def with_identity_of(warehouse: Path, earlier: Path) -> None:
    """Put every ``identity.*`` table of ``warehouse`` back as it is in ``earlier``.

    Each table is re-created from ``earlier``'s own DDL (keeping its primary key, which a
    CREATE TABLE AS would drop) and filled from it; tables ``earlier`` lacks are dropped.
    """
    import duckdb

    conn = duckdb.connect(str(warehouse))
    try:
        conn.execute(f"ATTACH '{earlier}' AS earlier (READ_ONLY)")
        tables = "SELECT table_name, sql FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'identity'"
        theirs = dict(conn.execute(tables, ["earlier"]).fetchall())
        (ours,) = conn.execute("SELECT current_database()").fetchone()
        for name, _ in conn.execute(tables, [ours]).fetchall():
            conn.execute(f'DROP TABLE identity."{name}"')
        for name, ddl in theirs.items():
            conn.execute(ddl)  # "CREATE TABLE identity.x(...)": into the default catalog, ours
            conn.execute(f'INSERT INTO identity."{name}" SELECT * FROM earlier.identity."{name}"')
        conn.execute("DETACH earlier")
        conn.execute("CHECKPOINT")
    finally:
        conn.close()


def last_resolution(warehouse: Path) -> dict:
    """The last row of identity.resolution_runs: what the warehouse's last identity step did."""
    import duckdb

    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        cursor = conn.execute(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM identity.resolution_runs ORDER BY resolved_at DESC LIMIT 1"
        )
        return dict(zip(RUN_COLUMNS, cursor.fetchone(), strict=True))
    finally:
        conn.close()


def compare(conn, incremental: str, full: str, before: str) -> dict:
    """Customers of ``incremental`` against ``full`` (the reference), catalogs attached to ``conn``.

    Pairwise over the records both hold: precision is the share of the incremental clustering's
    same-customer pairs the full one has too, recall the reverse. ``before`` (the warehouse the
    night started from) says which customers the night left alone: the same records under the
    same id before and after it; none of those may have another id in the full re-link.
    """
    xref = "SELECT source_name, source_record_id, customer_id FROM {}.identity.customer_xref"
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _inc AS {xref.format(incremental)}")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _full AS {xref.format(full)}")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _before AS {xref.format(before)}")
    records, only_incremental, only_full, differing, new_differing, pairs_inc, pairs_full, pairs_both = conn.execute(
        """WITH both_ AS (
            SELECT i.customer_id AS ci, f.customer_id AS cf,
                b.source_name IS NULL AS new FROM _inc i JOIN _full f USING (source_name, source_record_id)
            LEFT JOIN _before b USING (source_name, source_record_id)
        ), pairs AS (
            SELECT (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM
                        (SELECT count(*) AS n FROM both_ GROUP BY ci)) AS inc,
                   (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM
                        (SELECT count(*) AS n FROM both_ GROUP BY cf)) AS ful,
                   (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM
                        (SELECT count(*) AS n FROM both_ GROUP BY ci, cf)) AS bot
        )
        SELECT (SELECT count(*) FROM both_),
            (SELECT count(*) FROM _inc ANTI JOIN _full USING (source_name, source_record_id)),
            (SELECT count(*) FROM _full ANTI JOIN _inc USING (source_name, source_record_id)),
            (SELECT count(*) FROM both_ WHERE ci <> cf),
            (SELECT count(*) FROM both_ WHERE ci <> cf AND new),
            inc, ful, bot
        FROM pairs"""
    ).fetchone()
    # A customer's record set as a count and an order-free hash of its records' keys.
    unchanged, unchanged_differing = conn.execute(
        """WITH sets_inc AS (
            SELECT customer_id, count(*) AS n, bit_xor(hash(source_name, source_record_id)) AS h
            FROM _inc GROUP BY customer_id
        ), sets_before AS (
            SELECT customer_id, count(*) AS n, bit_xor(hash(source_name, source_record_id)) AS h
            FROM _before GROUP BY customer_id
        ), unchanged AS (SELECT customer_id FROM sets_inc JOIN sets_before USING (customer_id, n, h))
        SELECT count(*), count(*) FILTER (WHERE differs) FROM (
            SELECT i.customer_id, bool_or(f.customer_id IS DISTINCT FROM i.customer_id) AS differs
            FROM _inc i LEFT JOIN _full f USING (source_name, source_record_id)
            WHERE i.customer_id IN (SELECT customer_id FROM unchanged)
            GROUP BY i.customer_id
        )"""
    ).fetchone()
    precision = pairs_both / pairs_inc if pairs_inc else 1.0
    recall = pairs_both / pairs_full if pairs_full else 1.0
    f1 = 2 * pairs_both / (pairs_inc + pairs_full) if pairs_inc + pairs_full else 1.0
    return {
        "records": records, "records_only_incremental": only_incremental, "records_only_full": only_full,
        "pairs_incremental": int(pairs_inc), "pairs_full": int(pairs_full), "pairs_both": int(pairs_both),
        "precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6),
        # New customers' ids are numbered in order after the highest id issued, so one more or one
        # fewer new id in one run shifts the ids of the new customers after it: counted apart.
        "records_id_differs": differing, "new_records_id_differs": new_differing,
        "unchanged_customers": unchanged, "unchanged_customers_id_differs": unchanged_differing,
    }


def compare_files(pairs: dict[str, tuple[Path, Path]], before: Path) -> dict[str, dict]:
    """``compare`` for each name -> (incremental warehouse, full warehouse), all opened read-only."""
    import duckdb

    conn = duckdb.connect()
    try:
        paths = {before} | {p for pair in pairs.values() for p in pair}
        alias = {path: f"w{n}" for n, path in enumerate(sorted(paths))}
        for path, name in alias.items():
            conn.execute(f"ATTACH '{path}' AS {name} (READ_ONLY)")
        return {
            key: compare(conn, alias[incremental], alias[full], alias[before])
            for key, (incremental, full) in pairs.items()
        }
    finally:
        conn.close()


# --- RESULTS.md -------------------------------------------------------------------------------------


def differing(same: dict) -> str:
    """Records with another id (of them new) / unchanged customers with another id."""
    return (f"{same['records_id_differs']:,} ({same['new_records_id_differs']:,} new)"
            f" / {same['unchanged_customers_id_differs']:,} of {same['unchanged_customers']:,}")


def results_section(runs: list[dict]) -> str:
    lines = [
        START_MARK, "", "## Incremental nights", "",
        "`make bench SCALE=N INCREMENTAL=1` (`benchmarks/incremental.py`): demo data for N people over",
        "14 days, `cdm run` on days 1-13 (one run: one full resolution, which trains the model), then",
        "day 14 as a nightly `cdm run` (its identity step incremental). Then, side by side on the same",
        "input (the warehouse after day 14 with its `identity.*` tables as they were after day 13),",
        "`resolve_identities` incremental and with `full=True`, each in its own process on its own",
        "copy. *changed*: records new or changed on day 14 (% of all identity records). Seconds: the",
        "identity stage's own, all phases. Peak RSS: that process's. *F1 vs full*: pairwise F1 of the",
        "incremental customers against the full re-link's. *ids differing*: records whose customer id",
        "differs (of them, records new on day 14: new ids are numbered in order, so one id more or",
        "fewer shifts the rest), then customers day 14 left alone (the same records under the same id",
        "before and after it) whose id differs. *pipeline night*: the real `cdm run` of day 14, its",
        "identity step seconds and mode, and the same comparison of its customers with the full",
        "re-link's.",
        "",
    ]
    head = (
        "| # | date | people | changed (% of records) | comparisons incr / full | identity s incr / full"
        " | peak RSS MB incr / full | F1 vs full | ids differing | pipeline night: identity s, F1 vs full,"
        " ids differing |"
    )
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for n, r in enumerate(runs, start=1):
        inc, full, night = r["incremental"], r["full"], r["night"]
        same, night_same = r["incremental_vs_full"], r["night_vs_full"]
        shape = "" if (r["days"], r["nights"]) == (14, 1) else f" ({r['days']} days, {r['nights']} night(s))"
        lines.append(
            f"| {n} | {r['date']} | {r['people']:,}{shape}"
            f" | {inc['changes']['changed']:,} ({r['changed_share']:.2%})"
            f" | {inc['comparisons']:,} / {full['comparisons']:,}"
            f" | {inc['seconds']:,.1f} / {full['seconds']:,.1f} ({r['seconds_ratio']:.3f})"
            f" | {inc['peak_rss_mb']:,} / {full['peak_rss_mb']:,}"
            f" | {same['f1']:.5f} | {differing(same)}"
            f" | {night['identity_seconds']:,.1f} s ({night['mode']}), {night_same['f1']:.5f},"
            f" {differing(night_same)} |"
        )
    lines += ["", f"Machine: {'; '.join(sorted({r['machine'] for r in runs}))}.", ""]
    latest = next((r for r in reversed(runs) if r["people"] >= 1_000_000), None)
    if latest:
        same = latest["incremental_vs_full"]
        targets = (
            ("incremental / full identity seconds", f"≤ {MAX_SECONDS_RATIO:.2f}", f"{latest['seconds_ratio']:.3f}",
             latest["seconds_ratio"] <= MAX_SECONDS_RATIO),
            ("peak RSS incremental vs full", f"≤ {latest['full']['peak_rss_mb']:,} MB",
             f"{latest['incremental']['peak_rss_mb']:,} MB",
             latest["incremental"]["peak_rss_mb"] <= latest["full"]["peak_rss_mb"]),
            ("pairwise F1 vs full", f"≥ {MIN_F1}", f"{same['f1']:.5f}", same["f1"] >= MIN_F1),
            ("unchanged customers with another id", "0", f"{same['unchanged_customers_id_differs']:,}",
             same["unchanged_customers_id_differs"] == 0),
        )
        lines += [f"### Targets at 1,000,000 people (run #{runs.index(latest) + 1}, {latest['date']})", "",
                  "| target | limit | measured | |", "| --- | --- | --- | --- |"]
        lines += [f"| {label} | {limit} | {value} | {'met' if met else 'MISSED'} |"
                  for label, limit, value, met in targets]
        lines.append("")
    lines.append(END_MARK)
    return "\n".join(lines)


def write_section(runs: list[dict], folder: Path = BENCH) -> Path:
    """Rewrite this benchmark's section of RESULTS.md (appended when missing); nothing else."""
    from benchmarks.report import replace_section

    return replace_section(folder / "RESULTS.md", START_MARK, END_MARK, results_section(runs))


# --- the run --------------------------------------------------------------------------------------


def run(people: int, days: int = 14, nights: int = 1, keep: bool = False, memory_limit: str | None = None,
        results: Path = RESULTS) -> dict:
    from benchmarks.bench import CDM, START, machine, run_pipeline, step_seconds, write_config
    from cdm_pipeline.config import load_config

    if not 1 <= nights < days:
        raise SystemExit(f"--nights must be at least 1 and less than --days ({days})")
    scratch = BENCH / "scratch" / f"incremental_{people}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    config_path = write_config(scratch, memory_limit)
    config = load_config(config_path)
    warehouse = config.warehouse
    dates = [START + dt.timedelta(days=n) for n in range(days)]
    print(f"incremental benchmark: {people:,} people x {days} days in {scratch}", flush=True)

    subprocess.run(
        [CDM, "generate-demo", "--people", str(people), "--days", str(days),
         "--out", str(config.landing_dir), "--start", dates[0].isoformat()],
        check=True, stdout=subprocess.DEVNULL,
    )
    # The history: one run over the first days, then (--nights > 1) nights of their own.
    first_nightly = days - nights
    seconds, _, _ = run_pipeline(config_path, dates[0], dates[first_nightly - 1])
    print(f"  cdm run {dates[0]} to {dates[first_nightly - 1]}: {seconds:.1f} s", flush=True)
    history = [last_resolution(warehouse)]
    for day in dates[first_nightly:-1]:
        seconds, _, _ = run_pipeline(config_path, day, day)
        history.append(last_resolution(warehouse))
        print(f"  cdm run {day}: {seconds:.1f} s, identity {history[-1]['mode']}", flush=True)
    w13 = scratch / "w13.duckdb"
    copy_warehouse(warehouse, w13)

    # The real night: `cdm run` of the last day (the same run as `cdm run --date`).
    night_seconds, night_peak, _ = run_pipeline(config_path, dates[-1], dates[-1])
    _, stages = step_seconds(scratch / ".dagster_home")
    night = {
        **last_resolution(warehouse), "date": dates[-1].isoformat(), "run_seconds": round(night_seconds, 1),
        "run_peak_rss_mb": round(night_peak / 2**20), "identity_seconds": stages["identity"],
    }
    print(f"  cdm run {dates[-1]}: {night_seconds:.1f} s, identity {night['identity_seconds']} s"
          f" ({night['mode']}: {night['mode_reason']}; {night['changed_records']:,} changed)", flush=True)
    if night["mode"] != "incremental":
        print("  warning: the pipeline's night ran a full resolution, not an incremental one", flush=True)

    # Side by side: day 14's staging with day 13's identity state, resolved both ways.
    w14_prime = scratch / "w14_prime.duckdb"
    copy_warehouse(warehouse, w14_prime)
    with_identity_of(w14_prime, w13)
    incremental, incremental_copy = measure("incremental", config_path, w14_prime, scratch)
    print(f"  incremental: {incremental['seconds']:.1f} s, peak {incremental['peak_rss_mb']:,} MB,"
          f" {incremental['comparisons']:,} comparisons, {incremental['phases']}", flush=True)
    if incremental["mode"] != "incremental":
        raise SystemExit(f"the incremental child ran a full resolution: {incremental['mode_reason']}")
    full, full_copy = measure("full", config_path, w14_prime, scratch)
    print(f"  full:        {full['seconds']:.1f} s, peak {full['peak_rss_mb']:,} MB,"
          f" {full['comparisons']:,} comparisons, {full['phases']}", flush=True)

    equal = compare_files({"incremental": (incremental_copy, full_copy), "night": (warehouse, full_copy)}, w13)
    result = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "people": people,
        "days": days,
        "nights": nights,
        "duckdb_memory_limit": config.duckdb.memory_limit or "default (80% of RAM)",
        "history": history,
        "night": night,
        "incremental": incremental,
        "full": full,
        "changed_share": round(incremental["changes"]["changed"] / incremental["records"], 5),
        "seconds_ratio": round(incremental["seconds"] / full["seconds"], 4),
        "incremental_vs_full": equal["incremental"],
        "night_vs_full": equal["night"],
    }
    runs = json.loads(results.read_text()) if results.exists() else []
    runs.append(result)
    results.write_text(json.dumps(runs, indent=2) + "\n")
    # RESULTS.md beside the results file: a trial run (--results elsewhere) leaves the page alone.
    page = write_section(runs, results.parent)
    for name, same in equal.items():
        print(f"  {name} vs full: F1 {same['f1']} (precision {same['precision']}, recall {same['recall']}),"
              f" {same['records_id_differs']:,} records with another id, {same['unchanged_customers_id_differs']:,}"
              f" of {same['unchanged_customers']:,} unchanged customers with another id", flush=True)
    print(f"  changed {result['changed_share']:.2%} of records; incremental/full seconds {result['seconds_ratio']}",
          flush=True)
    print(f"  results: {results} and {page}")
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--nights", type=int, default=1, help=NIGHTS_HELP)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--memory-limit", help="override cdm.yaml's duckdb.memory_limit, e.g. 8GB")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.people, args.days, args.nights, args.keep, args.memory_limit, args.results)


if __name__ == "__main__":
    main()
