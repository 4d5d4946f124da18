"""The package layering of docs/architecture.md, guarded: a package imports only from its own
layer or the layers below it, and no two packages import each other (directly or round a
longer cycle). Imports inside functions count as much as those at the top of a module.

The table below is the one in docs/architecture.md ("The layers"); a change to either must
change both.
"""

from __future__ import annotations

import ast
import graphlib
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "skpo"

# Lowest first. Within a layer, imports are allowed (the cycle check still applies).
LAYERS: list[set[str]] = [
    {"errors", "registry", "plugins", "jsonl", "paths", "version", "reward_range"},
    {"rows"},
    {"algorithms"},
    {"rewards", "tasks"},
    {"models"},
    {"engines"},
    {"rollout"},
    {"methods"},
    {"config"},
    {"evaluation"},
    {"training"},
    {"analysis"},
    {"commands", "cli", "api", "__init__", "__main__"},
]
LAYER_OF = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """``skpo.training.update`` → ``training``; ``skpo`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every ``skpo`` module that ``path`` imports, anywhere in the file, with its line."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from skpo import training` names a package, not an attribute
            if target == "skpo":
                found += [(f"skpo.{alias.name}", node.lineno) for alias in node.names]
    return [(t, line) for t, line in found if t == "skpo" or t.startswith("skpo.")]


def package_edges() -> dict[tuple[str, str], list[str]]:
    """(importer, imported) package pairs → where each happens (``file:line``)."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        source = package_of(module_name(path))
        for target, line in imported_modules(path):
            imported = package_of(target)
            if imported != source and target != "skpo":  # `import skpo` alone is the lazy API
                edges[(source, imported)].append(f"{path.relative_to(SRC.parent)}:{line}")
    return edges


def test_every_package_has_a_layer():
    packages = {package_of(module_name(p)) for p in SRC.rglob("*.py")}
    assert packages - set(LAYER_OF) == set(), "a new package needs a row in LAYERS and in docs/architecture.md"


def test_no_upward_import():
    upward = [f"{a} (layer {LAYER_OF[a]}) imports {b} (layer {LAYER_OF[b]}) at {', '.join(where)}"
              for (a, b), where in package_edges().items() if LAYER_OF.get(b, -1) > LAYER_OF.get(a, -1)]
    assert upward == []


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in package_edges():
        graph[a].add(b)
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as err:
        pytest.fail(f"import cycle between packages: {' -> '.join(err.args[1])}")


@pytest.mark.parametrize("source, expected", [
    ("from skpo.training import trainer\n", [("skpo.training", 1)]),
    ("def f():\n    import skpo.rollout.group\n", [("skpo.rollout.group", 2)]),
    ("from . import x\n", [("skpo.algorithms", 1)]),
    ("from ..rows import Rows\n", [("skpo.rows", 1)]),
    ("from skpo import config\n", [("skpo", 1), ("skpo.config", 1)]),
    ("import torch\n", []),
])
def test_imports_are_found_inside_functions_and_relative(tmp_path, monkeypatch, source, expected):
    """The walker sees what the checks rely on: imports in functions, relative imports."""
    module = SRC / "algorithms" / "_probe_for_layer_test.py"
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: source)
    assert imported_modules(module) == expected


def test_an_upward_import_would_be_caught(monkeypatch):
    """The check fails on the kind of edge it exists for (an algorithm importing the trainer)."""
    real = imported_modules

    def with_bad_edge(path: Path):
        found = real(path)
        return found + [("skpo.training.trainer", 1)] if path.name == "losses.py" else found

    monkeypatch.setitem(globals(), "imported_modules", with_bad_edge)
    bad = [(a, b) for (a, b) in package_edges() if LAYER_OF[b] > LAYER_OF[a]]
    assert ("algorithms", "training") in bad
