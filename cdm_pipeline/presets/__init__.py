"""Presets: a tool's standard export, described once, so a source needs only a few lines.

``preset: hubspot_contacts`` on a source fills its kind, format, path, id, column mapping,
formats, time zone handling and vocabularies from ``<name>.yaml`` in this folder. Whatever the
source itself says wins: a top-level key replaces the preset's, and under ``columns`` each
canonical column the source names replaces the preset's (``phone: null`` unmaps it). Each file
cites the public documentation of the export it describes.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

PRESETS_DIR = Path(__file__).resolve().parent
# Keys a preset file holds that are documentation, not source settings.
_DOC_KEYS = ("description", "documentation")
_MERGED = ("columns", "loss_limits")


class PresetError(Exception):
    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@functools.cache
def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))


@functools.cache
def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((PRESETS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def preset(name: str) -> dict[str, Any]:
    """A preset's whole file (settings plus its description and documentation links)."""
    if name not in preset_names():
        raise KeyError(name)
    return copy.deepcopy(_load(name))


def apply_presets(document: dict[str, Any]) -> dict[str, Any]:
    """The config document with every source's preset filled in under its own keys."""
    sources = document.get("sources")
    if not isinstance(sources, list):
        return document
    filled = []
    for index, source in enumerate(sources):
        if not isinstance(source, dict) or source.get("preset") is None:
            filled.append(source)
            continue
        name = source["preset"]
        if not isinstance(name, str) or name not in preset_names():
            raise PresetError(
                f"sources[{index}].preset",
                f"unknown preset {name!r}; expected one of {', '.join(preset_names())}",
            )
        base = {k: v for k, v in preset(name).items() if k not in _DOC_KEYS}
        merged = {**base, **{k: v for k, v in source.items() if k not in _MERGED}}
        for key in _MERGED:
            if key in source:
                if not isinstance(source[key], dict):
                    merged[key] = source[key]  # pydantic reports the wrong type
                else:
                    merged[key] = {**base.get(key, {}), **source[key]}
        filled.append(merged)
    return {**document, "sources": filled}
