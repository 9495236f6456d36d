"""Run the demo configuration (tfmm/demo.py) with several seeds; record validation/test objectives and time.

Usage: python bench/demo_seeds.py [--seeds 8] [--out bench/results/demo_seeds.json]
Each seed changes the parameter-set initialisation noise and the bout sampling.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "demo_seeds.json"))
    args = parser.parse_args(argv)

    import tfmm
    from tfmm.demo import demo_setup

    tfmm.use("jax")
    prices, pool, strategy, config = demo_setup()
    runs = []
    for seed in range(args.seeds):
        cfg = dataclasses.replace(config, seed=seed)
        t0 = time.perf_counter()
        try:
            result = tfmm.train(prices, strategy, pool, cfg, progress=False)
            val = result.validation[cfg.objective]
            test = result.test[cfg.objective]
            error = None
        except Exception as exc:  # noqa: BLE001 - a failed seed is a result to report
            val = test = float("nan")
            error = f"{type(exc).__name__}: {exc}"
        wall = time.perf_counter() - t0
        runs.append({"seed": seed, "validation": val, "test": test, "wall_s": wall, "error": error,
                     "finite": bool(math.isfinite(val) and math.isfinite(test))})
        print(f"seed {seed}: validation {cfg.objective} {val:.4f}, test {test:.4f}, {wall:.0f} s"
              + (f" ({error})" if error else ""), flush=True)
    from tfmm.plots import baseline_simulations
    from tfmm.training import make_periods

    start, stop = make_periods(prices.n_rows, strategy, pool, config).test
    length = stop - start + 1
    baselines = {"initial strategy": tfmm.metrics(tfmm.simulate(prices, strategy, pool, start=start, length=length))}
    baselines.update({k: tfmm.metrics(v) for k, v in baseline_simulations(prices, pool, start, length, 2).items()})
    summary = {"objective": config.objective, "n_finite": sum(r["finite"] for r in runs), "runs": runs,
               "test_baselines": {k: v[config.objective] for k, v in baselines.items()}, "config": config.to_dict()}
    print("test-period baselines:", {k: round(v, 4) for k, v in summary["test_baselines"].items()})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2, default=float))
    print(f"{summary['n_finite']}/{len(runs)} finite; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
