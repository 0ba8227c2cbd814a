"""Extract: landed files → ``raw.<source>`` tables (all text) and ``quarantine.<source>_rejects``."""

from cdm_pipeline.lib.extract.load import (
    ExtractError,
    PartitionLoad,
    load_partition,
    partition_files,
)

__all__ = ["ExtractError", "PartitionLoad", "load_partition", "partition_files"]
