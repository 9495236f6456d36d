"""Minimum variance (docs/math.md section 5), a weight rule: r_i = (1 / sigma2_i) / sum_j (1 / sigma2_j).

sigma2 is the EWMA variance of chunk returns (docs/math.md 4) with lambda = sigmoid(logit_lambda), capped at
lambda(max_memory_days). It is computed as r = softmax(-log(max(sigma2, 1e-30))) (docs/smooth_mode.md):
equal to the formula whenever every sigma2 > 1e-30, and uniform for the first output, where all variances
are 0. The coarse recursion mixes u = alpha a + (1 - alpha) r with alpha = sigmoid(logit_lambda_2), not
capped (:func:`mixing_alpha`). Output r_m uses rho_m, i.e. chunk prices pbar_0..pbar_{m+1}.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfmm.core.estimators import return_variance
from tfmm.core.strategies.common import lambdas, param
from tfmm.core.strategies.registry import StrategyRecord

VARIANCE_FLOOR = 1e-30


def inverse_variance_weights(sigma2: Any, bk: Any) -> Any:
    """softmax(-log(max(sigma2, 1e-30))) over the last axis: (1/sigma2_i) / sum_j (1/sigma2_j)."""
    xp = bk.xp
    return bk.softmax(-xp.log(xp.maximum(sigma2, xp.full_like(sigma2, VARIANCE_FLOOR))), axis=-1)


def mixing_alpha(params: Mapping[str, Any], like: Any, bk: Any) -> Any:
    """alpha = sigmoid(logit_lambda_2), (n,): the weight of the previous weights in the mix."""
    return bk.sigmoid(param(params, "logit_lambda_2", like, bk))


def outputs(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
            max_memory_days: float, bk: Any) -> Any:
    """Target weights (M-1, n), each row positive and summing to 1. ``beta`` is unused."""
    lam = lambdas(param(params, "logit_lambda", chunk_prices, bk), chunk_period, max_memory_days, bk)
    return inverse_variance_weights(return_variance(chunk_prices, lam, bk), bk)


RECORD = StrategyRecord(
    "min_variance", ("logit_lambda", "logit_lambda_2"), "weight", outputs,
    decay_parameters=("logit_lambda",),
    builtin=True, doc="r_i = (1 / sigma2_i) / sum_j (1 / sigma2_j)",
)

__all__ = ["VARIANCE_FLOOR", "inverse_variance_weights", "mixing_alpha", "outputs", "RECORD"]
