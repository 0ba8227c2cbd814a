"""The one place that chooses Splink's database API (``identity.engine`` in the config).

Everything else in the identity stage talks to Splink through the ``DatabaseAPI`` this returns,
so a Spark backend (``splink.SparkAPI``) is one more branch here, not a rewrite.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb

SPLINK_SCHEMA = "identity_splink"


@contextlib.contextmanager
def splink_database_api(
    conn: duckdb.DuckDBPyConnection, engine: str, scratch_dir: Path
) -> Iterator[object]:
    """A Splink database API on the warehouse connection, cleaned up afterwards.

    Splink's intermediate tables go to Parquet files in a scratch folder (measured fastest and
    leanest at 1,000,000 records, and they never bloat the warehouse file); the few it keeps
    as tables live in their own schema, dropped on exit.
    """
    if engine != "duckdb":
        raise ValueError(f"unknown identity engine {engine!r}")
    from splink import DuckDBAPI

    (database,) = conn.execute("SELECT current_database()").fetchall()[0]
    scratch_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="splink-", dir=scratch_dir))
    try:
        yield DuckDBAPI(
            connection=conn,
            output_schema=SPLINK_SCHEMA,
            materialisation="parquet",
            materialisation_dir=str(work),
        )
    finally:
        # Splink switched the connection's default schema; the rest of the stage qualifies its
        # names, but later users of this connection may not.
        conn.execute(f'USE "{database}".main')
        conn.execute(f"DROP SCHEMA IF EXISTS {SPLINK_SCHEMA} CASCADE")
        shutil.rmtree(work, ignore_errors=True)
