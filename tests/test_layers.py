"""The layers point down: :mod:`tfmm.core` (the math) imports nothing of tfmm outside itself, and the kernels
(``backends/kernels``) import nothing of tfmm but each other; checked on the source, import by import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tfmm_imports(path: Path) -> list[str]:
    """Every ``tfmm...`` module a file imports (module level or inside functions)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "tfmm" or n.startswith("tfmm.")]


@pytest.mark.parametrize("folder, allowed", [("tfmm/core", ("tfmm.core",)),
                                             ("backends/kernels", ("tfmm.backends.kernels",))])
def test_lower_layers_import_only_themselves(folder, allowed):
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, folder
    offending = {str(f.relative_to(ROOT)): [n for n in tfmm_imports(f) if not n.startswith(allowed)] for f in files}
    assert {f: n for f, n in offending.items() if n} == {}
