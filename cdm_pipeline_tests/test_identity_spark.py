"""Identity on Spark (``engine: spark``) against DuckDB, on the session's demo (1,500 people, 3 days).

The demo's last night runs again through the real `cdm run` (Dagster, its linkage_engine resource)
with ``engine: spark`` in cdm.yaml: the switch of engine makes it a full re-link on Spark, with the
model file the demo trained on DuckDB. A copy of the warehouse that night left is then re-linked on
DuckDB with the same model file: Spark's customers, ids, scored pairs and golden records must be
DuckDB's. One in-process local Spark for the module (``local[2]``, UI off, few shuffle partitions)
re-runs a night and trains a model. Skipped, saying why, where pyspark or Java is missing (`make
spark` installs both).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import pytest

from cdm_pipeline.config import EngineConfig, SparkConfig, load_config
from cdm_pipeline.lib.catalog import GOLDEN, PAIR_STORE, RESOLUTION_RUNS, XREF
from cdm_pipeline.lib.identity.model import load_model
from cdm_pipeline.lib.identity.resolve import resolve_identities, train_identity_model
from cdm_pipeline.lib.warehouse import connect
from cdm_pipeline_tests.conftest import CDM, HANG_TIMEOUT, cli_env

pytestmark = [pytest.mark.spark, pytest.mark.slow]

# The demo's last day (conftest.DEMO_ARGS: three days from the generator's start).
LAST_DAY = "2026-10-03"
LOCAL_SPARK = SparkConfig(
    master="local[2]",
    conf={"spark.ui.enabled": "false", "spark.sql.shuffle.partitions": "4", "spark.driver.memory": "2g"},
)


def _spark_available() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (make spark installs it)"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java for a local Spark (make spark installs openjdk-17-jre-headless)"
    return None


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    if (reason := _spark_available()) is not None:
        pytest.skip(reason)
    from cdm_pipeline.lib.identity.engine import spark_session

    session = spark_session(LOCAL_SPARK.model_copy(update={"work_dir": tmp_path_factory.mktemp("spark")}))
    yield session
    session.stop()


def test_great_expectations_imports_with_pyspark_where_main_has_no_file():
    """With pyspark installed, GX imports pyspark.sql.connect, which calls sys.exit(0) where ``__main__``
    has no file (``python -c``, multiprocessing's forkserver that runs Dagster's steps) unless connect's
    packages are there: `cdm run` then ended its staging steps silently. The spark extra brings them."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        pytest.skip("pyspark is not installed (make spark installs it)")
    done = subprocess.run(
        [str(Path(CDM).parent / "python"), "-W", "ignore", "-c", "import great_expectations; print('imported')"],
        capture_output=True,
        text=True,
        timeout=HANG_TIMEOUT,
        env=cli_env(),
    )
    assert (done.returncode, done.stdout.strip()) == (0, "imported"), done.stderr[-2000:]


def _with_engine(config, engine: str):
    spark = LOCAL_SPARK.model_copy(update={"work_dir": config.warehouse.parents[1] / "spark"})
    return config.model_copy(update={"engine": EngineConfig(name=engine, spark=spark)})


def _project(demo_project, folder: Path, engine: str):
    root = demo_project.copy_to(folder)
    return _with_engine(load_config(root / "cdm.yaml"), engine)


@pytest.fixture(scope="module")
def night_on_spark(demo_project, tmp_path_factory):
    """The demo's last night again, by `cdm run` with ``engine: spark`` in cdm.yaml: (root, run)."""
    if (reason := _spark_available()) is not None:
        pytest.skip(reason)
    root = demo_project.copy_to(tmp_path_factory.mktemp("spark") / "demo")
    config = root / "cdm.yaml"
    config.write_text(
        config.read_text()
        + "engine:\n  name: spark\n  spark:\n    master: local[2]\n    conf:\n"
        + "".join(f'      {key}: "{value}"\n' for key, value in LOCAL_SPARK.conf.items())
    )
    run = subprocess.run(
        [CDM, "run", "--config", str(config), "--date", LAST_DAY],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=HANG_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root, run


@pytest.fixture(scope="module")
def relinked(night_on_spark, tmp_path_factory):
    """Spark's night, and a copy of the warehouse it left re-linked in full on DuckDB: {engine: (config, summary)}.

    Spark's summary is its row of identity.resolution_runs; DuckDB's the IdentitySummary."""
    spark_root, _ = night_on_spark
    duck_root = tmp_path_factory.mktemp("duckdb") / "demo"
    shutil.copytree(spark_root, duck_root)
    configs = {}
    for engine, root in (("spark", spark_root), ("duckdb", duck_root)):
        configs[engine] = _with_engine(load_config(root / "cdm.yaml"), engine)
    with connect(configs["spark"].warehouse, read_only=True) as conn:
        cursor = conn.execute(f"SELECT * FROM {RESOLUTION_RUNS.full_name} ORDER BY resolved_at DESC LIMIT 1")
        night = dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))
    with connect(configs["duckdb"].warehouse) as conn:
        summary = resolve_identities(conn, configs["duckdb"], "relink-duckdb", full=True)
    return {"spark": (configs["spark"], night), "duckdb": (configs["duckdb"], summary)}


def _attach(relinked) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    for engine, (config, _) in relinked.items():
        conn.execute(f"ATTACH '{config.warehouse}' AS {engine} (READ_ONLY)")
    return conn


def test_spark_gives_duckdbs_customers_ids_and_golden_records(relinked):
    duck, spark = relinked["duckdb"][1], relinked["spark"][1]
    # Switching engines made Spark's night a full re-link, and DuckDB's scored the same pairs.
    assert (spark["mode"], spark["engine"]) == ("full", "spark") and "engine" in spark["mode_reason"]
    assert spark["comparisons"] == duck.matching.comparisons > 1000
    assert spark["clusters"] == duck.clusters.clusters
    conn = _attach(relinked)
    xref = XREF.name
    records, differing = conn.execute(
        f"""SELECT count(*), count(*) FILTER (WHERE d.customer_id <> s.customer_id)
        FROM duckdb.identity.{xref} d JOIN spark.identity.{xref} s USING (source_name, source_record_id)"""
    ).fetchone()
    (spark_records,) = conn.execute(f"SELECT count(*) FROM spark.identity.{xref}").fetchone()
    assert records == spark_records > 2000 and differing == 0
    # Pairwise F1 between the two clusterings (pairs of records in one customer).
    pairs = """SELECT a.source_name || a.source_record_id AS l, b.source_name || b.source_record_id AS r
        FROM {db}.identity.customer_xref a JOIN {db}.identity.customer_xref b
          ON a.customer_id = b.customer_id
         AND a.source_name || a.source_record_id < b.source_name || b.source_record_id"""
    both, duck_pairs, spark_pairs = conn.execute(
        f"""WITH d AS ({pairs.format(db="duckdb")}), s AS ({pairs.format(db="spark")})
        SELECT (SELECT count(*) FROM d JOIN s USING (l, r)), (SELECT count(*) FROM d), (SELECT count(*) FROM s)"""
    ).fetchone()
    assert duck_pairs > 500 and 2 * both / (duck_pairs + spark_pairs) >= 0.999
    # The same pairs scored, to within the engines' Jaro-Winkler rounding.
    pair_table = PAIR_STORE.name
    shared, diff = conn.execute(
        f"""SELECT count(*), max(abs(d.match_probability - s.match_probability))
        FROM duckdb.identity.{pair_table} d JOIN spark.identity.{pair_table} s USING (record_id_l, record_id_r)"""
    ).fetchone()
    (scored,) = conn.execute(f"SELECT count(*) FROM duckdb.identity.{pair_table}").fetchone()
    assert shared == scored > 1000 and diff < 1e-3
    # Golden records: every attribute of every customer (not the run's own id and time).
    golden = GOLDEN.name
    columns = [
        c for c in conn.table(f"duckdb.identity.{golden}").columns if c not in ("run_id", "resolved_at", "updated_at")
    ]
    select = ", ".join(columns)
    (different,) = conn.execute(
        f"""SELECT count(*) FROM (
            (SELECT {select} FROM duckdb.identity.{golden} EXCEPT SELECT {select} FROM spark.identity.{golden})
            UNION ALL
            (SELECT {select} FROM spark.identity.{golden} EXCEPT SELECT {select} FROM duckdb.identity.{golden}))"""
    ).fetchone()
    (customers,) = conn.execute(f"SELECT count(*) FROM spark.identity.{golden}").fetchone()
    assert customers == duck.golden_customers and different == 0


def test_a_rerun_on_spark_is_incremental_and_changes_no_id(relinked, spark):
    config, _ = relinked["spark"]
    with connect(config.warehouse) as conn:
        before = conn.execute(f"SELECT source_name, source_record_id, customer_id FROM {XREF.full_name}").fetchall()
        summary = resolve_identities(conn, config, "spark-again", spark_session=spark)
        after = conn.execute(f"SELECT source_name, source_record_id, customer_id FROM {XREF.full_name}").fetchall()
        modes = conn.execute(f"SELECT mode FROM {RESOLUTION_RUNS.full_name} ORDER BY resolved_at").fetchall()
    assert summary.mode.name == "incremental" and summary.changes.changed == 0
    assert sorted(after) == sorted(before) and len(after) > 2000
    assert summary.ids.new == summary.ids.merged == summary.ids.split == 0
    assert [m for (m,) in modes][-2:] == ["full", "incremental"]
    # The runs' Parquet hand-over and checkpoints (contact details) are gone.
    assert not list(config.engine.spark.work_dir.glob("identity-*"))


def test_a_model_trained_on_spark_links_as_well_when_rendered_for_duckdb(demo_project, relinked, spark, tmp_path):
    config = _project(demo_project, tmp_path / "demo", "spark")
    path = tmp_path / "spark_model.json"
    config = config.model_copy(update={"identity": config.identity.model_copy(update={"model_path": path})})
    with connect(config.warehouse) as conn:
        model = train_identity_model(conn, config, spark_session=spark)
    demo_model = load_model(load_config(demo_project.root / "cdm.yaml").identity.model_path)
    # Trained on Spark: stored in Spark's SQL, the same comparisons and levels, the same prior
    # (exact rules); u and m differ a little (each engine samples its own random pairs).
    assert load_model(path).dialect == "spark" and model.trained_on_records == demo_model.trained_on_records > 2000
    assert [
        (c["output_column_name"], [lv["label_for_charts"] for lv in c["levels"]])
        for c in model.parameters()["comparisons"]
    ] == [
        (c["output_column_name"], [lv["label_for_charts"] for lv in c["levels"]])
        for c in demo_model.parameters()["comparisons"]
    ]
    assert model.settings["probability_two_random_records_match"] == pytest.approx(
        demo_model.settings["probability_two_random_records_match"]
    )
    # Resolved with it on DuckDB: as accurate against the demo's truth as DuckDB's own model.
    duck_config = config.model_copy(update={"engine": EngineConfig()})
    with connect(duck_config.warehouse) as conn:
        summary = resolve_identities(conn, duck_config, "spark-trained", full=True)
    duck = relinked["duckdb"][1].scores
    assert summary.scores.records == duck.records > 2000
    assert summary.scores.f1 > 0.95 and abs(summary.scores.f1 - duck.f1) < 0.01


def test_the_night_on_spark_went_through_dagster_and_left_no_hand_over_behind(night_on_spark):
    root, run = night_on_spark
    # The summary names the engine and why the night re-linked everyone.
    assert "identity mode: full on spark (the engine, identity settings" in run.stdout
    # The step's session kept its shuffle files under the project (data/spark/local), and the
    # run's hand-over folder is gone.
    assert (root / "data" / "spark" / "local").is_dir()
    assert not list((root / "data" / "spark").glob("identity-*"))


def test_the_night_on_spark_leaves_no_email_or_phone_in_its_output_run_storage_or_spark_folder(night_on_spark):
    # Spark writes shuffle files under data/spark/local and logs of its own: none may keep a value
    # once the step has ended (the scanner itself is tested in test_no_personal_data_leaks.py).
    from cdm_pipeline_tests.test_no_personal_data_leaks import collect_personal_values, scan_bytes, scan_folder

    root, run = night_on_spark
    # Shuffle files are compressed, where a scan would not see a value: none may remain at all.
    assert [p for p in (root / "data" / "spark").rglob("*") if p.is_file()] == []
    values = collect_personal_values(root / "data" / "landing")
    assert len(values.emails) > 500 and len(values.phones) > 500
    leaks = scan_bytes("cdm run output", (run.stdout + run.stderr).encode(), values)
    for folder in (root / ".dagster_home", root / "data" / "spark"):
        leaks += scan_folder(folder, root, values)
    assert leaks == [], "\n".join(map(str, leaks))
