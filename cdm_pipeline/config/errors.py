"""The one error a config problem raises."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """A problem in the config file, reported as ``<file>: <key>: <message>`` on one line."""

    def __init__(self, file: Path | str, key: str, message: str):
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}" if key else f"{self.file}: {message}")
