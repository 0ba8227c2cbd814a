"""The warehouse resource: the pipeline steps' way into ``lib.warehouse.open_warehouse``."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from dagster_duckdb import DuckDBResource

from cdm_pipeline.lib.warehouse import PIPELINE_LOCK_WAIT, open_warehouse


class WarehouseResource(DuckDBResource):
    """DuckDBResource whose connections are opened the one way the project opens the warehouse:
    configured settings, session time zone, folder created, a lock held by another process waited
    for (``PIPELINE_LOCK_WAIT``), and the connection always closed, also when the step fails (the
    next step needs the file lock)."""

    @contextmanager
    def get_connection(self):
        with open_warehouse(
            Path(self.database), settings=self.connection_config, lock_wait=PIPELINE_LOCK_WAIT
        ) as conn:
            yield conn
