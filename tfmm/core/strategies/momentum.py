"""Momentum (docs/math.md section 5): r = k (g - sum(k g) / sum(k)), k = 2^log_k m(lambda).

g is the EWMA gradient (docs/math.md 4, relative price slope per chunk) on the chunk prices; output r_m uses
g_{m+1}, i.e. chunk prices pbar_0..pbar_{m+1}. Parameters (n,): log_k, logit_lambda.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfmm.core.estimators import ewma_gradient
from tfmm.core.strategies.common import centred, k_from_log_k, lambdas, param
from tfmm.core.strategies.registry import StrategyRecord


def momentum_signal(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int,
                    max_memory_days: float, bk: Any) -> tuple[Any, Any]:
    """(k (n,), g (M-1, n)): the momentum scale and the gradients g_1..g_{M-1}."""
    lam = lambdas(param(params, "logit_lambda", chunk_prices, bk), chunk_period, max_memory_days, bk)
    k = k_from_log_k(param(params, "log_k", chunk_prices, bk), lam, chunk_period, bk)
    return k, ewma_gradient(chunk_prices, lam, bk)[1:]


def outputs(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
            max_memory_days: float, bk: Any) -> Any:
    """Momentum weight changes (M-1, n), each row summing to 0. ``beta`` is unused."""
    k, g = momentum_signal(chunk_prices, params, chunk_period=chunk_period, max_memory_days=max_memory_days, bk=bk)
    return centred(k, g, bk)


RECORD = StrategyRecord(
    "momentum", ("log_k", "logit_lambda"), "delta", outputs,
    decay_parameters=("logit_lambda",),
    scale_parameter="log_k",
    builtin=True, doc="r = k (g - sum(k g) / sum(k)), g the EWMA gradient",
)

__all__ = ["momentum_signal", "outputs", "RECORD"]
