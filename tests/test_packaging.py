"""The distribution installs backends/ and reference/ as tfmm.backends and tfmm.reference only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_regular_install_layout(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "--target", str(target), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    top = {p.name for p in target.iterdir()}
    assert "tfmm" in top
    assert "backends" not in top and "reference" not in top and "data" not in top
    assert (target / "tfmm" / "backends" / "jax" / "backend.py").is_file()
    assert (target / "tfmm" / "reference" / "__init__.py").is_file()
    assert (target / "tfmm" / "_bundled" / "README.md").is_file()
    assert list((target / "tfmm" / "_bundled").glob("*.parquet"))
    code = "import tfmm, tfmm.reference, tfmm.backends.jax; print(tfmm.reference.__file__)"
    # -S: no site processing, so the editable install's path hook (a .pth file) cannot shadow the target;
    # the dependencies come from this interpreter's site-packages, placed after the target.
    import sysconfig

    path = f"{target}:{sysconfig.get_paths()['purelib']}:{sysconfig.get_paths()['platlib']}"
    out = subprocess.run([sys.executable, "-S", "-c", code], env={"PYTHONPATH": path}, cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert str(target) in out.stdout


def test_editable_install_maps_packages():
    import tfmm.backends
    import tfmm.core

    assert Path(tfmm.backends.__file__).resolve().parent == REPO / "backends"
    assert Path(tfmm.core.__file__).resolve().parent == REPO / "tfmm" / "core"
