"""The one place that chooses where Splink runs (``engine:`` in the config): DuckDB or Spark.

The identity stage keeps its own tables in DuckDB (the warehouse and its in-memory work area).
Splink's work — training, scoring pairs, connected components — runs on the engine: on DuckDB
through ``DuckDBAPI`` on the warehouse connection itself; on Spark through ``SparkAPI``, with
each input handed over as Parquet and each result brought back as Parquet. Everything else in
the stage talks to Splink through the ``LinkageEngine`` this returns, so both engines run the
same code: ``to_splink`` registers a DuckDB table or query with Splink, ``to_warehouse`` brings
a Splink result back as a DuckDB table.

The Parquet handed over holds contact details: it lives in a folder of its own for the run,
readable by its owner only, and is deleted when the stage ends, failed or not.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from cdm_pipeline.config import EngineConfig, SparkConfig
from cdm_pipeline.lib.catalog import IDENTITY_WORK
from cdm_pipeline.lib.warehouse import quote_ident

# Splink's own work tables: a schema of the stage's in-memory work area (records.py), never
# the warehouse file. Unquoted: Splink also writes it into `SET schema '...'`.
SPLINK_SCHEMA = f"{IDENTITY_WORK}.splink"


class EngineUnavailable(Exception):
    """The configured engine cannot start here (pyspark or Java missing): says what to install."""


@dataclass
class LinkageEngine:
    """Splink's database API on one engine, and the hand-over between it and the warehouse."""

    name: str
    conn: duckdb.DuckDBPyConnection
    db_api: object
    # Spark only: the run's folder for Parquet handed over in both directions.
    exchange: Path | None = None
    _registered: list = field(default_factory=list)
    _numbers: itertools.count = field(default_factory=itertools.count)

    @property
    def dialect(self) -> str:
        """Splink's SQL dialect name for this engine (the model renders its SQL in it)."""
        return self.db_api.sql_dialect.sql_dialect_str

    def to_splink(self, query: str, name: str):
        """Register ``query`` (a DuckDB table name or SELECT) with Splink as ``name``."""
        relation = self.conn.sql(query) if query.lstrip().upper().startswith(("SELECT", "WITH", "(")) \
            else self.conn.table(query)
        # Splink refuses a name registered before on this API, even once it is gone.
        name = f"{name}_{next(self._numbers)}"
        if self.exchange is None:
            frame = self.db_api.register(relation, dataset_display_name=name)
        else:
            path = self.exchange / f"{name}.parquet"
            relation.write_parquet(str(path))
            frame = self.db_api.register(self.db_api.spark.read.parquet(str(path)), dataset_display_name=name)
        self._registered.append(frame)
        return frame

    def readable(self, frame) -> str:
        """The Splink result ``frame`` as something DuckDB reads in a FROM clause, valid until the
        frame is dropped: on DuckDB the table itself (no copy), from Spark its rows as Parquet."""
        if self.exchange is None:
            return frame.physical_name
        path = self.exchange / f"out_{next(self._numbers)}"
        frame.as_spark_dataframe().write.mode("overwrite").parquet(str(path))
        return "read_parquet('" + f"{path}/*.parquet".replace("'", "''") + "')"

    def to_warehouse(self, frame, table: str) -> None:
        """``CREATE OR REPLACE TABLE table`` with the rows of the Splink result ``frame``."""
        self.conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {self.readable(frame)}")

    def rows(self, frame, select: str, group_by: str = "") -> list[tuple]:
        """``SELECT {select} FROM frame [GROUP BY ...]`` run on the engine (small results only)."""
        sql = f"SELECT {select} FROM {frame.physical_name}" + (f" GROUP BY {group_by}" if group_by else "")
        if self.exchange is None:
            return self.conn.execute(sql).fetchall()
        return [tuple(row) for row in self.db_api.spark.sql(sql).collect()]

    def release(self) -> None:
        """Forget every registered input (DuckDB: views on the connection; Spark: temp views)."""
        for frame in self._registered:
            with contextlib.suppress(Exception):
                if self.exchange is None:
                    self.conn.unregister(frame.physical_name)
                else:
                    self.db_api.spark.catalog.dropTempView(frame.physical_name)
        self._registered.clear()


@contextlib.contextmanager
def linkage_engine(
    conn: duckdb.DuckDBPyConnection, engine: EngineConfig, spark_session=None
) -> Iterator[LinkageEngine]:
    """The configured engine for one identity stage (or training), cleaned up afterwards.

    ``spark_session``: a session the caller already holds (the Dagster resource's, a test's);
    else one is started from ``engine.spark``.
    """
    if engine.name == "duckdb":
        with _duckdb_engine(conn) as linkage:
            yield linkage
    elif engine.name == "spark":
        with _spark_engine(conn, engine.spark, spark_session) as linkage:
            yield linkage
    else:  # the config model allows no other name
        raise ValueError(f"unknown engine {engine.name!r}")


@contextlib.contextmanager
def _duckdb_engine(conn: duckdb.DuckDBPyConnection) -> Iterator[LinkageEngine]:
    """Splink's intermediate tables live in their own schema of the in-memory work area, dropped on
    exit. Tables in a warehouse schema measured 73 s and 3.5 GB peak on the 1,000,000-person
    demo against 84 s and 4.3 GB with Splink's ``materialisation="parquet"``; in memory they
    also skip the file's write cost (benchmarks/RESULTS.md).
    """
    from splink import DuckDBAPI

    (database,) = conn.execute("SELECT current_database()").fetchall()[0]
    linkage = LinkageEngine("duckdb", conn, DuckDBAPI(connection=conn, output_schema=SPLINK_SCHEMA))
    try:
        yield linkage
    finally:
        linkage.release()
        # Splink switched the connection's default schema; the rest of the stage qualifies its
        # names, but later users of this connection may not.
        conn.execute(f"USE {quote_ident(database)}.main")
        conn.execute(f"DROP SCHEMA IF EXISTS {SPLINK_SCHEMA} CASCADE")


@contextlib.contextmanager
def _spark_engine(conn: duckdb.DuckDBPyConnection, spark: SparkConfig, session) -> Iterator[LinkageEngine]:
    session = session if session is not None else spark_session(spark)
    from splink import SparkAPI

    spark.work_dir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="identity-", dir=spark.work_dir))  # mode 0700
    exchange, checkpoints = run_dir / "exchange", run_dir / "checkpoints"
    for folder in (exchange, checkpoints):
        folder.mkdir(mode=0o700)
    # Splink breaks lineage by writing Parquet into the checkpoint folder: one of this run's, so
    # it is deleted with the rest (it holds the records' values too).
    if spark.checkpoint_dir:
        checkpoints = f"{spark.checkpoint_dir.rstrip('/')}/{run_dir.name}"
    session.sparkContext.setCheckpointDir(str(checkpoints))
    db_api = SparkAPI(
        spark_session=session,
        break_lineage_method=spark.break_lineage_method,
        repartition_after_blocking=spark.repartition_after_blocking,
        num_partitions_on_repartition=spark.num_partitions_on_repartition,
    )
    linkage = LinkageEngine("spark", conn, db_api, exchange=exchange)
    try:
        yield linkage
    finally:
        linkage.release()
        with contextlib.suppress(Exception):
            session.catalog.clearCache()
        if spark.checkpoint_dir:
            _delete_folder(session, str(checkpoints))
        shutil.rmtree(run_dir, ignore_errors=True)


def _delete_folder(session, uri: str) -> None:
    """Delete a folder wherever Spark keeps it (a local path, hdfs://, s3a://), through Hadoop's FS."""
    with contextlib.suppress(Exception):
        jvm = session.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(uri)
        path.getFileSystem(session.sparkContext._jsc.hadoopConfiguration()).delete(path, True)


def spark_session(spark: SparkConfig):
    """A Spark session as ``engine.spark`` describes it, with Splink's string-similarity functions.

    ``getOrCreate``: in a process that already holds a session (a test's, a notebook's), that one
    is used and only the runtime settings below apply.
    """
    try:
        from pyspark.sql import SparkSession
        from splink.backends.spark import similarity_jar_location
    except ImportError:
        raise EngineUnavailable(
            "engine: spark needs pyspark: pip install 'cdm_pipeline[spark]'"
        ) from None
    if spark.master.startswith("local") and shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise EngineUnavailable(
            "engine: spark needs Java 17 for a local Spark: apt-get install openjdk-17-jre-headless"
        )
    builder = (
        SparkSession.builder.master(spark.master).appName(spark.app_name)
        .config("spark.jars", similarity_jar_location())
        # Small jobs on few cores: Spark's default of 200 shuffle partitions is mostly overhead.
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.showConsoleProgress", "false")
    )
    if spark.master.startswith("local") and "spark.local.dir" not in spark.conf:
        # Spark's shuffle and spill files hold the records' values too: under the project's
        # folder for them (owner-only, as every file `cdm` writes), not a shared /tmp.
        local = spark.work_dir / "local"
        local.mkdir(parents=True, exist_ok=True, mode=0o700)
        builder = builder.config("spark.local.dir", str(local))
    for key, value in spark.conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
