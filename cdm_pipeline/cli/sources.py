"""``cdm sources``: the presets on offer, and a dry read of one source's partition."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def presets_command() -> int:
    from cdm_pipeline.presets import preset, preset_names

    for name in preset_names():
        settings = preset(name)
        print(f"{name:<22} {settings.get('kind', ''):<13} {settings.get('format', ''):<8} {settings.get('path', '')}")
        if settings.get("description"):
            print(f"{'':<22} {settings['description']}")
    return 0


def preview_command(config_path: Path | None, name: str, day: dt.date) -> int:
    from cdm_pipeline.cli.run import resolve_config
    from cdm_pipeline.lib.extract import ExtractError
    from cdm_pipeline.lib.staging.build import StagingError
    from cdm_pipeline.lib.staging.preview import preview_lines, preview_source

    config = resolve_config(config_path)
    try:
        source = config.source(name)
    except KeyError:
        names = ", ".join(s.name for s in config.sources)
        print(f"cdm: error: no source named {name!r} in {config.config_path} (sources: {names})")
        return 2
    try:
        preview = preview_source(config, source, day)
    except (ExtractError, StagingError) as exc:  # one line naming file or column, never a value
        print(f"cdm: error: {exc}")
        return 1
    for line in preview_lines(preview):
        print(line)
    return 1 if preview.problems else 0
