"""Difference momentum (docs/math.md section 5): two EWMAs of the chunk prices with memories m1, m2,
s = 1 - e2 / e1, r = k (s - sum(k s) / sum(k)) with k = 2^log_k max(m1, m2).

lambda_1 = sigmoid(logit_lambda), lambda_2 = sigmoid(logit_lambda_2), both capped at lambda(max_memory_days);
max(m1, m2) is taken in the log domain. Parameters (n,): log_k, logit_lambda, logit_lambda_2.
Output r_m uses chunk prices pbar_0..pbar_{m+1}.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfmm.core.estimators import ewma
from tfmm.core.strategies.common import LN2, centred, lambdas, log_memory_days, param
from tfmm.core.strategies.registry import StrategyRecord


def outputs(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
            max_memory_days: float, bk: Any) -> Any:
    """Difference-momentum weight changes (M-1, n), each row summing to 0. ``beta`` is unused."""
    xp = bk.xp
    lam1 = lambdas(param(params, "logit_lambda", chunk_prices, bk), chunk_period, max_memory_days, bk)
    lam2 = lambdas(param(params, "logit_lambda_2", chunk_prices, bk), chunk_period, max_memory_days, bk)
    log_m = xp.maximum(log_memory_days(lam1, chunk_period, bk), log_memory_days(lam2, chunk_period, bk))
    k = xp.exp(param(params, "log_k", chunk_prices, bk) * LN2 + log_m)
    e1 = ewma(chunk_prices, lam1, bk)[1:]
    e2 = ewma(chunk_prices, lam2, bk)[1:]
    return centred(k, 1.0 - e2 / e1, bk)


RECORD = StrategyRecord(
    "difference_momentum", ("log_k", "logit_lambda", "logit_lambda_2"), "delta", outputs,
    decay_parameters=("logit_lambda", "logit_lambda_2"),
    scale_parameter="log_k",
    builtin=True, doc="s = 1 - e2 / e1 of two EWMAs, centred with k",
)

__all__ = ["outputs", "RECORD"]
