"""Mean-reversion channel (docs/math.md section 5).

E = exp(-g^2 / (2 W^2)), z = pi g / (3 W),
s = -A E (z - z^3 / 6) / 0.5415 + (1 - E) sign(g) |g / (2 beta)|^q, r = k (s - sum(k s) / sum(k)),
with A = sp(sp_amplitude) m(lambda), W = sp(sp_width), q = max(sp(raw_exponent), 1), k = 2^log_k m(lambda).
Inside the channel (|g| small against W) the rule reverts, outside it follows the power-law trend.
0.5415 is the deployed rule's scaling. Parameters (n,): log_k, logit_lambda, raw_exponent, sp_amplitude,
sp_width. Output r_m uses chunk prices pbar_0..pbar_{m+1}.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from tfmm.core.strategies.common import (
    centred, exponent, lambdas, memory_days, param, signed_power, squareplus, k_from_log_k,
)
from tfmm.core.estimators import ewma_gradient
from tfmm.core.strategies.registry import StrategyRecord

CHANNEL_SCALE = 0.5415


def channel_signal(g: Any, amplitude: Any, width: Any, q: Any, beta: float, bk: Any) -> Any:
    """s(g) = -A E (z - z^3/6) / 0.5415 + (1 - E) sign(g) |g / (2 beta)|^q (docs/math.md 5)."""
    xp = bk.xp
    envelope = xp.exp(-(g * g) / (2.0 * width * width))
    z = (math.pi / 3.0) * g / width
    reversion = -amplitude * envelope * (z - z * z * z / 6.0) / CHANNEL_SCALE
    return reversion + (1.0 - envelope) * signed_power(g / (2.0 * beta), q, bk)


def outputs(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
            max_memory_days: float, bk: Any) -> Any:
    """Mean-reversion-channel weight changes (M-1, n), each row summing to 0."""
    lam = lambdas(param(params, "logit_lambda", chunk_prices, bk), chunk_period, max_memory_days, bk)
    k = k_from_log_k(param(params, "log_k", chunk_prices, bk), lam, chunk_period, bk)
    amplitude = squareplus(param(params, "sp_amplitude", chunk_prices, bk), bk) * memory_days(lam, chunk_period, bk)
    width = squareplus(param(params, "sp_width", chunk_prices, bk), bk)
    q = exponent(param(params, "raw_exponent", chunk_prices, bk), bk)
    g = ewma_gradient(chunk_prices, lam, bk)[1:]
    return centred(k, channel_signal(g, amplitude, width, q, beta, bk), bk)


RECORD = StrategyRecord(
    "mean_reversion_channel", ("log_k", "logit_lambda", "raw_exponent", "sp_amplitude", "sp_width"), "delta",
    outputs,
    decay_parameters=("logit_lambda",),
    scale_parameter="log_k",
    squareplus_parameters=("raw_exponent", "sp_amplitude", "sp_width"),
    builtin=True, doc="reverts inside a channel, follows the power-law trend outside",
)

__all__ = ["CHANNEL_SCALE", "channel_signal", "outputs", "RECORD"]
