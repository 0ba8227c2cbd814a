"""``cdm sources``: the presets on offer, and a dry read of one source's partition."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cdm_pipeline.cli.exit_codes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError


def presets_command() -> int:
    from cdm_pipeline.presets import preset, preset_names

    for name in preset_names():
        settings = preset(name)
        print(f"{name:<22} {settings.get('kind', ''):<13} {settings.get('format', ''):<8} {settings.get('path', '')}")
        if settings.get("description"):
            print(f"{'':<22} {settings['description']}")
    return EXIT_OK


def preview_command(config_path: Path | None, name: str, day: dt.date) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.lib.extract import ExtractError
    from cdm_pipeline.lib.staging.build import StagingError
    from cdm_pipeline.lib.staging.preview import preview_lines, preview_source

    config = resolve_config(config_path)
    try:
        source = config.source(name)
    except KeyError:
        names = ", ".join(s.name for s in config.sources)
        raise CommandError(f"no source named {name!r} in {config.config_path} (sources: {names})", EXIT_USAGE) from None
    try:
        preview = preview_source(config, source, day)
    except (ExtractError, StagingError) as exc:  # one line naming file or column, never a value
        raise CommandError(str(exc), EXIT_FAILED) from None
    for line in preview_lines(preview):
        print(line)
    return EXIT_FAILED if preview.problems else EXIT_OK
