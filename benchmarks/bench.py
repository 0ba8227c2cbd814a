"""`make bench [SCALE=N]`: the whole nightly pipeline on N demo people, beside the bare tools.

    .venv/bin/python benchmarks/bench.py --people 10000 [--days 14] [--keep]

1. Generates demo landing data for N people over 14 days (not timed as part of the pipeline).
2. Runs the pipeline through the CLI users use (`cdm run --from --to`, a fresh warehouse, the
   default multiprocess executor) while sampling the memory of its whole process tree.
3. Reads each step's wall time from the Dagster event log, and rows, comparisons, clusters and
   pairwise F1 (against the demo's ground truth) from the warehouse.
4. On the same data: a bare Splink 5 dedupe of the identical contact records with the identical
   settings (``benchmarks/identity.py``: train, predict, cluster), and a plain DuckDB load of the
   identical landing files (``benchmarks/scan.py``).
5. Appends the run to ``benchmarks/results.json`` and rewrites ``benchmarks/RESULTS.md`` and its
   chart (``benchmarks/report.py``).

Scratch data lives in ``benchmarks/scratch/bench_<N>/`` (git-ignored; removed unless --keep).

With ``--incremental`` (``make bench SCALE=N INCREMENTAL=1``) it runs the incremental-night
scenario instead: ``benchmarks/incremental.py``, results in ``benchmarks/incremental.json``.
With ``--engine spark`` (``make bench ENGINE=spark SCALE=N``) it runs the identity stage on DuckDB
beside Spark instead: ``benchmarks/engines.py``, results in ``benchmarks/engines.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results.json"
CDM = str(Path(sys.executable).with_name("cdm"))
START = dt.date(2026, 10, 1)

# Dagster step key prefix -> the stage it belongs to.
STAGES = (
    ("extract_", "extract"),
    ("stage_", "staging"),
    ("resolve_identities", "identity"),
    ("governance__privacy_requests", "privacy"),
    # Retention purges (erasing what is past its retention period) count as privacy work.
    ("governance__retention_purges", "privacy"),
    ("build_marts", "marts"),
    ("exports__", "exports"),
    ("write_reports", "reports"),
)


class TreeMemory:
    """Peak resident memory of a process and all its descendants, sampled every 0.1 s.

    Read from /proc (Linux), summing each process's RSS: the run process and its step
    subprocesses together, as the machine sees them.
    """

    def __init__(self, pid: int):
        self.pid = pid
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._page = os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self._tree_rss())
            self._stop.wait(0.1)

    def _tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        total, stack = 0, [self.pid]
        while stack:
            pid = stack.pop()
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * self._page
            except (OSError, IndexError, ValueError):
                pass
            stack.extend(children.get(pid, []))
        return total


def write_config(scratch: Path, memory_limit: str | None = None) -> Path:
    """The project's cdm.yaml with every path pointing into the scratch folder."""
    import yaml

    text = (ROOT / "cdm.yaml").read_text(encoding="utf-8").replace("data/", f"{scratch}/data/")
    document = yaml.safe_load(text)
    if memory_limit:
        document.setdefault("duckdb", {})["memory_limit"] = memory_limit
    path = scratch / "cdm.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def run_pipeline(config: Path, first: dt.date, last: dt.date) -> tuple[float, int, str]:
    """`cdm run` over the range; returns (seconds, peak RSS of its process tree in bytes, stdout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CDM_CONFIG")}
    started = time.monotonic()
    process = subprocess.Popen(
        [CDM, "run", "--config", str(config), "--from", first.isoformat(), "--to", last.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    with TreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"cdm run failed ({process.returncode}):\n{stdout}\n{stderr[-3000:]}")
    return seconds, memory.peak_bytes, stdout


def step_seconds(home: Path) -> tuple[str, dict[str, float]]:
    """The latest run's id and wall seconds per stage (STEP_START to STEP_SUCCESS, summed)."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_runs(limit=1)[0]
        records = instance.all_logs(
            run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
        )
    spans: dict[str, list[float]] = {}
    for record in records:
        spans.setdefault(record.step_key, []).append(record.timestamp)
    stages = {name: 0.0 for _, name in STAGES}
    for step, stamps in spans.items():
        stage = next(name for prefix, name in STAGES if step.startswith(prefix))
        stages[stage] += max(stamps) - min(stamps)
    return run.run_id, {k: round(v, 2) for k, v in stages.items()}


def warehouse_figures(warehouse: Path, run_id: str) -> dict:
    import duckdb

    conn = duckdb.connect(str(warehouse), read_only=True)
    try:
        def count(sql: str) -> int:
            return int(conn.execute(sql).fetchall()[0][0])

        def schema_rows(schema: str, like: str = "%") -> int:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? AND table_name LIKE ?",
                [schema, like],
            ).fetchall()
            return sum(count(f'SELECT count(*) FROM "{schema}"."{t}"') for (t,) in tables)

        cursor = conn.execute("SELECT * FROM identity.resolution_runs WHERE run_id = ?", [run_id])
        identity = dict(zip([d[0] for d in cursor.description], cursor.fetchall()[0], strict=True))
        return {
            "rows": {
                "raw": schema_rows("raw"),
                "rejected_lines": schema_rows("quarantine", "%_rejects"),
                "staging": schema_rows("staging"),
                "quarantined": schema_rows("quarantine") - schema_rows("quarantine", "%_rejects"),
                "identity_records": identity["records"],
                "customers": identity["customers"],
                "journey_events": count("SELECT count(*) FROM marts.customer_journey_events"),
                "customer_360": count("SELECT count(*) FROM marts.customer_360"),
            },
            "contact_records": identity["contact_records"],
            "comparisons": identity["comparisons"],
            "match_edges": identity["match_edges"],
            "clusters": identity["clusters"],
            "pairwise_precision": round(identity["pairwise_precision"], 5),
            "pairwise_recall": round(identity["pairwise_recall"], 5),
            "pairwise_f1": round(identity["pairwise_f1"], 5),
        }
    finally:
        conn.close()


def machine() -> str:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GB, {platform.system()}"


def main() -> None:
    from benchmarks import engines, incremental

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--memory-limit", help="override cdm.yaml's duckdb.memory_limit, e.g. 8GB")
    parser.add_argument(
        "--results", type=Path,
        help=f"default {RESULTS.name} ({incremental.RESULTS.name} with --incremental,"
        f" {engines.RESULTS.name} with --engine spark)",
    )
    parser.add_argument(
        "--incremental", action="store_true",
        help="instead: an incremental identity night beside a full re-link (benchmarks/incremental.py)",
    )
    parser.add_argument("--nights", type=int, default=1, help="with --incremental: " + incremental.NIGHTS_HELP)
    parser.add_argument(
        "--engine", choices=("duckdb", "spark"), default="duckdb",
        help="spark: instead, the identity stage on DuckDB beside Spark (benchmarks/engines.py)",
    )
    parser.add_argument("--no-train", dest="train", action="store_false",
                        help="with --engine spark: skip timing the model training on each engine")
    args = parser.parse_args()
    if args.engine == "spark":
        if args.incremental:
            parser.error("--incremental and --engine spark are separate benchmarks: run one at a time")
        engines.run(args.people, args.days, args.train, args.keep, args.memory_limit, args.results or engines.RESULTS)
        return
    if args.incremental:
        incremental.run(args.people, args.days, args.nights, args.keep, args.memory_limit,
                        args.results or incremental.RESULTS)
        return
    args.results = args.results or RESULTS

    from benchmarks import identity as identity_bench
    from benchmarks import report
    from benchmarks import scan as scan_bench

    scratch = BENCH / "scratch" / f"bench_{args.people}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    config_path = write_config(scratch, args.memory_limit)
    from cdm_pipeline.config import load_config

    config = load_config(config_path)
    first, last = START, START + dt.timedelta(days=args.days - 1)

    print(f"benchmark: {args.people:,} people x {args.days} days in {scratch}", flush=True)
    mark = time.monotonic()
    subprocess.run(
        [CDM, "generate-demo", "--people", str(args.people), "--days", str(args.days),
         "--out", str(config.landing_dir), "--start", first.isoformat()],
        check=True, stdout=subprocess.DEVNULL,
    )
    generate_seconds = time.monotonic() - mark
    print(f"  generated landing data in {generate_seconds:.1f} s", flush=True)

    total, peak, stdout = run_pipeline(config_path, first, last)
    run_id, stages = step_seconds(scratch / ".dagster_home")
    stages["orchestration"] = round(total - sum(stages.values()), 2)
    figures = warehouse_figures(config.warehouse, run_id)
    print(f"  cdm run: {total:.1f} s, peak RSS {peak / 2**20:,.0f} MB; stages {stages}", flush=True)

    scan = scan_bench.plain_scan(config, first, last, scratch / "scan.duckdb")
    print(f"  plain DuckDB scan of the landing files: {scan['seconds']:.1f} s ({scan['rows']:,} rows)", flush=True)
    identity_bench.SCRATCH = scratch / "identity"
    identity_bench.SCRATCH.mkdir(parents=True, exist_ok=True)
    bare = identity_bench.measure("bare_splink", config_path, config.warehouse, config.identity.model_path)
    print(f"  bare Splink dedupe: {bare['seconds']:.1f} s ({bare['contact_records']:,} records)", flush=True)

    result = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "people": args.people,
        "days": args.days,
        # The limit the run had: cdm.yaml's (or --memory-limit), else DuckDB's own default.
        "duckdb_memory_limit": config.duckdb.memory_limit or "default (80% of RAM)",
        "total_seconds": round(total, 1),
        "peak_rss_mb": round(peak / 2**20),
        "stage_seconds": stages,
        **figures,
        "bare_splink_seconds": bare["seconds"],
        "bare_splink_peak_rss_mb": bare["peak_rss_mb"],
        "plain_scan_seconds": scan["seconds"],
        "plain_scan_rows": scan["rows"],
        "identity_vs_bare_splink_ratio": round(stages["identity"] / bare["seconds"], 3),
        "extract_vs_scan_ratio": round(stages["extract"] / scan["seconds"], 3),
        "generate_seconds": round(generate_seconds, 1),
    }
    runs = json.loads(args.results.read_text()) if args.results.exists() else []
    runs.append(result)
    args.results.write_text(json.dumps(runs, indent=2) + "\n")
    # RESULTS.md beside the results file: a trial run (--results elsewhere) leaves the page alone.
    report.write_report(runs, args.results.parent)
    print(
        f"  total {result['total_seconds']} s, peak {result['peak_rss_mb']:,} MB,"
        f" identity/bare Splink {result['identity_vs_bare_splink_ratio']},"
        f" extract/scan {result['extract_vs_scan_ratio']}, pairwise F1 {result['pairwise_f1']}",
        flush=True,
    )
    print(f"  results: {args.results} and {args.results.parent / 'RESULTS.md'}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
