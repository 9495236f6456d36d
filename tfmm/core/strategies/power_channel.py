"""Power channel (docs/math.md section 5): s = sign(g) |g / (2 beta)|^q, r = k (s - sum(k s) / sum(k)).

q = max(sp(raw_exponent), 1), k = 2^log_k m(lambda), beta a fixed scale (default 0.5). The power is taken in
the log domain, exp(q log|g / (2 beta)|), and is 0 (with finite gradient) at g = 0.
Parameters (n,): log_k, logit_lambda, raw_exponent. Output r_m uses chunk prices pbar_0..pbar_{m+1}.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfmm.core.strategies.common import centred, exponent, param, signed_power
from tfmm.core.strategies.momentum import momentum_signal
from tfmm.core.strategies.registry import StrategyRecord


def outputs(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
            max_memory_days: float, bk: Any) -> Any:
    """Power-channel weight changes (M-1, n), each row summing to 0."""
    k, g = momentum_signal(chunk_prices, params, chunk_period=chunk_period, max_memory_days=max_memory_days, bk=bk)
    q = exponent(param(params, "raw_exponent", chunk_prices, bk), bk)
    return centred(k, signed_power(g / (2.0 * beta), q, bk), bk)


RECORD = StrategyRecord(
    "power_channel", ("log_k", "logit_lambda", "raw_exponent"), "delta", outputs,
    decay_parameters=("logit_lambda",),
    scale_parameter="log_k",
    squareplus_parameters=("raw_exponent",),
    builtin=True, doc="s = sign(g) |g / (2 beta)|^q, centred with k",
)

__all__ = ["outputs", "RECORD"]
