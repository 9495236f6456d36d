"""The backend registry: lazy imports, use() as a context manager, errors."""

from __future__ import annotations

import contextvars
import subprocess
import sys

import pytest

import tfmm
from tfmm import backend as backend_mod


def test_import_tfmm_imports_neither_jax_nor_torch():
    code = (
        "import sys, tfmm; "
        "bad = [m for m in ('jax', 'torch', 'numba', 'tfmm.backends.jax', 'tfmm.reference') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_available_backends_lists_installed():
    names = tfmm.available_backends()
    assert "jax" in names and "reference" in names


def test_use_sets_and_context_manager_restores():
    with tfmm.use("reference") as bk:
        assert bk.name == "reference"
        assert tfmm.get_backend().name == "reference"
        with tfmm.use("jax"):
            assert tfmm.get_backend().name == "jax"
        assert tfmm.get_backend().name == "reference"


def test_use_without_with_sets_current():
    def use_reference_without_with():
        tfmm.use("reference")
        return tfmm.get_backend().name

    before = tfmm.get_backend().name
    assert contextvars.copy_context().run(use_reference_without_with) == "reference"
    assert tfmm.get_backend().name == before  # the context it ran in was a copy


def test_default_backend_is_jax_when_installed():
    code = "import tfmm; print(tfmm.get_backend().name, tfmm.backend.default_backend_name())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jax", "jax"]


def test_unknown_backend_lists_known():
    with pytest.raises(ValueError, match=r"unknown backend 'tensorflow'.*jax.*reference.*torch"):
        tfmm.use("tensorflow")


def test_missing_dependency_names_extra():
    backend_mod.register_backend("needs_missing", "tfmm.nonexistent", requires=("no_such_module_xyz",), extra="fancy")
    try:
        assert "needs_missing" not in tfmm.available_backends()
        with pytest.raises(ImportError, match=r"pip install 'tfmm\[fancy\]'"):
            tfmm.use("needs_missing")
    finally:
        backend_mod.unregister_backend("needs_missing")
    assert "needs_missing" not in tfmm.available_backends()


def test_jax_backend_satisfies_protocol():
    with tfmm.use("jax") as bk:
        assert isinstance(bk, backend_mod.Backend)
        import jax

        assert jax.config.read("jax_enable_x64")
