"""The pipeline steps' resources: the warehouse (``lib.warehouse.open_warehouse``) and the linkage engine."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from cdm_pipeline.lib.encryption import Encryption, encryption_from
from cdm_pipeline.lib.warehouse import PIPELINE_LOCK_WAIT, open_warehouse


class WarehouseResource(DuckDBResource):
    """DuckDBResource whose connections are opened the one way the project opens the warehouse:
    configured settings, session time zone, folder created, a lock held by another process waited
    for (``PIPELINE_LOCK_WAIT``), and the connection always closed, also when the step fails (the
    next step needs the file lock). An encrypted warehouse's key is read from the environment (or
    the key file) when a step connects: the resource's config, which the UI shows, holds only where
    the key comes from, never the key."""

    key_file: str | None = None
    crypto: str = "httpfs"
    extension_directory: str | None = None

    def encryption(self) -> Encryption | None:
        """The warehouse key's settings, with the key read now from the environment or key file."""
        return encryption_from(
            Path(self.key_file) if self.key_file else None, self.crypto,  # type: ignore[arg-type]
            Path(self.extension_directory) if self.extension_directory else None,
        )

    @contextmanager
    def get_connection(self):
        with open_warehouse(
            Path(self.database), settings=self.connection_config, lock_wait=PIPELINE_LOCK_WAIT,
            encryption=self.encryption(),
        ) as conn:
            yield conn


class LinkageEngineResource(dg.ConfigurableResource):
    """Where identity's Splink work runs, as ``engine:`` in cdm.yaml says (lib/identity/engine.py).

    ``duckdb``: nothing to start (the warehouse connection is the engine). ``spark``: the step's
    Spark session, started on first use from ``engine.spark`` (master, conf) and kept for the
    process; the UI shows the master and the settings, which hold no secret (keys for a cluster
    come from the environment, as Spark reads them).
    """

    name: str = "duckdb"
    master: str = "local[*]"
    app_name: str = "cdm_pipeline"
    conf: dict[str, str] = {}
    work_dir: str = "data/spark"

    def spark_session(self):
        """The Spark session for ``engine: spark``; None for DuckDB."""
        if self.name != "spark":
            return None
        from cdm_pipeline.config import SparkConfig
        from cdm_pipeline.lib.identity.engine import spark_session

        return spark_session(
            SparkConfig(master=self.master, app_name=self.app_name, conf=self.conf, work_dir=Path(self.work_dir))
        )
