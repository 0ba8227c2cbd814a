"""The config a ``cdm`` command reads: ``--config PATH``, else the one rule of ``config_path``."""

from __future__ import annotations

from pathlib import Path

from cdm_pipeline.config import CdmConfig, load_config


def resolve_config(path: Path | None) -> CdmConfig:
    """The validated config of ``--config`` (``path``), else ``$CDM_CONFIG``, ``./cdm.yaml`` or the project's."""
    return load_config(path)
