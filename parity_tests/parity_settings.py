"""How many examples each parity property runs: the hypothesis profile governs (root conftest.py).

``HYPOTHESIS_PROFILE=thorough`` (``make parity``) runs every property with the profile's ``max_examples``
(>= 1000). Under the quick profiles, ``ci`` and ``dev``, a property that is expensive per example (both
backends simulate a new bout of up to 2,880 minutes, and JAX compiles each new shape) asks for fewer
examples with :func:`parity_settings`; ``TFMM_PARITY_EXAMPLES``, when set, replaces those quick caps (up or
down), and is ignored under any other profile, so it can no longer make ``thorough`` run fewer examples.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

QUICK_PROFILES = ("ci", "dev")


def profile_name() -> str:
    """The loaded hypothesis profile (the root conftest.py loads ``HYPOTHESIS_PROFILE``)."""
    return settings.get_current_profile_name()


def parity_settings(ci: int, dev: int) -> settings:
    """Settings for one parity property: under ``ci`` / ``dev`` at most ``ci`` / ``dev`` examples (or
    ``TFMM_PARITY_EXAMPLES``), otherwise the profile's ``max_examples``. No deadline (JAX compiles inside
    examples) and no health checks (the strategies draw whole scenarios, which hypothesis deems slow)."""
    base = settings()  # the loaded profile
    name = profile_name()
    n = base.max_examples
    if name in QUICK_PROFILES:
        override = os.environ.get("TFMM_PARITY_EXAMPLES")
        n = int(override) if override else min(n, ci if name == "ci" else dev)
    return settings(base, max_examples=n, deadline=None, suppress_health_check=list(HealthCheck))


__all__ = ["QUICK_PROFILES", "profile_name", "parity_settings"]
