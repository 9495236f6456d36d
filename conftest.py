"""Test configuration shared by tests/ and parity_tests/: hypothesis profiles, the array-backend fixture
``bk``, the shared price data.

Hypothesis profiles (``HYPOTHESIS_PROFILE``; default ``ci`` when ``CI`` is set, else ``dev``):

- ``dev`` (40 examples) and ``ci`` (25): quick runs. A property that is expensive per example may ask for
  fewer under these two only (``parity_tests/parity_settings.py``); under ``thorough`` the profile governs.
- ``thorough`` (1000 examples per property): ``make parity`` (with ``--hypothesis-show-statistics``, so the
  run prints how many examples each property executed).

Every profile prints the ``@reproduce_failure`` blob of a failing example.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

import tfmm

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("ci", max_examples=25, **_COMMON)
settings.register_profile("dev", max_examples=40, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev")
settings.load_profile(PROFILE)

REPO = Path(__file__).resolve().parent
SHARED_DATA = REPO.parent / "shared" / "data"

# The array backends the core runs on (the reference is the Numba oracle, not an array backend).
ARRAY_BACKENDS = ("jax", "torch")


@pytest.fixture(scope="session", params=ARRAY_BACKENDS)
def bk(request):
    """Each installed array backend in turn, from the public ``tfmm.get_backend(name)``. A backend whose
    dependencies are missing is reported as skipped with the reason (never dropped silently).
    Session-scoped: one instance per backend, and usable by hypothesis tests."""
    name = request.param
    if name not in tfmm.available_backends():
        try:
            tfmm.get_backend(name)
        except ImportError as exc:  # names the missing modules and the pip extra that installs them
            pytest.skip(f"backend {name!r} unavailable: {exc}")
        pytest.skip(f"backend {name!r} unavailable")
    return tfmm.get_backend(name)


@pytest.fixture
def shared_data() -> Path:
    """The shared real price data folder; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared price data not found at {SHARED_DATA}")
    return SHARED_DATA
