"""Identity stage vs a bare Splink dedupe of the same records with the same settings.

Usage (after `cdm run` has staged the data in the config's warehouse):

    .venv/bin/python benchmarks/identity.py --config path/to/cdm.yaml [--out benchmarks/identity.json]

Each measurement runs in its own process on its own copy of the warehouse (so peak memory is
per measurement, and nothing is cached between them):

* ``ours_first_run``   — ``resolve_identities`` with no model: inputs, training, prediction,
  clustering, stable ids, golden records, publication in one transaction;
* ``ours_nightly``     — the same with the model from the first run (what every later night does);
* ``bare_splink``      — Splink alone on the identical contact records (``identity_work.splink_input``)
  and the identical settings: prior, u, EM, predict at the same threshold, connected components;
* ``bare_splink_predict`` — the bare predict + cluster with the trained model.

Ratios: first run / bare train+predict+cluster (like for like, both train), nightly / bare
train+predict+cluster (a night's stage against a bare dedupe), nightly / bare predict+cluster.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "benchmarks" / "scratch"


def _child(kind: str, config_path: str, warehouse: str, model_path: str) -> None:
    """One measurement, in this process; prints a JSON line with its figures."""
    import logging

    import duckdb

    from cdm_pipeline.config import load_config
    from cdm_pipeline.lib.warehouse import prepare_connection

    logging.basicConfig(level=logging.WARNING)
    config = load_config(config_path)
    identity = config.identity.model_copy(update={"model_path": Path(model_path), "truth_path": None})
    config = config.model_copy(update={"warehouse": Path(warehouse), "identity": identity})
    # The same connection settings (memory limit, threads) as the pipeline's steps.
    conn = duckdb.connect(warehouse, config=config.duckdb.connection_settings())
    prepare_connection(conn)
    started = time.monotonic()
    figures: dict = {}
    if kind.startswith("ours"):
        from cdm_pipeline.lib.identity.resolve import resolve_identities

        summary = resolve_identities(conn, config, f"bench-{kind}")
        figures = {
            "records": summary.records.total,
            "contact_records": summary.records.contacts,
            "comparisons": summary.matching.comparisons,
            "match_edges": summary.matching.edges,
            "clusters": summary.clusters.clusters,
            "phases": {k: round(v, 2) for k, v in summary.seconds.items()},
        }
    else:
        from splink import Linker
        from splink.clustering import cluster_pairwise_predictions_at_threshold

        from cdm_pipeline.config import EngineConfig
        from cdm_pipeline.lib.identity.deterministic import SPLINK_INPUT, build_deterministic_edges
        from cdm_pipeline.lib.identity.engine import linkage_engine
        from cdm_pipeline.lib.identity.model import UNIQUE_ID, load_model, train_model
        from cdm_pipeline.lib.identity.records import build_identity_records

        # The stage's inputs live in its in-memory work area: built again here, before the clock
        # starts, so the bare run reads the identical records.
        build_identity_records(conn)
        build_deterministic_edges(conn, config)
        started = time.monotonic()
        model = load_model(Path(model_path))
        (count,) = conn.execute(f"SELECT count(*) FROM {SPLINK_INPUT}").fetchall()[0]
        with linkage_engine(conn, EngineConfig()) as engine:
            db_api = engine.db_api
            if kind == "bare_splink":
                mark = time.monotonic()
                model = train_model(
                    engine, SPLINK_INPUT, int(count), model.columns,
                    u_pairs=identity.u_sample_pairs, seed=identity.seed, version=0,
                )
                figures["train_seconds"] = round(time.monotonic() - mark, 2)
            records = db_api.register(conn.table(SPLINK_INPUT), dataset_display_name="bare_records")
            linker = Linker(records, model.settings, log_level=logging.WARNING)
            mark = time.monotonic()
            predictions = linker.inference.predict(threshold_match_probability=identity.match_threshold)
            figures["predict_seconds"] = round(time.monotonic() - mark, 2)
            mark = time.monotonic()
            clusters = cluster_pairwise_predictions_at_threshold(
                records, predictions, db_api, UNIQUE_ID,
                threshold_match_probability=identity.match_threshold,
            )
            (n_clusters,) = conn.execute(
                f"SELECT count(DISTINCT cluster_id) FROM {clusters.physical_name}"
            ).fetchall()[0]
            figures["cluster_seconds"] = round(time.monotonic() - mark, 2)
            figures.update({"contact_records": int(count), "clusters": int(n_clusters)})
    figures["seconds"] = round(time.monotonic() - started, 2)
    conn.close()
    figures["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(figures))


def measure(kind: str, config: Path, source_warehouse: Path, model_path: Path) -> dict:
    copy = SCRATCH / f"{kind}.duckdb"
    # A WAL left by an interrupted earlier run would be replayed onto the fresh copy.
    copy.with_name(copy.name + ".wal").unlink(missing_ok=True)
    shutil.copyfile(source_warehouse, copy)
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(config), str(copy), str(model_path)],
        capture_output=True, text=True, check=False,
    )
    copy.unlink(missing_ok=True)
    copy.with_name(copy.name + ".wal").unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{kind:22} {figures['seconds']:8.1f} s  peak {figures['peak_rss_mb']:6,} MB", flush=True)
    return figures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "identity.json")
    args = parser.parse_args()

    from cdm_pipeline.config import load_config

    config = load_config(args.config)
    SCRATCH.mkdir(parents=True, exist_ok=True)
    model = SCRATCH / "bench_model.json"
    for old in SCRATCH.glob("bench_model*.json"):
        old.unlink()
    ours_first = measure("ours_first_run", args.config, config.warehouse, model)
    ours_nightly = measure("ours_nightly", args.config, config.warehouse, model)
    bare = measure("bare_splink", args.config, config.warehouse, model)
    bare_predict = measure("bare_splink_predict", args.config, config.warehouse, model)
    result = {
        "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.system()}",
        "contact_records": bare["contact_records"],
        "ours_first_run": ours_first,
        "ours_nightly": ours_nightly,
        "bare_splink": bare,
        "bare_splink_predict": bare_predict,
        "identity_vs_bare_splink_ratio": round(ours_first["seconds"] / bare["seconds"], 3),
        "nightly_vs_bare_splink_ratio": round(ours_nightly["seconds"] / bare["seconds"], 3),
        "nightly_vs_bare_predict_ratio": round(ours_nightly["seconds"] / bare_predict["seconds"], 3),
    }
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    runs.append(result)
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(
        f"identity_vs_bare_splink_ratio {result['identity_vs_bare_splink_ratio']}"
        f" (first run, both train); nightly_vs_bare_splink_ratio {result['nightly_vs_bare_splink_ratio']};"
        f" nightly_vs_bare_predict_ratio {result['nightly_vs_bare_predict_ratio']}"
    )


if __name__ == "__main__":
    main()
