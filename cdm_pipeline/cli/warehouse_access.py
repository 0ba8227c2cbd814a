"""Opening the warehouse for a command that needs it, with the one-line refusals users see.

Every command opens it here, so every command answers the same way: no warehouse is a usage
mistake (``EXIT_USAGE``: run the pipeline first); a warehouse held by another process is a
failure worth retrying later (``EXIT_FAILED``), said by ``main`` when ``WarehouseLocked`` reaches it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from cdm_pipeline.cli.exit_codes import EXIT_USAGE, CommandError
from cdm_pipeline.config import CdmConfig
from cdm_pipeline.lib.warehouse import COMMAND_LOCK_WAIT, open_config_warehouse


@contextmanager
def command_warehouse(config: CdmConfig, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """The config's warehouse, opened with its settings and closed after the command.

    Never creates one: a missing file is refused (``CommandError``, ``EXIT_USAGE``). A lock held by
    another process is waited for ``COMMAND_LOCK_WAIT`` seconds, then ``WarehouseLocked`` is raised.
    """
    if not config.warehouse.exists():
        raise CommandError(
            f"no warehouse at {config.warehouse}: run the pipeline first (`cdm run` or `cdm demo`)", EXIT_USAGE
        )
    with open_config_warehouse(config, read_only=read_only, lock_wait=COMMAND_LOCK_WAIT) as conn:
        yield conn
