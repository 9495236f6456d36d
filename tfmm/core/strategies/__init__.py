"""Strategies (MATH.md sections 3.1 and 5): chunk prices -> rule outputs, written once.

:func:`rule_outputs` dispatches to one module per strategy; every rule maps chunk prices
``pbar_0..pbar_{M-1}`` (shape (M, n)) to ``M - 1`` outputs, output ``r_m`` using ``pbar_0..pbar_{m+1}`` only
(estimators initialised on ``pbar_0``). Delta rules (momentum family) give zero-sum weight changes; the
weight rule (min_variance) gives target weights, mixed with the previous weights by :func:`mixing_alpha`.
Parameters arrive as arrays of shape (n,) (callers vmap over parameter sets and bouts).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from tfmm.core.strategies import (
    anti_momentum, difference_momentum, mean_reversion_channel, min_variance, momentum, power_channel,
)
from tfmm.core.strategies.common import lambda_cap, lambdas, memory_days
from tfmm.specs import DELTA_RULES, STRATEGY_PARAMETERS, WEIGHT_RULES

RULES: dict[str, Callable[..., Any]] = {
    "momentum": momentum.outputs,
    "anti_momentum": anti_momentum.outputs,
    "power_channel": power_channel.outputs,
    "mean_reversion_channel": mean_reversion_channel.outputs,
    "difference_momentum": difference_momentum.outputs,
    "min_variance": min_variance.outputs,
}


def rule_kind(name: str) -> str:
    """"delta" (zero-sum weight changes) or "weight" (target weights)."""
    if name in DELTA_RULES:
        return "delta"
    if name in WEIGHT_RULES:
        return "weight"
    raise ValueError(f"strategy {name!r} has no rule outputs: allowed one of {', '.join(map(repr, RULES))}")


def rule_outputs(name: str, chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
                 max_memory_days: float, bk: Any) -> Any:
    """Rule outputs (M-1, n) of strategy ``name`` on chunk prices (M, n); r_m uses pbar_0..pbar_{m+1}.

    params: name -> (n,) array, exactly ``STRATEGY_PARAMETERS[name]``; chunk_period c in minutes (memory
    lengths are in days); beta: channel scale; max_memory_days: cap on every memory length.
    """
    if name not in RULES:
        raise ValueError(f"strategy {name!r} has no rule outputs: allowed one of {', '.join(map(repr, RULES))}")
    missing = [p for p in STRATEGY_PARAMETERS[name] if p not in params]
    if missing:
        raise ValueError(f"params for strategy {name!r} miss {missing}")
    return RULES[name](chunk_prices, params, chunk_period=chunk_period, beta=beta,
                       max_memory_days=max_memory_days, bk=bk)


def mixing_alpha(name: str, params: Mapping[str, Any], like: Any, bk: Any) -> Any:
    """alpha (n,) of a weight rule (u = alpha a + (1 - alpha) r); None for a delta rule."""
    if rule_kind(name) == "delta":
        return None
    return min_variance.mixing_alpha(params, like, bk)


__all__ = ["RULES", "rule_kind", "rule_outputs", "mixing_alpha", "lambdas", "lambda_cap", "memory_days"]
