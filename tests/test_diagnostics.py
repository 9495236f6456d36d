"""Boundary statistics of exact-mode bouts (tfmm.diagnostics): what the pool executes, phase by phase."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.data import synthetic_prices
from tfmm.diagnostics import boundary_statistics, phase_margins

pytest.importorskip("jax")


def test_zero_fee_minutes_have_one_candidate_and_no_selection_boundary():
    """At a minute with fee 0 the pool executes the single zero-fee trade, so no other candidate competes:
    the selection margin is +inf and nothing is near the selection boundary (comparing the signatures at
    gamma = 1 instead, two equal trades with two assets, reported every phase as a tie)."""
    bk = tfmm.get_backend("jax")
    prices = synthetic_prices(n_assets=2, n_minutes=3 * 1440, seed=1, vol=0.8)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20, chunk_period=60)
    with tfmm.use("jax"):
        stats = boundary_statistics(prices, strategy, tfmm.Pool(fee=0.0, chunk_period=60), start=1440, length=1440)
    assert stats["active_phases"] > 0.9 * stats["phases"]  # a fee-free pool trades almost every phase
    assert stats["selection_near_boundary"] == 0.0
    from tfmm.core.g3m import signature_matrix

    w = np.array([0.5, 0.5])
    m = phase_margins(bk.asarray([1.0, 100.0]), bk.asarray(w), bk.asarray([0.6, 0.4]), bk.asarray([110.0, 1.0]),
                      bk.asarray(0.0), bk.asarray(0.0), bk.asarray(0.0), signature_matrix(2, "all"), bk)
    assert np.all(np.isinf(np.asarray(m["selection"]))) and np.all(np.asarray(m["active"]))
