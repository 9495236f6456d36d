"""One bout of a TFMM pool composed from the reference pieces (docs/math.md sections 1-3), in float64.

For a bout with start ``s`` and length ``B`` (``T_out = B - 1`` rows), chunk period ``c`` and
interpolation period ``I``:

1. rule outputs on the chunk prices of the whole loaded array, ``pbar_m = p_{m c}`` (``M`` rows):
   ``(M - 1, n)`` outputs, computed once per parameter set (:func:`rule_outputs_for`);
2. ``S = s // c``, ``Nc = (B - 2) // c`` (``= ceil((B - 1) / c) - 1``); the bout uses outputs ``S .. S+Nc-1``;
3. coarse recursion (``kind`` "delta" for the momentum family, "weight" for min_variance with
   ``alpha = sigmoid(logit_lambda_2)``) with guardrails ``pool.weight_bounds(n)`` and the speed limit,
   then fine (per-minute) weights with the virtual first chunk of ``w_init``; balancer and hodl hold
   ``w_init``;
4. ``P = p[s : s + T_out]``, ``R_0 = V_0 w_0 / P_0``; hodl keeps ``R_0``, every other strategy runs the
   two-phase arbitrage scan of :func:`tfmm.reference.pool.simulate_reserves` (exact or smooth);
5. values ``V_t = sum_i R_{t,i} P_{t,i}`` (USD).

The smooth mode's temperatures come from ``request.smoothing`` (docs/smooth_mode.md). A pool with no fee,
gas or arbitrage cost at any minute has no gate to smooth: its reserves are the closed form of math.md 2.2
in both modes (:func:`tfmm.reference.pool.zero_fee_closed_form`, a plain loop). Otherwise minutes with a
zero fee take the zero-fee trade through the gate (docs/smooth_mode.md).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from tfmm.records import SimulationRequest

from . import pool as pool_mod
from .strategies import rule_outputs
from .weights import coarse_weights, fine_weights


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), element-wise, without overflow."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _params_of(request: SimulationRequest, params: Mapping[str, Any] | None) -> dict[str, np.ndarray]:
    """One parameter set, name -> (n,) float64."""
    if params is None:
        if request.strategy.n_sets is not None:
            raise ValueError("the strategy has a parameter-set axis: pass one set's params")
        params = request.strategy.params
    out = {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in params.items()}
    for k, v in out.items():
        if v.shape != (request.n_assets,):
            raise ValueError(f"params[{k!r}] must have shape ({request.n_assets},), got {v.shape}")
    return out


def rule_outputs_for(request: SimulationRequest, params: Mapping[str, Any] | None) -> np.ndarray | None:
    """(M - 1, n) rule outputs on ``request.prices[::c]`` (None for balancer and hodl)."""
    strategy = request.strategy
    if strategy.rule_kind == "constant":
        return None
    c = request.pool.chunk_period
    return rule_outputs(strategy.name, request.prices[::c], _params_of(request, params), c, strategy.beta,
                        strategy.max_memory_days)


def bout_weights(request: SimulationRequest, start: int, params: Mapping[str, Any] | None,
                 outputs: np.ndarray | None = None) -> np.ndarray:
    """(B - 1, n) per-minute weights of the bout starting at row ``start`` (math.md 3.1-3.3)."""
    strategy, pool = request.strategy, request.pool
    n, n_out = request.n_assets, request.n_out
    w_init = np.asarray(strategy.initial_weights, dtype=np.float64)
    if strategy.rule_kind == "constant":
        return np.tile(w_init, (n_out, 1))
    params = _params_of(request, params)
    if outputs is None:
        outputs = rule_outputs_for(request, params)
    c, interval = pool.chunk_period, pool.interpolation_minutes
    first_chunk, n_chunks = start // c, (request.length - 2) // c
    bout_outputs = outputs[first_chunk:first_chunk + n_chunks]
    if bout_outputs.shape[0] != n_chunks:
        raise ValueError(f"bout start={start}, length={request.length} needs rule outputs up to "
                         f"{first_chunk + n_chunks - 1}, only {outputs.shape[0]} exist")
    kind = strategy.rule_kind
    alpha = _sigmoid(params["logit_lambda_2"]) if kind == "weight" else None
    w_min, w_max = pool.weight_bounds(n)
    a, delta = coarse_weights(bout_outputs, w_init, kind, alpha, w_min, w_max, pool.max_change, interval,
                              smooth=request.mode == "smooth", temperature=request.smoothing.weight_temperature)
    return fine_weights(w_init, a, delta, c, interval, pool.interpolation, n_out)


def simulate_bout(request: SimulationRequest, start: int, params: Mapping[str, Any] | None = None,
                  outputs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One bout for one parameter set (``None``: the strategy's own, unbatched params).

    Returns numpy arrays: reserves (B-1, n) tokens, weights (B-1, n), values (B-1,) USD, trades (B-1, n)
    (both phases' executed reserve changes), fees (B-1,) USD collected, prices (B-1, n) the rows used,
    timestamps (B-1,). ``outputs`` may pass precomputed :func:`rule_outputs_for` (shared by all starts).
    """
    start = int(start)
    n_out = request.n_out
    if start < 0 or start + n_out > request.n_rows:
        raise ValueError(f"bout start={start}, length={request.length} needs rows up to {start + n_out - 1} "
                         f"but prices have {request.n_rows} rows")
    pool, smoothing = request.pool, request.smoothing
    rows = slice(start, start + n_out)
    weights = bout_weights(request, start, params, outputs)
    prices = np.ascontiguousarray(request.prices[rows], dtype=np.float64)
    r0 = pool.initial_value * weights[0] / prices[0]
    if request.strategy.name == "hodl":
        reserves = pool_mod.hodl_reserves(r0, n_out)
        trades, fees = np.zeros_like(reserves), np.zeros(n_out)
    elif not pool.has_fees:
        reserves = pool_mod.zero_fee_closed_form(r0, weights, prices)
        trades = np.concatenate([np.zeros_like(reserves[:1]), np.diff(reserves, axis=0)])
        fees = np.zeros(n_out)
    else:
        n = request.n_assets
        reserves, trades, fees = pool_mod.simulate_reserves(
            r0, weights, prices, request.fee[rows], request.gas[rows], request.arb_fee[rows],
            pool_mod.signature_matrix(n, pool.signature_set(n)), smooth=request.mode == "smooth",
            selection=smoothing.selection, gate_temperature=smoothing.gate_temperature,
            selection_temperature=smoothing.selection_temperature, abs_epsilon=smoothing.abs_epsilon,
        )
    values = np.sum(reserves * prices, axis=1)
    return {"reserves": reserves, "weights": weights, "values": values, "trades": trades, "fees": fees,
            "prices": prices, "timestamps": np.asarray(request.timestamps[rows])}


__all__ = ["rule_outputs_for", "bout_weights", "simulate_bout"]
