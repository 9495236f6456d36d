"""Constant strategies (docs/math.md section 5): no rule outputs, the weights stay at the initial weights.

balancer: a G3M pool at constant weights (arbitrage rebalances it); hodl: the initial reserves, never traded.
"""

from __future__ import annotations

from tfmm.core.strategies.registry import StrategyRecord

BALANCER = StrategyRecord("balancer", (), "constant", None, builtin=True,
                          doc="constant weights, rebalanced by arbitrage")
HODL = StrategyRecord("hodl", (), "constant", None, builtin=True, doc="the initial reserves, never traded")

__all__ = ["BALANCER", "HODL"]
