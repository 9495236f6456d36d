"""One bout of a TFMM pool, composed from the pieces of :mod:`tfmm.core` (docs/math.md sections 1-3).

Pipeline for a bout with start ``s`` and length ``B`` (``T_out = B - 1`` rows):

1. rule outputs on the chunk prices of the whole loaded array (``pbar_m = p_{m c}``), computed once per
   parameter set by :func:`rule_outputs_for` and shared by every bout;
2. ``S = s // c``, ``Nc = (B - 2) // c`` (``= ceil((B - 1) / c) - 1``): the bout uses outputs ``S .. S+Nc-1``;
3. coarse recursion with guardrails and speed limit, then fine (per-minute) weights with the virtual first
   chunk of ``w_init``;
4. reserves from ``R_0 = V_0 w_0 / P_0``: the closed form when the pool has no fee, gas or arbitrage cost,
   else the per-minute two-phase arbitrage scan;
5. values ``V_t = sum_i R_{t,i} P_{t,i}`` (USD).

Everything here is traceable (jit/vmap) given a static :class:`BoutConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tfmm.core import g3m, weights as weights_mod
from tfmm.core.strategies import rule_outputs


class Temperatures(Protocol):
    """What the core reads of ``tfmm.Smoothing`` (the validated spec): smooth mode's temperatures."""

    gate_temperature: float
    selection_temperature: float
    selection: str
    abs_epsilon: float
    weight_temperature: float


@dataclass(frozen=True)
class BoutConfig:
    """Static (hashable) description of a bout: changing it recompiles, changing arrays does not."""

    strategy: str
    rule_kind: str  # "delta" | "weight" | "constant"
    n_assets: int
    length: int  # B
    chunk_period: int
    interpolation_period: int
    interpolation: str
    w_min: float
    w_max: float
    max_change: float
    initial_value: float
    signatures: tuple[tuple[int, ...], ...]
    smooth: bool
    smoothing: Temperatures
    has_fees: bool
    beta: float
    max_memory_days: float
    checkpoint_every: int | None = 4096

    @property
    def n_out(self) -> int:
        return self.length - 1

    @property
    def n_chunks(self) -> int:
        """Nc = ceil((B - 1) / c) - 1 = (B - 2) // c."""
        return (self.length - 2) // self.chunk_period


def rule_outputs_for(chunk_prices: Any, params: dict[str, Any], cfg: BoutConfig, bk: Any) -> Any:
    """(M - 1, n) rule outputs on the chunk prices of the whole loaded array (None for constant rules)."""
    if cfg.rule_kind == "constant":
        return None
    return rule_outputs(
        cfg.strategy, chunk_prices, params, chunk_period=cfg.chunk_period, beta=cfg.beta,
        max_memory_days=cfg.max_memory_days, bk=bk,
    )


def bout_weights(outputs: Any, start: Any, params: dict[str, Any], w_init: Any, cfg: BoutConfig, bk: Any) -> Any:
    """(B - 1, n) per-minute weights of the bout starting at row ``start`` (math.md 3.1-3.3)."""
    xp = bk.xp
    if cfg.rule_kind == "constant" or cfg.n_chunks == 0:
        return xp.broadcast_to(w_init, (cfg.n_out, cfg.n_assets))
    first_chunk = start // cfg.chunk_period
    bout_outputs = bk.dynamic_slice(outputs, first_chunk, cfg.n_chunks, axis=0)
    alpha = bk.sigmoid(params["logit_lambda_2"]) if cfg.rule_kind == "weight" else None
    # the backend's operation: the core's scan (weights.coarse_weights) or a fused kernel it registered
    a, delta = bk.coarse_weights(
        bout_outputs, w_init, kind=cfg.rule_kind, alpha=alpha, w_min=cfg.w_min, w_max=cfg.w_max,
        max_change=cfg.max_change, interpolation_period=cfg.interpolation_period, smooth=cfg.smooth,
        temperature=cfg.smoothing.weight_temperature,
    )
    return weights_mod.fine_weights(
        w_init, a, delta, chunk_period=cfg.chunk_period, interpolation_period=cfg.interpolation_period,
        interpolation=cfg.interpolation, n_rows=cfg.n_out, bk=bk,
    )


def bout_reserves(weights: Any, prices: Any, fee: Any, gas: Any, arb_fee: Any, cfg: BoutConfig, bk: Any):
    """(reserves, trades, fees) of a bout given its weights and prices (math.md 2)."""
    xp = bk.xp
    r0 = g3m.initial_reserves(cfg.initial_value, weights[0], prices[0], xp)
    if cfg.strategy == "hodl":
        reserves = xp.broadcast_to(r0, (cfg.n_out, cfg.n_assets))
        zeros = xp.zeros_like(reserves)
        return reserves, zeros, xp.zeros_like(reserves[:, 0])
    if not cfg.has_fees:
        reserves = g3m.zero_fee_reserves(r0, weights, prices, bk)
        trades = xp.concat([xp.zeros_like(reserves[:1]), reserves[1:] - reserves[:-1]], axis=0)
        return reserves, trades, xp.zeros_like(reserves[:, 0])
    signatures = _signature_array(cfg)
    # the backend's operation: the core's scan (g3m.reserves_with_fees) or a fused kernel it registered
    return bk.reserves_with_fees(
        r0, weights, prices, fee, gas, arb_fee, signatures, smooth=cfg.smooth, smoothing=cfg.smoothing,
        checkpoint_every=cfg.checkpoint_every,
    )


def _signature_array(cfg: BoutConfig):
    import numpy as np

    return np.asarray(cfg.signatures, dtype=np.int8)


def simulate_bout(
    prices_all: Any, fee_all: Any, gas_all: Any, arb_fee_all: Any, outputs: Any, start: Any,
    params: dict[str, Any], w_init: Any, cfg: BoutConfig, bk: Any,
) -> dict[str, Any]:
    """One bout: dict with reserves, weights, values, trades, fees (B - 1 rows) and the prices used."""
    xp = bk.xp
    n_out = cfg.n_out
    prices = bk.dynamic_slice(prices_all, start, n_out, axis=0)
    fee = bk.dynamic_slice(fee_all, start, n_out, axis=0)
    gas = bk.dynamic_slice(gas_all, start, n_out, axis=0)
    arb_fee = bk.dynamic_slice(arb_fee_all, start, n_out, axis=0)
    weights = bout_weights(outputs, start, params, w_init, cfg, bk)
    reserves, trades, fees = bout_reserves(weights, prices, fee, gas, arb_fee, cfg, bk)
    if cfg.has_fees or cfg.strategy == "hodl":
        values = xp.sum(reserves * prices, axis=-1)
    else:  # the closed form's value needs only the common growth (g3m.zero_fee_values)
        values = g3m.zero_fee_values(cfg.initial_value, weights, prices, bk)
    return {"reserves": reserves, "weights": weights, "values": values, "trades": trades, "fees": fees,
            "prices": prices}
