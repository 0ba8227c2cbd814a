"""Reading ``cdm.yaml``: which file, presets, validation, and paths resolved against its folder.

A mistake in the config is the most common way a nightly run goes wrong, so every problem is
reported as one line naming the file and the key (``cdm.yaml: sources[1].kind: ...``) before
anything runs. Relative paths are resolved against the config file's folder, never the current
working directory, so the same file works from cron, the CLI and the Dagster UI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cdm_pipeline.config.checks import check_config
from cdm_pipeline.config.errors import ConfigError
from cdm_pipeline.config.models import DEFAULT_CONFIG_NAME, SOURCE_KINDS, CdmConfig

CONFIG_ENV_VAR = "CDM_CONFIG"
PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
# pydantic names union branches in an error's location; they mean nothing to a user.
_UNION_BRANCH_NAMES = ("str", "ColumnSpec", "literal[" + ",".join(repr(k) for k in SOURCE_KINDS) + "]")


def config_path(explicit: Path | str | None = None) -> Path:
    """Which config file to read: the one rule for the CLI, the UI and every run's processes.

    ``--config`` (``explicit``) wins, then ``$CDM_CONFIG``, then ``cdm.yaml`` in the current folder,
    then the one at the project root (the demo's); when none exists, ``cdm.yaml`` (so the error
    names the file a user would create).
    """
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV_VAR):
        return Path(os.environ[CONFIG_ENV_VAR])
    here = Path(DEFAULT_CONFIG_NAME)
    if here.exists():
        return here
    root = PROJECT_ROOT / DEFAULT_CONFIG_NAME
    return root if root.exists() else here


def load_config(path: Path | str | None = None) -> CdmConfig:
    """Read, validate and resolve a config file.

    Raises:
        ConfigError: on any problem, with the file and key in its one-line message.
    """
    path = config_path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(shown, "", "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(shown, "", f"cannot read config file ({exc.__class__.__name__})") from None
    try:
        document = yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader that refuses alias bombs
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(shown, where, f"invalid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(shown, "", "expected a mapping of keys at the top level")

    from cdm_pipeline.presets import PresetError, apply_presets

    try:
        document = apply_presets(document)
    except PresetError as exc:
        raise ConfigError(shown, exc.key, exc.message) from None
    try:
        config = CdmConfig.model_validate(document)
    except ValidationError as exc:
        raise _first_error(shown, exc) from None

    check_config(shown, config)
    base = path.resolve().parent
    identity = config.identity.model_copy(
        update={
            "model_path": _resolve(base, config.identity.model_path),
            "overrides_path": _resolve(base, config.identity.overrides_path),
            "truth_path": (
                None if config.identity.truth_path is None else _resolve(base, config.identity.truth_path)
            ),
        }
    )
    return config.model_copy(
        update={
            "identity": identity,
            "warehouse": _resolve(base, config.warehouse),
            "landing_dir": _resolve(base, config.landing_dir),
            "exports": config.exports.model_copy(update={"dir": _resolve(base, config.exports.dir)}),
            "privacy": config.privacy.model_copy(update={
                "requests_path": _resolve(base, config.privacy.requests_path),
                "access_dir": _resolve(base, config.privacy.access_dir),
            }),
            "reports_dir": _resolve(base, config.reports_dir),
            "security": config.security.model_copy(update={
                name: _resolve(base, value) for name in ("key_file", "extension_directory", "analyst_warehouse")
                if (value := getattr(config.security, name)) is not None
            }),
            "backups": config.backups.model_copy(update={"dir": _resolve(base, config.backups.dir)}),
            "engine": config.engine.model_copy(update={"spark": config.engine.spark.model_copy(
                update={"work_dir": _resolve(base, config.engine.spark.work_dir)}
            )}),
            "config_path": path.resolve(),
        }
    )


# A real config expands to a few thousand nodes; aliases that multiply past this are an alias bomb
# ("billion laughs"), refused before anything walks, copies or prints the expanded document.
MAX_EXPANDED_NODES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents whose aliases expand past MAX_EXPANDED_NODES."""

    def compose_document(self):
        node = super().compose_document()
        if node is not None and _expanded_size(node) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None, None,
                f"aliases expand the document past {MAX_EXPANDED_NODES:,} values (an alias bomb?)",
                node.start_mark,
            )
        return node


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias expanded: each shared node is sized once, not walked
    once per alias. A recursive alias counts as too large."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the current path: a child among them is a recursive alias
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes.get(id(child), MAX_EXPANDED_NODES + 1) for child in children)
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes and id(child) not in open_nodes)
    return sizes[id(root)]


def _resolve(base: Path, value: Path) -> Path:
    return value if value.is_absolute() else (base / value).resolve()


def _key_path(loc: tuple[Any, ...]) -> str:
    key = ""
    for part in loc:
        if isinstance(part, int):
            key += f"[{part}]"
        elif part in _UNION_BRANCH_NAMES:
            continue
        else:
            key += f".{part}" if key else str(part)
    return key


def _first_error(file: str, exc: ValidationError) -> ConfigError:
    """Turn pydantic's report into one line: the first problem, in the user's vocabulary."""
    errors = exc.errors()
    # A union (plain string or {column:, format:}) fails on both branches; prefer the mapping
    # branch's complaint when the user wrote a mapping.
    candidates = [e for e in errors if "ColumnSpec" in e["loc"]] or errors
    # A misspelt key also makes the right one "missing": name the misspelling.
    error = next((e for e in candidates if e["type"] == "extra_forbidden"), candidates[0])
    key = _key_path(error["loc"])
    kind = error["type"]
    value = error.get("input")
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"unknown value {value!r}; expected one of {expected}"
    elif isinstance(value, (dict, list)):
        message = error["msg"]
    else:
        message = f"{error['msg']} (got {value!r})"
    return ConfigError(file, key, message)


