"""The one place that chooses Splink's database API (``identity.engine`` in the config).

Everything else in the identity stage talks to Splink through the ``DatabaseAPI`` this returns,
so a Spark backend (``splink.SparkAPI``) is one more branch here, not a rewrite.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb

from cdm_pipeline.lib.catalog import IDENTITY_WORK
from cdm_pipeline.lib.warehouse import quote_ident

# Splink's own work tables: a schema of the stage's in-memory work area (records.py), never
# the warehouse file. Unquoted: Splink also writes it into `SET schema '...'`.
SPLINK_SCHEMA = f"{IDENTITY_WORK}.splink"


@contextlib.contextmanager
def splink_database_api(conn: duckdb.DuckDBPyConnection, engine: str) -> Iterator[object]:
    """A Splink database API on the warehouse connection, cleaned up afterwards.

    Splink's intermediate tables live in their own schema of the in-memory work area, dropped on
    exit. Tables in a warehouse schema measured 73 s and 3.5 GB peak on the 1,000,000-person
    demo against 84 s and 4.3 GB with Splink's ``materialisation="parquet"``; in memory they
    also skip the file's write cost (benchmarks/RESULTS.md).
    """
    if engine != "duckdb":
        raise ValueError(f"unknown identity engine {engine!r}")
    from splink import DuckDBAPI

    (database,) = conn.execute("SELECT current_database()").fetchall()[0]
    try:
        yield DuckDBAPI(connection=conn, output_schema=SPLINK_SCHEMA)
    finally:
        # Splink switched the connection's default schema; the rest of the stage qualifies its
        # names, but later users of this connection may not.
        conn.execute(f"USE {quote_ident(database)}.main")
        conn.execute(f"DROP SCHEMA IF EXISTS {SPLINK_SCHEMA} CASCADE")
