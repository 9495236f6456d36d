"""The examples in the public docstrings run and give what they show (``python -m doctest`` semantics)."""

from __future__ import annotations

import doctest
import importlib

import pytest

import tfmm

MODULES = ["tfmm.api", "tfmm.functional", "tfmm.torch", "tfmm.finite_differences"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with tfmm.use("jax"):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
