"""Where an exact-mode path sits on a decision boundary, measured with the reference's own functions.

Exact mode makes hard decisions every minute and phase: which candidate (math.md 2.4, first maximum of the
profits, the zero trade of an invalid candidate included) and whether to execute it (the gate,
``profit - gas - 0.5 arb_fee sum_i |Delta_i| p_i >= 0``). The core computes profits without cancellation
(``C sum_A wh (expm1(u) - u) >= 0``, tfmm/core/g3m.py); the reference computes ``Rt - R`` and ``-Delta . p``
directly, so its profits carry an absolute rounding error of a few ``eps * sum_i R_i p_i`` (measured: up to
~20 eps times the pool value). Where a decision's margin is below that, the two backends may decide
differently and their paths part; both are right to rounding.

The common case (parity_tests/test_parity_jax_reference.py, seed 777): with gas = arb_fee = 0, Phase A
leaves the pool at the edge of its no-arbitrage band, and Phase B (weights moved a little) finds a tiny
wrong-direction candidate that the 1e-9 invariant tolerance admits (math.md 2.3), whose exact profit is
second order (~1e-10 USD on a 1e6 USD pool) and whose gate margin is therefore that profit: the core
executes it, the reference's ``-Delta . p`` rounds to ~-7e-10 and it keeps the zero trade.

:func:`boundary_margins` replays the reference's exact path (its reserves, weights and prices), phase by
phase, with the reference's candidate functions, and returns each phase's gate margin and selection gap
relative to the pool value, counting only decisions whose alternatives differ by more than ``small`` of
some reserve (a flip smaller than that cannot move reserves by a visible amount).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from tfmm.reference import pool as rp

# A decision margin below TIE times the pool value is within reach of the reference's rounding (a few eps
# times the pool value, ~4500 eps here): the two backends may decide either way.
TIE = 1e-12
# A decision whose alternatives differ by at most SMALL of every reserve moves reserves by less than that.
SMALL = 1e-11


@numba.njit(cache=True)
def _margins_kernel(reserves, weights, prices, fee, gas, arb_fee, signatures, tie, small):
    T, n = weights.shape
    S = signatures.shape[0]
    cands, profits = np.empty((S, n)), np.empty(S)
    log_w, inv_wa, log_wa = np.empty(n), np.empty(S), np.empty(S)
    log_r, inv_r, log_p, inv_p = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    trade, r = np.empty(n), np.empty(n)
    gate = np.full((T, 2), np.inf)  # |gate margin| / pool value of the chosen trade
    sel = np.full((T, 2), np.inf)  # best-minus-other profit / pool value of a competing candidate
    for t in range(1, T):
        p = prices[t]
        for i in range(n):
            r[i] = reserves[t - 1, i]
        rp._logs_and_inverses(p, log_p, inv_p)
        for ph in range(2):
            w = weights[t - 1 + ph]
            rp._weights_row(w, signatures, log_w, inv_wa, log_wa)
            rp._logs_and_inverses(r, log_r, inv_r)
            value = 0.0
            for i in range(n):
                value += r[i] * p[i]
            if fee[t] == 0.0:
                profit = rp._zero_fee_trade_into(r, log_r, w, log_w, p, log_p, inv_p, trade)
            else:
                best = rp._all_candidates(r, log_r, inv_r, w, log_w, inv_wa, log_wa, p, log_p, inv_p,
                                          1.0 - fee[t], math.log(1.0 - fee[t]), signatures, cands, profits)
                profit = profits[best]
                for i in range(n):
                    trade[i] = cands[best, i]
            cost, size = 0.0, 0.0
            for i in range(n):
                cost += abs(trade[i]) * p[i]
                size = max(size, abs(trade[i]) * inv_r[i])
            margin = profit - gas[t] - 0.5 * arb_fee[t] * cost
            if size > small:
                gate[t, ph] = abs(margin) / value
            if fee[t] != 0.0:
                for k in range(S):
                    if k == best or profits[best] - profits[k] >= tie * value:
                        continue
                    diff, cost_k = 0.0, 0.0
                    for i in range(n):
                        diff = max(diff, abs(cands[k, i] - trade[i]) * inv_r[i])
                        cost_k += abs(cands[k, i]) * p[i]
                    margin_k = profits[k] - gas[t] - 0.5 * arb_fee[t] * cost_k
                    # a tie matters when the alternatives differ and either could be executed
                    if diff > small and max(margin, margin_k) >= -tie * value:
                        sel[t, ph] = min(sel[t, ph], (profits[best] - profits[k]) / value)
            if margin >= 0.0:
                for i in range(n):
                    r[i] += trade[i]
    return gate, sel


def boundary_margins(sim) -> tuple[np.ndarray, np.ndarray]:
    """(gate, selection) margins (T, 2) of a reference exact-mode simulation (unbatched), relative to the
    pool value; +inf where the phase has no decision that could move reserves by more than SMALL."""
    req = sim.request
    s, T = int(req.starts[0]), sim.reserves.shape[0]
    n = sim.reserves.shape[1]
    sigs = rp.signature_matrix(n, req.pool.signature_set(n))
    per_step = [np.ascontiguousarray(np.asarray(x, dtype=np.float64)[s:s + T])
                for x in (req.fee, req.gas, req.arb_fee)]
    args = [np.ascontiguousarray(np.asarray(x, dtype=np.float64)) for x in (sim.reserves, sim.weights, sim.prices)]
    return _margins_kernel(*args, *per_step, sigs, TIE, SMALL)


def near_boundary(sim) -> bool:
    """Whether some decision of the reference's exact path is within TIE of the pool value of its boundary."""
    gate, sel = boundary_margins(sim)
    return bool((gate < TIE).any() or (sel < TIE).any())





def step_near_boundary(reserves, weights, prices, fee, gas, arb_fee, signatures, small: float = 1e-13) -> bool:
    """Whether one minute (rows 0 -> 1 of the reference's own path) has a decision within TIE of the pool
    value of its boundary, counting flips that move some reserve by more than ``small`` of it (a one-step
    comparison at rtol 1e-12 sees flips far smaller than a trajectory's SMALL)."""
    T = np.asarray(reserves).shape[0]
    per_step = [np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), (T,))) for x in (fee, gas, arb_fee)]
    args = [np.ascontiguousarray(np.asarray(x, dtype=np.float64)) for x in (reserves, weights, prices)]
    gate, sel = _margins_kernel(*args, *per_step, np.ascontiguousarray(signatures, dtype=np.int64), TIE, small)
    return bool((gate < TIE).any() or (sel < TIE).any())
__all__ = ["TIE", "SMALL", "boundary_margins", "near_boundary", "step_near_boundary"]
