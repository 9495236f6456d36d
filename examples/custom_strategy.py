"""A user-defined strategy, written once and run on JAX and torch (``tfmm.register_strategy``).

The rule follows the EWMA of each asset's log return per chunk, ``s = EWMA_lambda(log(pbar_{m+1} / pbar_m))``,
and moves weight towards the assets with the larger trend: ``r = k (s - sum(k s) / sum(k))`` with
``k = exp(log_scale)`` (zero-sum weight changes, a "delta" rule). It is written against ``bk.xp`` (the Array
API namespace of the inputs) and tfmm's helpers, so one function serves every backend. The script simulates
it for 7 days of the bundled BTC/ETH minute prices on each installed array backend and prints the final pool
value, the objective and its gradient, then saves the strategy to TOML and loads it back by name.

Run (about 30 seconds on 2 cores, most of it compiling):

    python examples/custom_strategy.py
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

import tfmm
from tfmm.core.estimators import ewma
from tfmm.core.strategies.common import centred, lambdas

DAY = 1440


def log_return_trend(chunk_prices: Any, params: Mapping[str, Any], *, chunk_period: int, beta: float,
                     max_memory_days: float, bk: Any) -> Any:
    """Weight changes (M-1, n): r = k (s - sum(k s) / sum(k)), s the EWMA of the chunk log returns
    (row m uses chunk prices 0..m+1), lambda = min(sigmoid(logit_lambda), lambda(max_memory_days)),
    k = exp(log_scale). ``beta`` is unused."""
    xp = bk.xp
    lam = lambdas(params["logit_lambda"], chunk_period, max_memory_days, bk)
    trend = ewma(xp.log(chunk_prices[1:] / chunk_prices[:-1]), lam, bk)
    return centred(xp.exp(params["log_scale"]), trend, bk)


def main() -> None:
    tfmm.register_strategy(
        "log_return_trend", ("log_scale", "logit_lambda"), log_return_trend,
        defaults={"log_scale": 0.0},  # logit_lambda comes from memory_days, as for the built-ins
        doc="EWMA of chunk log returns, centred with k = exp(log_scale)",
    )
    prices = tfmm.example_prices()
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=1e-3)
    strategy = tfmm.Strategy.from_memory_days("log_return_trend", n_assets=prices.n_assets, memory_days=1.0,
                                              pool=pool)
    start, length = 14 * DAY, 7 * DAY  # two weeks of burn-in for the EWMA, then one week
    print(f"strategy {strategy.name!r}, params {({k: v.tolist() for k, v in strategy.params.items()})}")
    for backend in [b for b in ("jax", "torch") if b in tfmm.available_backends()]:
        t0 = time.perf_counter()
        with tfmm.use(backend) as bk:
            sim = tfmm.simulate(prices, strategy, pool, start=start, length=length).to_numpy()
            value, grads = tfmm.value_and_grad(prices, strategy, pool, start=start, length=length,
                                               objective="daily_log_sharpe", mode="smooth")
            grads = {k: np.round(bk.to_numpy(g), 6).tolist() for k, g in grads.items()}
        print(f"{backend:>5}: final value {sim.values[-1]:,.2f} USD, weights {np.round(sim.weights[-1], 4)}, "
              f"smooth daily log Sharpe {float(bk.to_numpy(value)):.6f}, gradient {grads} "
              f"({time.perf_counter() - t0:.1f} s)")
    text = tfmm.to_toml(pool=pool, strategy=strategy)  # saved by name: load it where the rule is registered
    loaded = tfmm.from_toml(text)["strategy"]
    print(f"TOML round trip: {loaded.name!r}, params equal: "
          f"{all(np.array_equal(loaded.params[k], strategy.params[k]) for k in strategy.params)}")


if __name__ == "__main__":
    main()
