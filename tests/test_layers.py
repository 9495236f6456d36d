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


def test_reference_imports_only_the_leaf_types():
    """The oracle depends on tfmm only through the records it receives and returns."""
    files = sorted((ROOT / "reference").rglob("*.py"))
    allowed = ("tfmm.reference", "tfmm.records", "tfmm.finite_differences")
    offending = {str(f.relative_to(ROOT)): [n for n in tfmm_imports(f) if not n.startswith(allowed)] for f in files}
    assert {f: n for f, n in offending.items() if n} == {}


def test_records_module_is_a_leaf():
    """tfmm.records imports no other tfmm module at run time (type-checking imports aside)."""
    tree = ast.parse((ROOT / "tfmm" / "records.py").read_text())
    runtime = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    modules = [a.name for n in runtime if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in runtime if isinstance(n, ast.ImportFrom) and n.module]
    assert not [m for m in modules if m == "tfmm" or m.startswith("tfmm.")]
    assert {m.split(".")[0] for m in modules} <= {"__future__", "dataclasses", "typing", "numpy"}


MAX_FUNCTION_LINES = 60


def function_lengths(path: Path) -> list[tuple[int, str, int]]:
    """(lines of code, name, first line) of every function in ``path``: from ``def`` to its last line, the
    docstring not counted (Args/Returns sections and doctests are documentation, not length)."""
    rows = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = node.body[0] if node.body and isinstance(node.body[0], ast.Expr) else None
            doc_lines = (doc.end_lineno - doc.lineno + 1
                         if doc is not None and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)
                         else 0)
            rows.append((node.end_lineno - node.lineno + 1 - doc_lines, node.name, node.lineno))
    return rows


@pytest.mark.parametrize("folder", ["tfmm", "backends"])
def test_no_function_is_longer_than_sixty_lines(folder):
    long = {f"{path.relative_to(ROOT)}:{line} {name}": n
            for path in sorted((ROOT / folder).rglob("*.py")) for n, name, line in function_lengths(path)
            if n > MAX_FUNCTION_LINES}
    assert long == {}
