"""``cdm ui``: the Dagster UI (webserver and daemon) for this project, on 127.0.0.1 only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cdm_pipeline.config import CONFIG_ENV_VAR
from cdm_pipeline.project import PROJECT_ROOT


def ui_command(config_path: Path | None, port: int) -> int:
    from cdm_pipeline.cli.config_file import resolve_config
    from cdm_pipeline.runner import use_dagster_home

    config = resolve_config(config_path)
    os.environ[CONFIG_ENV_VAR] = str(config.config_path)
    home = use_dagster_home(config)
    print(f"Dagster UI: http://127.0.0.1:{port}  (run storage: {home}; Ctrl-C stops it)", flush=True)
    command = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(PROJECT_ROOT / "workspace.yaml"),
        "--host", "127.0.0.1", "--port", str(port),
    ]
    # Replace this process so Ctrl-C and SIGTERM reach dagster directly.
    os.execv(sys.executable, command)
    return 0  # not reached
