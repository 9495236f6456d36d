"""Strategies (docs/math.md sections 3.1 and 5): chunk prices -> rule outputs, written once.

Every strategy, built-in or registered by a user (``tfmm.register_strategy``), is a
:class:`~tfmm.core.strategies.registry.StrategyRecord` in the registry; :func:`rule_outputs` dispatches
through it. Every rule maps chunk prices ``pbar_0..pbar_{M-1}`` (shape (M, n)) to ``M - 1`` outputs, output
``r_m`` using ``pbar_0..pbar_{m+1}`` only (estimators initialised on ``pbar_0``). Delta rules (momentum
family) give zero-sum weight changes; weight rules (min_variance) give target weights, mixed with the
previous weights by :func:`mixing_alpha`. Parameters arrive as arrays of shape (n,) (callers vmap over
parameter sets and bouts).
"""

from __future__ import annotations

from typing import Any, Mapping

from tfmm.core.strategies import (
    anti_momentum, constant, difference_momentum, mean_reversion_channel, min_variance, momentum, power_channel,
)
from tfmm.core.strategies.common import lambda_cap, lambdas, memory_days, param
from tfmm.core.strategies.registry import (
    MIXING_PARAMETER, LiveMapping, StrategyRecord, lookup, register, rules_by_name, unregister,
)

BUILTINS: tuple[StrategyRecord, ...] = (
    momentum.RECORD, anti_momentum.RECORD, power_channel.RECORD, mean_reversion_channel.RECORD,
    difference_momentum.RECORD, min_variance.RECORD, constant.BALANCER, constant.HODL,
)
for _record in BUILTINS:
    register(_record)

# name -> rule of every registered strategy with rule outputs (a live view of the registry)
RULES: Mapping[str, Any] = LiveMapping(rules_by_name)


def rule_kind(name: str) -> str:
    """"delta" (zero-sum weight changes), "weight" (target weights) or "constant" (no rule outputs)."""
    return lookup(name).kind


def _rule_record(name: str) -> StrategyRecord:
    record = lookup(name)
    if record.rule is None:
        raise ValueError(f"strategy {name!r} has no rule outputs (a {record.kind} strategy): allowed one of "
                         f"{', '.join(map(repr, RULES))}")
    return record


def rule_outputs(name: str, chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
                 max_memory_days: float, bk: Any) -> Any:
    """Rule outputs (M-1, n) of strategy ``name`` on chunk prices (M, n); r_m uses pbar_0..pbar_{m+1}.

    params: name -> (n,) array, the record's parameters; chunk_period c in minutes (memory lengths are in
    days); beta: channel scale; max_memory_days: cap on every memory length. A rule returning another
    shape than (M-1, n) is a ValueError naming the strategy.
    """
    record = _rule_record(name)
    missing = [p for p in record.parameters if p not in params]
    if missing:
        raise ValueError(f"params for strategy {name!r} miss {missing}")
    out = record.rule(chunk_prices, params, chunk_period=chunk_period, beta=beta,
                      max_memory_days=max_memory_days, bk=bk)
    expected = (chunk_prices.shape[0] - 1, chunk_prices.shape[1])
    shape = tuple(getattr(out, "shape", ()))
    if shape != expected:
        raise ValueError(f"the rule of strategy {name!r} returned shape {shape}: expected (M - 1, n) = {expected} "
                         f"for chunk prices of shape {tuple(chunk_prices.shape)}")
    return out


def mixing_alpha(name: str, params: Mapping[str, Any], like: Any, bk: Any) -> Any:
    """alpha (n,) of a weight rule (u = alpha a + (1 - alpha) r, alpha = sigmoid(logit_lambda_2));
    None for a delta rule."""
    if rule_kind(name) != "weight":
        return None
    return bk.sigmoid(param(params, MIXING_PARAMETER, like, bk))


__all__ = [
    "RULES", "BUILTINS", "StrategyRecord", "register", "unregister", "lookup", "rule_kind", "rule_outputs",
    "mixing_alpha", "lambdas", "lambda_cap", "memory_days",
]
