"""The project configuration file (``cdm.yaml``).

- ``models``: the typed settings (pure pydantic, importing nothing of the pipeline);
- ``loading``: which file (one rule), presets, validation and path resolution;
- ``checks``: the rules across fields, each mistake one line naming the file and key.

Import from here; the names below are the public surface.
"""

from cdm_pipeline.config.errors import ConfigError
from cdm_pipeline.config.loading import CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME, config_path, load_config
from cdm_pipeline.config.models import (
    ADDRESS_FIELDS,
    AMOUNT_COLUMNS,
    BOOLEAN_COLUMNS,
    BUYER_IDENTITY_COLUMNS,
    CANONICAL_COLUMNS,
    DATE_COLUMNS,
    DATE_PLACEHOLDER,
    EPOCH_FORMATS,
    MIN_LOST,
    SOURCE_FORMATS,
    SOURCE_KINDS,
    SOURCE_NAME_PATTERN,
    SURVIVING_ATTRIBUTES,
    AlertsConfig,
    CdmConfig,
    ColumnSpec,
    EngineConfig,
    SegmentDefinition,
    SourceConfig,
    SourceFormat,
    SourceKind,
    SparkConfig,
    SurvivorshipConfig,
    exceeds_loss_limit,
)

__all__ = [
    "ADDRESS_FIELDS", "AMOUNT_COLUMNS", "BOOLEAN_COLUMNS", "BUYER_IDENTITY_COLUMNS", "CANONICAL_COLUMNS",
    "CONFIG_ENV_VAR", "DATE_COLUMNS", "DATE_PLACEHOLDER", "DEFAULT_CONFIG_NAME", "EPOCH_FORMATS", "MIN_LOST",
    "SOURCE_FORMATS", "SOURCE_KINDS", "SOURCE_NAME_PATTERN", "SURVIVING_ATTRIBUTES", "AlertsConfig", "CdmConfig",
    "ColumnSpec", "ConfigError", "EngineConfig", "SegmentDefinition", "SourceConfig", "SourceFormat", "SourceKind",
    "SparkConfig", "SurvivorshipConfig", "config_path", "exceeds_loss_limit", "load_config",
]
