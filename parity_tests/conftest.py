"""After each property, every backend's compiled functions are dropped: a property compiles at most its
palette of static settings (strategies.py), but a worker process that runs many properties would otherwise
keep them all, and on XLA:CPU each compiled function holds about 110 memory mappings (a thorough run crashed
in XLA compilation at 42,000 of Linux's 65,530 per process)."""

from __future__ import annotations

import pytest

from tfmm.backend import loaded_backends


@pytest.fixture(autouse=True)
def free_compiled_functions():
    yield
    for backend in loaded_backends():
        clear = getattr(backend, "clear_compiled", None)
        if clear is not None:
            clear()
