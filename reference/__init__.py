"""The reference simulator (installed as ``tfmm.reference``): plain Numba loops in float64, the oracle
that the array backends are tested against, and the "reference" backend (``tfmm.use("reference")``).

It is independent of the simulation math in :mod:`tfmm.core` and of the array backends: of tfmm it imports
only the leaf modules :mod:`tfmm.records` (the request it executes and the simulation it returns) and
:mod:`tfmm.finite_differences` (its gradients); the rest is numpy, numba and math. It reads the specs (pool, strategy,
smoothing) through the request, by attribute, and loads neither jax nor torch.
"""

from tfmm.reference.backend import ReferenceBackend, make_backend
from tfmm.reference.pool import (
    arbitrage_step,
    candidate_trade,
    hodl_reserves,
    signature_matrix,
    simulate_reserves,
    zero_fee_closed_form,
)
from tfmm.reference.simulate import bout_weights, rule_outputs_for, simulate_bout

__all__ = [
    "ReferenceBackend", "make_backend", "arbitrage_step", "candidate_trade", "hodl_reserves",
    "signature_matrix", "simulate_reserves", "zero_fee_closed_form", "bout_weights", "rule_outputs_for",
    "simulate_bout",
]
