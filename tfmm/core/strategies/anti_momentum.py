"""Anti-momentum (docs/math.md section 5): momentum with -k, i.e. r = -k (g - sum(k g) / sum(k)).

Parameters (n,): log_k, logit_lambda. Output r_m uses chunk prices pbar_0..pbar_{m+1}.
"""

from __future__ import annotations

from typing import Any, Mapping

from tfmm.core.strategies.common import centred
from tfmm.core.strategies.momentum import momentum_signal
from tfmm.core.strategies.registry import StrategyRecord


def outputs(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
            max_memory_days: float, bk: Any) -> Any:
    """Anti-momentum weight changes (M-1, n), each row summing to 0. ``beta`` is unused."""
    k, g = momentum_signal(chunk_prices, params, chunk_period=chunk_period, max_memory_days=max_memory_days, bk=bk)
    return -centred(k, g, bk)


RECORD = StrategyRecord(
    "anti_momentum", ("log_k", "logit_lambda"), "delta", outputs,
    decay_parameters=("logit_lambda",),
    scale_parameter="log_k",
    builtin=True, doc="momentum with -k",
)

__all__ = ["outputs", "RECORD"]
