"""The Dagster code location: everything under ``cdm_pipeline/defs/``, assembled."""

from pathlib import Path

import dagster as dg

from cdm_pipeline.lib.file_modes import private_umask


@dg.definitions
def defs() -> dg.Definitions:
    # `dagster dev` / `dg` started without `cdm`: the code server, and the step processes it forks,
    # create the warehouse, run storage and reports owner-only too.
    private_umask()
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
