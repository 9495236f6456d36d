"""The main job (``make demo``): train a momentum pool on the bundled BTC/ETH minute data.

Fee 0.3%, smooth-mode training with every stability fix on, several parameter sets in parallel,
best set chosen by the exact-mode validation objective, then exact-mode test metrics printed
against HODL and a 50/50 balancer pool. Plots and logs go to ``runs/demo`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DAY = 1440
SHOWN = ("daily_log_sharpe", "returns", "returns_over_hodl", "annualised_returns", "max_drawdown")


def demo_setup():
    """(prices, pool, strategy, config) of the demo."""
    import tfmm
    from tfmm.data import example_prices

    prices = example_prices()
    pool = tfmm.Pool(fee=0.003, chunk_period=1440, max_change=3e-4)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=5.0, k_per_day=5.0,
                                              chunk_period=1440)
    config = tfmm.TrainConfig(
        objective="daily_log_sharpe", bout_length=10 * DAY, batch_size=8, n_sets=4, n_iterations=120,
        learning_rate=0.05, schedule="warmup_cosine", eval_every=10, burn_in=15 * DAY, seed=0,
    )
    return prices, pool, strategy, config


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per pool, one column per metric."""
    head = f"{'pool':<22}" + "".join(f"{m:>20}" for m in SHOWN)
    lines = [head, "-" * len(head)]
    for name, metrics in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{metrics.get(m, float('nan')):>20.5f}" for m in SHOWN))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    parser.add_argument("--iterations", type=int, default=None, help="override n_iterations")
    parser.add_argument("--seed", type=int, default=None, help="override the seed")
    parser.add_argument("--backend", choices=("jax", "torch"), default=None,
                        help="array backend to train on (default: jax when installed, else torch)")
    args = parser.parse_args(argv)

    import dataclasses

    import tfmm
    from tfmm.plots import baseline_simulations

    installed = tfmm.available_backends()
    backend = args.backend or next((b for b in ("jax", "torch") if b in installed), "reference")
    prices, pool, strategy, config = demo_setup()
    if args.iterations is not None:
        config = dataclasses.replace(config, n_iterations=args.iterations)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    first, last = (np.datetime64(int(t), "s") for t in prices.timestamps[[0, -1]])
    print(f"tfmm demo: {', '.join(prices.assets)} one-minute closes (Binance market data), {first} .. {last} UTC, "
          f"{prices.n_rows} rows; backend {backend}")
    if backend not in installed or backend == "reference":
        print(f"training needs the JAX or torch backend: pip install 'tfmm[{args.backend or 'jax'}]'",
              file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    with tfmm.use(backend):
        result = tfmm.train(prices, strategy, pool, config, run_dir=Path(args.out), overwrite=True)
        start, stop = result.periods.test
        length = stop - start + 1
        baselines = baseline_simulations(prices, pool, start, length, prices.n_assets)
        rows = {"trained momentum": result.test}
        rows["initial momentum"] = tfmm.metrics(tfmm.simulate(prices, strategy, pool, start=start, length=length))
        rows.update({name: tfmm.metrics(sim) for name, sim in baselines.items()})
    days = (stop - start) / DAY
    print(f"\nbest parameter set {result.best_set} of {config.n_sets}; "
          f"validation {config.objective} = {result.validation[config.objective]:.4f}")
    print(f"test period: rows {start}..{stop - 1} ({days:.1f} days), exact mode, fee {pool.fee:.2%}\n")
    print(format_table(rows))
    print(f"\nlearned params: " + ", ".join(f"{k}={np.round(v, 4).tolist()}" for k, v in result.strategy.params.items()))
    print(f"run folder: {result.run_dir} (config.toml, log.csv, best_params.toml, metrics.json, *.png); "
          f"wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
