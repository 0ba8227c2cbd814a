"""The warehouse resource: DuckDB connections with the project's session settings."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
from dagster_duckdb import DuckDBResource

from cdm_pipeline.lib.warehouse import prepare_connection


class WarehouseResource(DuckDBResource):
    """DuckDBResource that creates the warehouse folder, fixes the session time zone and always
    closes its connection, also when the step fails (the next step needs the file lock)."""

    @contextmanager
    def get_connection(self):
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        conn = _connect_with_retries(self.database, self.connection_config)
        try:
            prepare_connection(conn)
            yield conn
        finally:
            conn.close()


def _connect_with_retries(database: str, config: dict, attempts: int = 10) -> duckdb.DuckDBPyConnection:
    # The pool keeps our own steps apart; a lock held by a process that is still exiting (or a
    # person's read-only session) clears within moments, so retry with backoff before failing.
    for attempt in range(attempts):
        try:
            return duckdb.connect(database, read_only=False, config=config)
        except duckdb.IOException:
            if attempt == attempts - 1:
                raise
            time.sleep(min(0.2 * 2**attempt, 5.0))
    raise AssertionError("unreachable")
