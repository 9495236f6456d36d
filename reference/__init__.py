"""The reference simulator (installed as ``tfmm.reference``): plain Numba loops in float64, the oracle
that the array backends are tested against, and the "reference" backend (``tfmm.use("reference")``).

It is independent of the simulation math in :mod:`tfmm.core` and of the array backends: it imports only
the data contracts (:mod:`tfmm.specs`, :mod:`tfmm.api`, :mod:`tfmm.data`), numpy, numba and math, so it
loads no ``tfmm.core`` module beyond those that ``import tfmm`` loads itself (the memory-length helpers
of the specs), and neither jax nor torch.
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
