"""`make bench ENGINE=spark SCALE=N`: the identity stage on DuckDB beside the same stage on Spark.

    .venv/bin/python benchmarks/bench.py --engine spark --people 20000 [--days 14] [--no-train] [--keep]
    .venv/bin/python benchmarks/engines.py --people 20000               # the same, directly
    make bench ENGINE=spark SCALE=20000 TRAIN=0                         # --no-train

1. Generates N demo people over D days and runs the real pipeline (`cdm run`, DuckDB) over all
   days: the warehouse W has staged records, a model trained on DuckDB and one resolution.
2. Side by side on identical input, each in its own child process on its own copy of W:
   ``resolve_identities(full=True)`` on DuckDB, and on Spark (``local[*]``, UI off,
   ``spark.driver.memory`` 8g, its work folder in the scratch folder). Seconds per phase; for
   Spark also the session's start-up (``spark_session``, timed before the stage is handed the
   session). Peak memory: the largest sum of RSS over the child's whole process tree (the
   Spark child's JVM is its own process), sampled from /proc in the same way for both.
3. Training (unless ``--no-train``): ``train_identity_model`` on Spark and on DuckDB, each in a
   child of its own, on its own copy, writing a scratch copy of the model file.
4. Equality: the Spark customers against the DuckDB ones (pairwise precision, recall and F1 over
   the records both hold, records whose customer id differs), the scored pairs both hold (and
   those only one holds) with the largest match probability difference, and each engine's
   pairwise F1 against the demo's ground truth.
5. Blocking at scale: comparisons per prediction blocking rule (``count_comparisons``, the
   stage's own count) over the records of a seeded random 10% of the people and of all people;
   each rule's exponent k (comparisons ∝ records^k) from the two points, extrapolated to
   100,000,000 contact records.
6. Appends the run to ``benchmarks/engines.json`` and rewrites its section of
   ``benchmarks/RESULTS.md`` (between the ``engines`` markers; every other section is left alone).

Scratch data lives in ``benchmarks/scratch/engines_<N>/`` (git-ignored; removed unless --keep).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "engines.json"
START_MARK = "<!-- engines:start (written by benchmarks/engines.py) -->"
END_MARK = "<!-- engines:end -->"
# The local Spark of the comparison: every core of the machine, no UI.
SPARK_MASTER = "local[*]"
SPARK_CONF = {"spark.ui.enabled": "false", "spark.driver.memory": "8g"}
# Blocking at scale: the records of this share of the people (a seeded sample) against everyone's.
SAMPLE_SHARE = 0.10
SAMPLE_SEED = 42
TARGET_RECORDS = 100_000_000
# A scored pair "moved" between the engines when its match probability differs by more than this.
MOVED = 1e-6


# --- child processes: one resolution or one training each ----------------------------------------


def _child(spec: str) -> None:
    """One measurement in this process (``spec``: JSON of kind, engine, paths); prints JSON figures."""
    import logging

    import duckdb

    from cdm_pipeline.config import EngineConfig, SparkConfig, load_config
    from cdm_pipeline.lib.identity.engine import spark_session
    from cdm_pipeline.lib.identity.evaluation import evaluate_clusters
    from cdm_pipeline.lib.identity.resolve import resolve_identities, train_identity_model
    from cdm_pipeline.lib.warehouse import prepare_connection

    args = json.loads(spec)
    logging.basicConfig(level=logging.WARNING)
    config = load_config(args["config"])
    # No truth file inside the timed stage (production has no labels): scored after the clock stops.
    truth = config.identity.truth_path
    identity = config.identity.model_copy(update={"truth_path": None, "model_path": Path(args["model"])})
    spark = SparkConfig(master=SPARK_MASTER, conf=SPARK_CONF, work_dir=Path(args["work_dir"]))
    engine = EngineConfig(name=args["engine"], spark=spark)
    config = config.model_copy(update={"warehouse": Path(args["warehouse"]), "identity": identity, "engine": engine})
    conn = duckdb.connect(args["warehouse"], config=config.duckdb.connection_settings())
    prepare_connection(conn)
    figures: dict = {"engine": args["engine"]}
    session = None
    if args["engine"] == "spark":
        mark = time.monotonic()
        session = spark_session(spark)
        figures["session_seconds"] = round(time.monotonic() - mark, 2)
        figures["spark_version"] = session.version
    if args["kind"] == "resolve":
        summary = resolve_identities(conn, config, f"bench-{args['engine']}", full=True, spark_session=session)
        figures.update({
            "mode": summary.mode.name,
            "records": summary.records.total,
            "contact_records": summary.records.contacts,
            "comparisons": summary.matching.comparisons,
            "comparisons_by_rule": summary.matching.comparisons_by_rule,
            "edges": summary.matching.edges,
            "clusters": summary.clusters.clusters,
            "seconds": round(summary.seconds["total"], 2),
            "phases": {k: round(v, 2) for k, v in summary.seconds.items()},
            "truth_f1": round(evaluate_clusters(conn, truth).f1, 5) if truth and truth.exists() else None,
        })
    else:
        mark = time.monotonic()
        model = train_identity_model(conn, config, spark_session=session)
        figures.update({
            "seconds": round(time.monotonic() - mark, 2),
            "model_version": model.version,
            "trained_on_records": model.trained_on_records,
        })
    # The high-water mark of this Python process alone (not its JVM): exact, where the sampler
    # of the tree can miss a short peak.
    figures["self_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    conn.close()
    if session is not None:
        session.stop()
    print(json.dumps(figures))


def measure(kind: str, engine: str, config: Path, source: Path, scratch: Path) -> tuple[dict, Path]:
    """One child on its own copy of ``source``; its figures (with the tree's peak RSS) and the copy."""
    from benchmarks.bench import TreeMemory
    from benchmarks.incremental import copy_warehouse
    from cdm_pipeline.config import load_config

    name = f"{kind}_{engine}"
    copy = scratch / f"{name}.duckdb"
    copy_warehouse(source, copy)
    # The pipeline's model file: read as it is by a resolution, a scratch copy for a training to
    # write its next version to.
    model = load_config(config).identity.model_path
    if kind == "train":
        model_copy = scratch / f"{name}_model.json"
        shutil.copyfile(model, model_copy)
        model = model_copy
    spec = {"kind": kind, "engine": engine, "config": str(config), "warehouse": str(copy), "model": str(model),
            "work_dir": str(scratch / "spark" / name)}
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # The whole tree: the Spark child's JVM is a process of its own (a child of the Python one).
    with TreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{name} failed ({process.returncode}):\n{stderr[-6000:]}")
    figures = json.loads(stdout.strip().splitlines()[-1])
    figures["wall_seconds"] = round(time.monotonic() - started, 1)
    figures["tree_peak_rss_mb"] = round(memory.peak_bytes / 2**20)
    if kind == "train":
        figures["model_path"] = str(model)
    return figures, copy


# --- equality ---------------------------------------------------------------------------------------


def compare(conn, spark: str, duckdb_: str, threshold: float = 0.95) -> dict:
    """Customers and scored pairs of catalog ``spark`` against catalog ``duckdb_`` (the reference).

    Pairwise over the records both hold: precision is the share of Spark's same-customer pairs
    DuckDB has too, recall the reverse. Scored pairs are matched on their record ids (both copies
    start from one warehouse, so one record has one id in both; ``record_ids_differ`` checks it):
    how many both hold, how many moved (match probability differs by more than ``MOVED``), how
    many lie on either side of the match ``threshold`` in the two, and the largest difference.
    """
    xref = "SELECT source_name, source_record_id, customer_id FROM {}.identity.customer_xref"
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _s AS {xref.format(spark)}")
    conn.execute(f"CREATE OR REPLACE TEMP VIEW _d AS {xref.format(duckdb_)}")
    records, only_spark, only_duckdb, differing, pairs_s, pairs_d, pairs_both = conn.execute(
        """WITH both_ AS (
            SELECT s.customer_id AS cs, d.customer_id AS cd FROM _s s JOIN _d d USING (source_name, source_record_id)
        )
        SELECT (SELECT count(*) FROM both_),
            (SELECT count(*) FROM _s ANTI JOIN _d USING (source_name, source_record_id)),
            (SELECT count(*) FROM _d ANTI JOIN _s USING (source_name, source_record_id)),
            (SELECT count(*) FROM both_ WHERE cs <> cd),
            (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n FROM both_ GROUP BY cs)),
            (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n FROM both_ GROUP BY cd)),
            (SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n FROM both_ GROUP BY cs, cd))"""
    ).fetchone()
    pairs = "SELECT record_id_l, record_id_r, match_probability FROM {}.identity.scored_pairs"
    pairs_both_held, moved, across, max_difference, pairs_only_spark, pairs_only_duckdb = conn.execute(
        f"""WITH s AS ({pairs.format(spark)}), d AS ({pairs.format(duckdb_)}),
        both_ AS (
            SELECT s.match_probability AS ps, d.match_probability AS pd FROM s JOIN d USING (record_id_l, record_id_r)
        )
        SELECT count(*), count(*) FILTER (WHERE abs(ps - pd) > {MOVED}),
            count(*) FILTER (WHERE (ps >= $threshold) <> (pd >= $threshold)), coalesce(max(abs(ps - pd)), 0),
            (SELECT count(*) FROM s ANTI JOIN d USING (record_id_l, record_id_r)),
            (SELECT count(*) FROM d ANTI JOIN s USING (record_id_l, record_id_r))
        FROM both_""",
        {"threshold": threshold},
    ).fetchone()
    nodes = "SELECT record_id, source_name, source_record_id FROM {}.identity.graph_nodes"
    (ids_differ,) = conn.execute(
        f"SELECT count(*) FROM ({nodes.format(spark)}) s JOIN ({nodes.format(duckdb_)}) d USING (record_id)"
        " WHERE s.source_name IS DISTINCT FROM d.source_name OR s.source_record_id IS DISTINCT FROM d.source_record_id"
    ).fetchone()
    return {
        "records": records, "records_only_spark": only_spark, "records_only_duckdb": only_duckdb,
        "pairs_spark": int(pairs_s), "pairs_duckdb": int(pairs_d), "pairs_both": int(pairs_both),
        "precision": round(pairs_both / pairs_s if pairs_s else 1.0, 6),
        "recall": round(pairs_both / pairs_d if pairs_d else 1.0, 6),
        "f1": round(2 * pairs_both / (pairs_s + pairs_d) if pairs_s + pairs_d else 1.0, 6),
        "records_id_differs": differing,
        "scored_pairs_both": pairs_both_held, "scored_pairs_only_spark": pairs_only_spark,
        "scored_pairs_only_duckdb": pairs_only_duckdb, "scored_pairs_moved": moved,
        "scored_pairs_across_threshold": across, "threshold": threshold,
        "max_probability_difference": float(max_difference),
        "record_ids_differ": ids_differ,
    }


def compare_files(spark: Path, duckdb_: Path, threshold: float) -> dict:
    """``compare`` on the two warehouse files, opened read-only."""
    import duckdb

    conn = duckdb.connect()
    try:
        conn.execute(f"ATTACH '{spark}' AS ws (READ_ONLY)")
        conn.execute(f"ATTACH '{duckdb_}' AS wd (READ_ONLY)")
        return compare(conn, "ws", "wd", threshold)
    finally:
        conn.close()


def compare_models(spark_model: Path, duckdb_model: Path) -> dict:
    """The two trained models' parameters: the prior and every level's m and u, largest differences."""
    from cdm_pipeline.lib.identity.model import load_model

    def levels(path: Path) -> tuple[float, dict]:
        parameters = load_model(path).parameters()
        found = {
            (c["output_column_name"], level["label_for_charts"]): (level["m_probability"], level["u_probability"])
            for c in parameters["comparisons"] for level in c["levels"]
        }
        return parameters["probability_two_random_records_match"], found

    prior_s, levels_s = levels(spark_model)
    prior_d, levels_d = levels(duckdb_model)
    common = levels_s.keys() & levels_d.keys()

    def largest(i: int) -> float:
        gaps = [abs(levels_s[k][i] - levels_d[k][i]) for k in common
                if levels_s[k][i] is not None and levels_d[k][i] is not None]
        return round(max(gaps, default=0.0), 6)

    return {
        "prior_spark": prior_s, "prior_duckdb": prior_d, "levels_both": len(common),
        "levels_only_one": len(levels_s.keys() ^ levels_d.keys()),
        "max_m_difference": largest(0), "max_u_difference": largest(1),
    }


# --- blocking at scale ------------------------------------------------------------------------------


def fit_exponent(records_small: int, comparisons_small: int, records_large: int, comparisons_large: int):
    """k in comparisons ∝ records^k through the two points; None when a point has no comparisons."""
    if min(comparisons_small, comparisons_large) <= 0 or records_small <= 0 or records_large == records_small:
        return None
    return math.log(comparisons_large / comparisons_small) / math.log(records_large / records_small)


def project(comparisons: int, records: int, exponent: float | None, target: int = TARGET_RECORDS):
    """``comparisons`` at ``records`` carried to ``target`` records along records^exponent."""
    if exponent is None:
        return None
    return comparisons * (target / records) ** exponent


def projection(sample: dict, everyone: dict, target: int = TARGET_RECORDS) -> dict:
    """Per rule: comparisons at both points, the exponent and the projection; and the totals.

    ``sample``, ``everyone``: {"records": n, "by_rule": {rule: comparisons}}. A rule with no
    comparisons at a point cannot be fitted (its projection is None, left out of the total and
    counted in ``unfitted``).
    """
    rows = []
    for rule, large in everyone["by_rule"].items():
        small = sample["by_rule"].get(rule, 0)
        k = fit_exponent(sample["records"], small, everyone["records"], large)
        projected = project(large, everyone["records"], k, target)
        rows.append({
            "rule": rule, "comparisons_sample": small, "comparisons": large,
            "exponent": None if k is None else round(k, 4),
            "projected": None if projected is None else round(projected),
        })
    total_small, total_large = sum(sample["by_rule"].values()), sum(everyone["by_rule"].values())
    k_total = fit_exponent(sample["records"], total_small, everyone["records"], total_large)
    return {
        "target_records": target,
        "records_sample": sample["records"], "records": everyone["records"],
        "comparisons_sample": total_small, "comparisons": total_large,
        "rules": rows,
        "projected_total": sum(r["projected"] for r in rows if r["projected"] is not None),
        "unfitted": sum(r["projected"] is None for r in rows),
        # The total's own exponent (fitted on the sums), for reference beside the sum of the rules'.
        "exponent_total": None if k_total is None else round(k_total, 4),
    }


def projected_at(p: dict, records: int):
    """The fitted rules of projection ``p`` carried to ``records`` instead of its target."""
    return sum(project(r["comparisons"], p["records"], r["exponent"], records) for r in p["rules"]
               if r["exponent"] is not None)


def scale_check(p: dict, results: Path) -> dict | None:
    """The fit against a measurement: the latest `make bench` run (``results``, results.json) with
    more contact records than this run, its comparisons beside what this fit projects there."""
    runs = json.loads(results.read_text()) if results.exists() else []
    larger = [r for r in runs if r.get("contact_records", 0) > p["records"] and r.get("comparisons")]
    if not larger:
        return None
    run = larger[-1]
    projected = projected_at(p, run["contact_records"])
    return {"date": run["date"], "people": run["people"], "records": run["contact_records"],
            "measured": run["comparisons"], "projected": round(projected),
            "measured_over_projected": round(run["comparisons"] / projected, 3)}


def blocking_at_scale(config_path: Path, warehouse: Path, share: float = SAMPLE_SHARE, seed: int = SAMPLE_SEED) -> dict:
    """The stage's own comparison count (``count_comparisons``) over everyone's records and over a
    seeded sample of the people's, on ``warehouse`` (a scratch copy: its work area is rebuilt)."""
    import duckdb

    from cdm_pipeline.config import load_config
    from cdm_pipeline.lib.identity.deterministic import SPLINK_INPUT, build_deterministic_edges
    from cdm_pipeline.lib.identity.evaluation import ENTITY_COLUMNS
    from cdm_pipeline.lib.identity.matching import count_comparisons
    from cdm_pipeline.lib.identity.model import load_model
    from cdm_pipeline.lib.identity.records import build_identity_records
    from cdm_pipeline.lib.warehouse import prepare_connection

    config = load_config(config_path)
    truth = config.identity.truth_path
    model = load_model(config.identity.model_path)
    conn = duckdb.connect(str(warehouse), config=config.duckdb.connection_settings())
    try:
        prepare_connection(conn)
        build_identity_records(conn)
        build_deterministic_edges(conn, config)
        columns = [row[0] for row in conn.execute("DESCRIBE SELECT * FROM read_parquet(?)", [str(truth)]).fetchall()]
        entity = next(c for c in ENTITY_COLUMNS if c in columns)
        conn.execute(
            f"""CREATE TEMP TABLE _labelled AS
            SELECT i.*, t.entity FROM {SPLINK_INPUT} i JOIN (
                SELECT DISTINCT source_name::VARCHAR AS source_name, source_record_id::VARCHAR AS source_record_id,
                    {entity}::VARCHAR AS entity FROM read_parquet(?)
            ) t ON t.source_name = i.source_name AND t.source_record_id = i.source_record_id::VARCHAR""",
            [str(truth)],
        )
        (all_records,) = conn.execute(f"SELECT count(*) FROM {SPLINK_INPUT}").fetchone()
        (people,) = conn.execute("SELECT count(DISTINCT entity) FROM _labelled").fetchone()
        sampled = round(people * share)
        # A seeded draw that any DuckDB version repeats: the people whose md5(seed:entity) is lowest.
        conn.execute(
            f"""CREATE TEMP TABLE _sample AS SELECT entity FROM (SELECT DISTINCT entity FROM _labelled)
            ORDER BY md5('{int(seed)}:' || entity), entity LIMIT {sampled}"""
        )
        points = {}
        for name, where in (("everyone", ""), ("sample", " SEMI JOIN _sample USING (entity)")):
            conn.execute(f"CREATE OR REPLACE TABLE {SPLINK_INPUT} AS SELECT * EXCLUDE (entity) FROM _labelled{where}")
            (records,) = conn.execute(f"SELECT count(*) FROM {SPLINK_INPUT}").fetchone()
            points[name] = {"records": int(records), "by_rule": count_comparisons(conn, model)}
    finally:
        conn.close()
    result = projection(points["sample"], points["everyone"])
    result.update({
        "people": int(people), "people_sample": int(sampled), "sample_share": share, "seed": seed,
        # Contact records without a label are in neither point (the demo labels every one).
        "unlabelled_records": int(all_records) - points["everyone"]["records"],
    })
    return result


# --- RESULTS.md -------------------------------------------------------------------------------------


def _wrap(text: str) -> str:
    """A paragraph wrapped as the hand-written text of RESULTS.md is (100 columns)."""
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def _or_dash(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def results_section(runs: list[dict]) -> str:
    intro = (
        "`make bench ENGINE=spark SCALE=N` (`benchmarks/engines.py`): demo data for N people over 14 days,"
        " `cdm run` over all of them on DuckDB (which trains the model), then on copies of that warehouse,"
        " each in its own process: `resolve_identities(full=True)` on DuckDB and on a local Spark"
        f" (`{SPARK_MASTER}`, driver memory {SPARK_CONF['spark.driver.memory']}), and `train_identity_model`"
        " on each. *seconds*: the identity stage's own, all phases; Spark's session start-up apart (+)."
        " *peak MB*: the largest sum of RSS over the process and all its descendants (Spark's JVM"
        " included), sampled every 0.1 s from /proc for both; the JVM's heap may grow up to the driver"
        " memory before it collects, so Spark's peak follows its garbage collector and varies from run to"
        " run more than DuckDB's. *training s*: `train_identity_model` (inputs and training). *F1 Spark vs"
        " DuckDB*: pairwise F1 of Spark's customers against DuckDB's; *ids differing*: records whose"
        " customer id differs; *scored pairs*: pairs both engines stored (pairs only one stored); of"
        " those, pairs whose match probability differs by more than 1e-6 (*moved*) and pairs on either"
        " side of the match threshold in the two (*across*), and the largest difference. *F1 vs truth*:"
        " against the demo's ground truth."
    )
    caveat = (
        "On this 2-core machine Spark is expected to be slower than DuckDB (a JVM, Parquet hand-overs,"
        " task scheduling, no cores to spread over): the point is that the same run, unchanged, scales"
        " out to a cluster, where DuckDB is bound to one machine."
    )
    lines = [START_MARK, "", "## Engines: DuckDB and Spark", "", _wrap(intro), "", _wrap(caveat), ""]
    head = (
        "| # | date | people | contact records | comparisons | identity s DuckDB / Spark (+ start-up)"
        " | peak MB DuckDB / Spark tree | training s Spark / DuckDB | F1 Spark vs DuckDB | ids differing"
        " | scored pairs both (only one); moved, across; max Δp | F1 vs truth DuckDB / Spark |"
    )
    lines += [head, "|" + " --- |" * (head.count("|") - 1)]
    for n, r in enumerate(runs, start=1):
        d, s, same = r["duckdb"], r["spark"], r["spark_vs_duckdb"]
        shape = "" if r["days"] == 14 else f" ({r['days']} days)"
        train = r.get("training")
        training = "–" if not train else f"{train['spark']['seconds']:,.1f} / {train['duckdb']['seconds']:,.1f}"
        only = same["scored_pairs_only_spark"] + same["scored_pairs_only_duckdb"]
        lines.append(
            f"| {n} | {r['date']} | {r['people']:,}{shape} | {d['contact_records']:,} | {d['comparisons']:,}"
            f" | {d['seconds']:,.1f} / {s['seconds']:,.1f} (+ {s['session_seconds']:,.1f})"
            f" | {d['tree_peak_rss_mb']:,} / {s['tree_peak_rss_mb']:,} | {training}"
            f" | {same['f1']:.5f} | {same['records_id_differs']:,}"
            f" | {same['scored_pairs_both']:,} ({only:,}); {same['scored_pairs_moved']:,},"
            f" {same['scored_pairs_across_threshold']:,}; {same['max_probability_difference']:.2g}"
            f" | {_or_dash(d['truth_f1'], '.4f')} / {_or_dash(s['truth_f1'], '.4f')} |"
        )
    lines += ["", f"Machine: {'; '.join(sorted({r['machine'] for r in runs}))}.", ""]
    if runs:
        latest = runs[-1]
        p = latest["projection"]
        about = (
            f"Comparisons per prediction blocking rule (the stage's own count) over the records of a seeded"
            f" {p['sample_share']:.0%} of the people ({p['people_sample']:,} people, {p['records_sample']:,}"
            f" records) and of all {p['people']:,} ({p['records']:,} records); *k*: the exponent in"
            f" comparisons ∝ records^k through the two points, carried to {p['target_records']:,} records."
            " The demo draws first and last names, streets and cities from lists of a few hundred values,"
            " so the more people, the closer its name blocks come to growing quadratically (k 2): a fit"
            " between 10% and 100% of one run understates the demo's own growth beyond it, and real"
            " data's value distributions decide what real data costs. This says which rules to watch,"
            " not what 100 M real records would cost."
        )
        lines += [
            f"### Blocking at {p['target_records']:,} contact records (run #{len(runs)}, {latest['date']},"
            f" {latest['people']:,} people)",
            "",
            _wrap(about),
            "",
            f"| rule | comparisons at {p['records']:,} records | k | projected at {p['target_records']:,} |",
            "| --- | --- | --- | --- |",
        ]
        for row in sorted(p["rules"], key=lambda r: -(r["projected"] or 0)):
            lines.append(f"| {row['rule']} | {row['comparisons']:,} | {_or_dash(row['exponent'], '.2f')}"
                         f" | {_or_dash(row['projected'], ',.0f')} |")
        unfitted = f" ({p['unfitted']} rule(s) without comparisons in the sample left out)" if p["unfitted"] else ""
        lines.append(f"| **total**{unfitted} | {p['comparisons']:,} | {_or_dash(p['exponent_total'], '.2f')}"
                     f" | {p['projected_total']:,.0f} |")
        lines.append("")
        if check := p.get("check"):
            lines += [
                _wrap(f"Check against a measurement: this fit gives {check['projected']:,} comparisons at"
                      f" {check['records']:,} contact records, where `make bench` counted {check['measured']:,}"
                      f" ({check['people']:,} people, {check['date']}, the blocking rules of that day):"
                      f" {check['measured_over_projected']:.2f}x the fit."),
                "",
            ]
        lines += [f"The stage refuses to predict above `identity.max_comparisons`"
                  f" ({latest['max_comparisons']:,} configured).", ""]
    lines.append(END_MARK)
    return "\n".join(lines)


def write_section(runs: list[dict], folder: Path = BENCH) -> Path:
    """Rewrite this benchmark's section of RESULTS.md (appended when missing); nothing else."""
    from benchmarks.report import replace_section

    return replace_section(folder / "RESULTS.md", START_MARK, END_MARK, results_section(runs))


# --- the run --------------------------------------------------------------------------------------


def _phases(figures: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in figures["phases"].items())


def run(people: int, days: int = 14, train: bool = True, keep: bool = False, memory_limit: str | None = None,
        results: Path = RESULTS) -> dict:
    from benchmarks.bench import CDM, START, machine, run_pipeline, write_config
    from benchmarks.incremental import copy_warehouse
    from cdm_pipeline.config import load_config

    scratch = BENCH / "scratch" / f"engines_{people}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    config_path = write_config(scratch, memory_limit)
    config = load_config(config_path)
    first, last = START, START + dt.timedelta(days=days - 1)
    print(f"engines benchmark: {people:,} people x {days} days in {scratch}", flush=True)

    subprocess.run(
        [CDM, "generate-demo", "--people", str(people), "--days", str(days),
         "--out", str(config.landing_dir), "--start", first.isoformat()],
        check=True, stdout=subprocess.DEVNULL,
    )
    seconds, peak, _ = run_pipeline(config_path, first, last)
    print(f"  cdm run {first} to {last} (DuckDB): {seconds:.1f} s, peak {peak / 2**20:,.0f} MB", flush=True)
    warehouse = scratch / "w.duckdb"
    copy_warehouse(config.warehouse, warehouse)

    duckdb_run, duckdb_copy = measure("resolve", "duckdb", config_path, warehouse, scratch)
    print(f"  DuckDB ({duckdb_run['mode']}): {duckdb_run['seconds']:.1f} s ({_phases(duckdb_run)}), tree peak"
          f" {duckdb_run['tree_peak_rss_mb']:,} MB, {duckdb_run['comparisons']:,} comparisons", flush=True)
    spark_run, spark_copy = measure("resolve", "spark", config_path, warehouse, scratch)
    print(f"  Spark ({spark_run['mode']}): {spark_run['seconds']:.1f} s + {spark_run['session_seconds']:.1f} s start-up"
          f" ({_phases(spark_run)}), tree peak {spark_run['tree_peak_rss_mb']:,} MB,"
          f" {spark_run['comparisons']:,} comparisons", flush=True)
    same = compare_files(spark_copy, duckdb_copy, config.identity.match_threshold)
    print(f"  Spark vs DuckDB: F1 {same['f1']} (precision {same['precision']}, recall {same['recall']}),"
          f" {same['records_id_differs']:,} records with another id; scored pairs {same['scored_pairs_both']:,}"
          f" both, {same['scored_pairs_only_spark']:,} only Spark, {same['scored_pairs_only_duckdb']:,} only DuckDB,"
          f" {same['scored_pairs_moved']:,} moved, {same['scored_pairs_across_threshold']:,} across the threshold,"
          f" max |Δp| {same['max_probability_difference']:.2e}", flush=True)
    if not keep:  # the copies are as large as the warehouse
        for copy in (duckdb_copy, spark_copy):
            copy.unlink(missing_ok=True)

    training = None
    if train:
        training = {}
        for engine in ("spark", "duckdb"):
            figures, copy = measure("train", engine, config_path, warehouse, scratch)
            if not keep:
                copy.unlink(missing_ok=True)
            training[engine] = figures
            start_up = f" + {figures['session_seconds']:.1f} s start-up" if "session_seconds" in figures else ""
            print(f"  training on {engine}: {figures['seconds']:.1f} s{start_up}, tree peak"
                  f" {figures['tree_peak_rss_mb']:,} MB", flush=True)
        training["models"] = compare_models(Path(training["spark"]["model_path"]),
                                            Path(training["duckdb"]["model_path"]))
        print(f"  trained models: {training['models']}", flush=True)

    blocking_copy = scratch / "blocking.duckdb"
    copy_warehouse(warehouse, blocking_copy)
    scale = blocking_at_scale(config_path, blocking_copy)
    blocking_copy.unlink(missing_ok=True)
    scale["check"] = scale_check(scale, BENCH / "results.json")
    print(f"  blocking: {scale['records_sample']:,} -> {scale['records']:,} records,"
          f" {scale['comparisons_sample']:,} -> {scale['comparisons']:,} comparisons;"
          f" projected at {scale['target_records']:,} records: {scale['projected_total']:,.0f}", flush=True)

    import duckdb
    import pyspark
    import splink

    result = {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "people": people,
        "days": days,
        "versions": {"duckdb": duckdb.__version__, "splink": splink.__version__, "pyspark": pyspark.__version__},
        "duckdb_memory_limit": config.duckdb.memory_limit or "default (80% of RAM)",
        "spark": spark_run,
        "duckdb": duckdb_run,
        "spark_master": SPARK_MASTER,
        "spark_conf": SPARK_CONF,
        "pipeline_seconds": round(seconds, 1),
        "spark_vs_duckdb": same,
        "training": training,
        "projection": scale,
        "max_comparisons": config.identity.max_comparisons,
    }
    runs = json.loads(results.read_text()) if results.exists() else []
    runs.append(result)
    results.write_text(json.dumps(runs, indent=2) + "\n")
    # RESULTS.md beside the results file: a trial run (--results elsewhere) leaves the page alone.
    page = write_section(runs, results.parent)
    print(f"  results: {results} and {page}")
    if not keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--no-train", dest="train", action="store_false", help="skip the two trainings")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--memory-limit", help="override cdm.yaml's duckdb.memory_limit, e.g. 8GB")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.people, args.days, args.train, args.keep, args.memory_limit, args.results)


if __name__ == "__main__":
    main()
