"""Reading every block of the warehouse, so a corrupt one is found now rather than by a later run.

DuckDB stores a checksum with every block (and, in an encrypted file, an AES-GCM tag) and checks
it when the block is read; but it reads only the blocks a query needs, so a damaged block in a
table nobody queries goes unnoticed until the night it is needed. ``verify_warehouse`` reads
every row of every column of every table (a hash aggregate over the whole row), which forces
every data block through that check. ``cdm warehouse verify`` and ``cdm backup`` (before a
snapshot) call it.
"""

from __future__ import annotations

import duckdb

from cdm_pipeline.lib.warehouse import qualified, safe_error_message


class WarehouseCorrupt(RuntimeError):
    """A table of the warehouse could not be read in full (a corrupt block, most likely)."""

    def __init__(self, table: str, reason: str):
        super().__init__(f"the warehouse table {table} cannot be read in full: {reason}")
        self.table = table
        self.reason = reason


def verify_warehouse(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Read every table of ``conn``'s current database in full; returns rows per ``schema.table``.

    Raises :class:`WarehouseCorrupt` naming the first table that cannot be read (its reason is
    DuckDB's first line with any quoted value masked). Views hold no data and are not read.
    """
    tables = conn.execute(
        "SELECT schema_name, table_name FROM duckdb_tables()"
        " WHERE database_name = current_database() AND NOT temporary ORDER BY schema_name, table_name"
    ).fetchall()
    rows: dict[str, int] = {}
    for schema, table in tables:
        name = f"{schema}.{table}"
        try:
            # hash(row) reads every column of every row; count(*) alone could be answered from
            # row-group metadata without touching the data blocks.
            (count, _) = conn.execute(
                f"SELECT count(*), bit_xor(hash(t)) FROM {qualified(schema, table)} AS t"
            ).fetchone()
        except duckdb.Error as exc:
            raise WarehouseCorrupt(name, safe_error_message(exc)) from None
        rows[name] = count
    return rows
