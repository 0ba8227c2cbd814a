"""Staging + quality gate vs staging alone, for the contacts of N demo people.

    .venv/bin/python benchmarks/staging_quality.py --people 1000000 [--landing DIR]

Loads raw contacts (CRM + email subscribers) for 14 days into a scratch warehouse (not timed),
then times, on the same data:
  A. the staging SQL alone (standardisers included): `stage_partition` for every partition;
  B. the quality gate that runs after it in the pipeline: conservation counts, loading the
     suite's columns into pandas, the GX suite, governance.quality_results, Data Docs.
The issue's target is (A + B) / A <= 2. Results are appended to benchmarks/staging_quality.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdm_pipeline.config import load_config  # noqa: E402
from cdm_pipeline.lib.demo import generate_demo  # noqa: E402
from cdm_pipeline.lib.extract import load_partition  # noqa: E402
from cdm_pipeline.lib.staging.build import stage_partition  # noqa: E402
from cdm_pipeline.lib.staging.gate import check_staging  # noqa: E402
from cdm_pipeline.lib.standardise import duckdb_functions  # noqa: E402
from cdm_pipeline.lib.warehouse import connect  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--landing", type=Path, help="existing demo landing folder to reuse")
    parser.add_argument("--scratch", type=Path, default=ROOT / "benchmarks" / "scratch")
    args = parser.parse_args()

    scratch = args.scratch / f"staging_{args.people}"
    shutil.rmtree(scratch / "wh", ignore_errors=True)
    shutil.rmtree(scratch / "reports", ignore_errors=True)
    scratch.mkdir(parents=True, exist_ok=True)
    landing = args.landing or scratch / "landing"
    if args.landing is None:
        generate_demo(landing, people=args.people, days=args.days, seed=42)
    config_text = (ROOT / "cdm.yaml").read_text().replace("data/warehouse/", "wh/")
    config_text = config_text.replace("landing_dir: data/landing", f"landing_dir: {landing}")
    config_text = config_text.replace("reports_dir: data/reports", "reports_dir: reports")
    (scratch / "cdm.yaml").write_text(config_text)
    config = load_config(scratch / "cdm.yaml")
    dates = [config.start_date + dt.timedelta(days=i) for i in range(args.days)]

    conn = connect(config.warehouse)
    loaded_at = dt.datetime.now(dt.timezone.utc)
    for source in config.sources_of_kind("contacts"):
        for day in dates:
            load_partition(conn, source, config.landing_dir, day, loaded_at)
    raw_rows = sum(
        conn.execute(f"SELECT count(*) FROM raw.{s.name}").fetchone()[0] for s in config.sources_of_kind("contacts")
    )

    duckdb_functions.clear_caches()  # the standardisers start cold, as in a fresh step process
    started = time.perf_counter()
    for day in dates:
        stage_partition(conn, config, "contacts", day)
    staging_seconds = time.perf_counter() - started

    started = time.perf_counter()
    gate = check_staging(conn, config, "contacts", dates, run_id="benchmark-" + loaded_at.strftime("%H%M%S"))
    gate_seconds = time.perf_counter() - started
    conn.close()

    run = {
        "date": loaded_at.isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "people": args.people,
        "raw_contact_rows": raw_rows,
        "staging_seconds": round(staging_seconds, 2),
        "quality_gate_seconds": round(gate_seconds, 2),
        "ratio_staging_plus_quality_vs_staging": round((staging_seconds + gate_seconds) / staging_seconds, 2),
        "critical_passed": all(o.success for o in gate.outcomes if o.severity == "critical") and gate.conserved,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(run, indent=2))
    results = ROOT / "benchmarks" / "staging_quality.json"
    history = json.loads(results.read_text()) if results.exists() else []
    history.append(run)
    results.write_text(json.dumps(history, indent=2) + "\n")


if __name__ == "__main__":
    main()
