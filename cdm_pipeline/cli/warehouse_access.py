"""Opening the warehouse for a command that needs it, with the one-line refusals users see."""

from __future__ import annotations

import sys

import duckdb

from cdm_pipeline.config import CdmConfig

EXIT_FAILED, EXIT_USAGE = 1, 2


def open_for_command(config: CdmConfig, command: str) -> tuple[duckdb.DuckDBPyConnection | None, int]:
    """A read-write connection, or ``(None, exit status)`` after printing why there is none.

    A missing warehouse is a usage mistake (2: run the pipeline first); one held by another
    process is a failure worth retrying (1).
    """
    from cdm_pipeline.lib.warehouse import connect

    if not config.warehouse.exists():
        print(f"cdm: error: no warehouse at {config.warehouse}: run the pipeline first", file=sys.stderr)
        return None, EXIT_USAGE
    try:
        return connect(config.warehouse, settings=config.duckdb.connection_settings()), 0
    except duckdb.IOException:
        print(
            f"{command}: the warehouse {config.warehouse} is in use by another process"
            " (a run in progress, or the UI?); try again when it has finished",
            file=sys.stderr,
        )
        return None, EXIT_FAILED
