"""Imports run one way: no module of the package imports, even lazily inside a function, a module
that imports it back, and each layer imports only the layers below it.

Read from the source (every ``import`` statement, also inside functions; ``if TYPE_CHECKING:``
blocks are for annotations only and are left out), so a cycle fails here before it fails a run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cdm_pipeline

PACKAGE = Path(cdm_pipeline.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(filter(None, (_resolve(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                if target:
                    found.add(target)
    found.discard(module)
    return found


GRAPH = {module: _imports(module) for module in MODULES}


def _cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    return groups


def test_the_package_has_no_import_cycle():
    assert _cycles() == []


def test_the_cycle_finder_finds_a_cycle():
    GRAPH["cdm_pipeline.config.models"].add("cdm_pipeline.lib.catalog")
    GRAPH["cdm_pipeline.lib.catalog"].add("cdm_pipeline.config.models")
    try:
        assert any({"cdm_pipeline.config.models", "cdm_pipeline.lib.catalog"} <= set(group) for group in _cycles())
    finally:
        GRAPH["cdm_pipeline.config.models"].discard("cdm_pipeline.lib.catalog")
        GRAPH["cdm_pipeline.lib.catalog"].discard("cdm_pipeline.config.models")


def _importers_of(prefixes: tuple[str, ...], among: str) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module == among or module.startswith(among + ".")
        for target in targets
        if any(target == p or target.startswith(p + ".") for p in prefixes)
    )


# Who may not import whom: (modules, what they must not import, why).
RULES = [
    ("cdm_pipeline.config.models", ("cdm_pipeline",), "the settings models are a leaf"),
    ("cdm_pipeline.lib", ("cdm_pipeline.defs", "cdm_pipeline.cli", "cdm_pipeline.runner",
                          "cdm_pipeline.definitions", "cdm_pipeline.resources"),
     "library code works without Dagster definitions or the CLI"),
    ("cdm_pipeline.lib.personal_data", ("cdm_pipeline.lib.identity", "cdm_pipeline.lib.marts",
                                        "cdm_pipeline.lib.exports", "cdm_pipeline.lib.privacy",
                                        "cdm_pipeline.lib.reports", "cdm_pipeline.lib.extract"),
     "the personal-data primitives sit below every stage"),
    ("cdm_pipeline.lib.extract", ("cdm_pipeline.lib.staging.build", "cdm_pipeline.lib.identity",
                                  "cdm_pipeline.lib.marts", "cdm_pipeline.lib.privacy"),
     "extract is the first stage"),
    ("cdm_pipeline.lib.identity", ("cdm_pipeline.lib.marts", "cdm_pipeline.lib.exports",
                                   "cdm_pipeline.lib.privacy", "cdm_pipeline.lib.reports"),
     "identity comes before marts, exports, privacy operations and reports"),
    ("cdm_pipeline.lib.marts", ("cdm_pipeline.lib.exports", "cdm_pipeline.lib.privacy", "cdm_pipeline.lib.reports"),
     "marts come before exports, privacy operations and reports"),
    ("cdm_pipeline.lib.catalog", ("cdm_pipeline.config", "cdm_pipeline.lib.identity", "cdm_pipeline.lib.marts"),
     "the catalogue names tables; it knows no stage"),
]


@pytest.mark.parametrize("among, forbidden, why", RULES, ids=[rule[0] for rule in RULES])
def test_layers_import_only_what_lies_below_them(among, forbidden, why):
    assert _importers_of(forbidden, among) == [], why


def test_defs_modules_take_asset_keys_from_the_catalogue_not_from_each_other():
    shared = {"cdm_pipeline.defs", "cdm_pipeline.defs.step_failures", "cdm_pipeline.defs.jobs",
              "cdm_pipeline.defs.resources", "cdm_pipeline.defs.check_results"}
    crossing = sorted(
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith("cdm_pipeline.defs.")
        for target in targets
        if target.startswith("cdm_pipeline.defs.") and target not in shared
        and target.split(".")[2] != module.split(".")[2]
    )
    assert crossing == []
