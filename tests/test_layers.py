"""The import arrows point one way: runtime and types at the bottom, engine above data, models and distillers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distillbench"

# layer -> the distillbench modules it must never import
FORBIDDEN = {
    "data": ("distillbench.engine", "distillbench.cli", "distillbench.build", "distillbench.jobs"),
    "distillers": ("distillbench.engine", "distillbench.cli", "distillbench.build", "distillbench.data"),
    "models": ("distillbench.engine", "distillbench.cli", "distillbench.build", "distillbench.distillers"),
    "runtime": ("distillbench.engine", "distillbench.data", "distillbench.models", "distillbench.distillers"),
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_lower_layer_never_imports_a_higher_one(layer):
    offending = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for name in sorted(imported_modules(path))
        if name.startswith(FORBIDDEN[layer])
    ]
    assert offending == []


def test_the_shared_types_module_imports_nothing_of_distillbench():
    assert not [n for n in imported_modules(PACKAGE / "types.py") if n.startswith("distillbench")]


def test_importing_every_distiller_loads_neither_timm_nor_the_engine():
    code = ("import sys, pkgutil, importlib, distillbench.distillers as d\n"
            "[importlib.import_module(f'distillbench.distillers.{m.name}') for m in pkgutil.iter_modules(d.__path__)]\n"
            "print(sorted(m for m in sys.modules if m == 'timm' or m.startswith('distillbench.engine')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
