"""Throughput of the JAX backend: a one-year 2-asset momentum pool, and batched bouts / parameter sets.

Measures (float64 unless --dtype float32), median of --repeats runs after one warm-up (compile excluded;
compile time reported separately):
- forward (simulate) and forward+grad (value_and_grad of daily_log_sharpe) with fee 0.3% and with no fee,
  on one bout of one year (525,600 minutes) with daily weight updates;
- batched forward+grad throughput in pool-minutes/s for (bouts x sets) batches of 30-day bouts.

Usage: python bench/bench_jax.py [--quick] [--dtype float64] [--out bench/results]
Writes jax_<device>.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from tfmm.benchmark.inputs import DAY, YEAR, momentum_inputs, timed as _timed  # shared by every benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30-day bout instead of a year; small batches")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)

    import jax

    import tfmm
    from tfmm.data import synthetic_prices

    tfmm.use("jax")
    length = 30 * DAY if args.quick else YEAR
    prices, strategy = momentum_inputs(2, length, extra_rows=2 * DAY)
    rows = []

    def block(x):
        return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)

    for label, pool in (("fee 0.3%", tfmm.Pool(fee=0.003)), ("no fee", tfmm.Pool(fee=0.0))):
        fwd = lambda: block(tfmm.simulate(prices, strategy, pool, start=DAY, length=length, dtype=args.dtype).values)  # noqa: E731
        grad = lambda: block(tfmm.value_and_grad(prices, strategy, pool, start=DAY, length=length,  # noqa: E731
                                                 objective="daily_log_sharpe", mode="smooth", dtype=args.dtype))
        c_fwd, t_fwd = _timed(fwd, args.repeats)
        c_grad, t_grad = _timed(grad, args.repeats)
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rows.append({"case": label, "minutes": length - 1, "forward_s": t_fwd, "forward_grad_s": t_grad,
                     "peak_rss_mb_so_far": peak_mb,
                     "first_forward_s": c_fwd, "first_forward_grad_s": c_grad,
                     "forward_pool_minutes_per_s": (length - 1) / t_fwd,
                     "forward_grad_pool_minutes_per_s": (length - 1) / t_grad})
        print(f"{label}: forward {t_fwd * 1e3:.1f} ms, forward+grad {t_grad * 1e3:.1f} ms "
              f"(first calls {c_fwd:.1f} s / {c_grad:.1f} s; peak RSS so far {peak_mb:.0f} MB)")

    batch_rows = []
    bout = 30 * DAY
    prices_b = synthetic_prices(n_assets=2, n_minutes=120 * DAY, seed=1, vol=0.7)
    pool = tfmm.Pool(fee=0.003, chunk_period=60)
    shapes = [(1, 1), (4, 1), (16, 1), (4, 4)] if args.quick else [(1, 1), (4, 1), (16, 1), (64, 1), (16, 4)]
    for n_bouts, n_sets in shapes:
        sets = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=2, k_per_day=10, chunk_period=60,
                                              n_sets=n_sets)
        starts = np.linspace(0, 120 * DAY - bout - 1, n_bouts).astype(np.int64) // 60 * 60
        grad = lambda: block(tfmm.value_and_grad(prices_b, sets, pool, start=starts, length=bout,  # noqa: E731
                                                 objective="daily_log_sharpe", dtype=args.dtype))
        _, t = _timed(grad, max(2, args.repeats // 2))
        pm = n_bouts * n_sets * (bout - 1)
        batch_rows.append({"bouts": n_bouts, "sets": n_sets, "forward_grad_s": t, "pool_minutes_per_s": pm / t})
        print(f"batch {n_bouts} bouts x {n_sets} sets of 30 days: fwd+grad {t:.3f} s, {pm / t / 1e6:.2f} M pool-min/s")

    device = jax.devices()[0]
    result = {"device": f"{device.platform}:{device.device_kind}", "machine": platform.processor() or platform.machine(),
              "cpu_count": __import__("os").cpu_count(), "dtype": args.dtype, "jax": jax.__version__,
              "single": rows, "batched": batch_rows, "quick": args.quick}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"jax_{device.platform}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
