"""Forward throughput of the Numba reference simulator, in pool-minutes per second, single thread.

One year of minutes (525,600 rows), fee 0.3%, 2 and 3 assets ("all" signatures: 2 and 12 candidates),
synthetic GBM prices (80% annual volatility, correlation 0.5), float64. Cases:

- ``pool scan, moving weights``: :func:`tfmm.reference.pool.simulate_reserves` with weights that change
  every minute (both phases every minute: the slowest path);
- ``pool scan, constant weights``: the same with constant weights (balancer; Phase B runs only after
  Phase A traded);
- ``momentum bout``: :func:`tfmm.reference.simulate.simulate_bout`, the whole pipeline (rule outputs,
  weights, reserves, values), daily chunks, exact and smooth mode.

Each case runs ``--repeats`` times after a warm-up (compilation excluded); the best wall time and the
best thread CPU time are reported (the machine may be shared, so the best run is the least disturbed).

    python bench/bench_reference.py [--minutes 525600] [--repeats 5] [--out bench/results/reference.json]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import tfmm  # noqa: E402
from tfmm.api import make_request  # noqa: E402
from tfmm.reference import pool, simulate_bout  # noqa: E402

FEE = 0.003


def best_times(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best wall seconds, best thread CPU seconds) over ``repeats`` runs after one warm-up run."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - w0)
    return min(walls), min(cpus)


def cases(n_assets: int, minutes: int) -> dict[str, Callable[[], object]]:
    prices = tfmm.synthetic_prices(n_assets=n_assets, n_minutes=minutes + 1, seed=0, vol=0.8, corr=0.5)
    p = np.ascontiguousarray(prices.values[:minutes])
    t = np.arange(minutes)
    moving = np.full((minutes, n_assets), 1.0 / n_assets)
    swing = 0.1 * np.sin(2 * np.pi * t / (7 * 1440))  # a weekly swing, a new weight every minute
    moving[:, 0] += swing
    moving[:, 1] -= swing
    constant = np.full((minutes, n_assets), 1.0 / n_assets)
    sig = pool.signature_matrix(n_assets, "all")
    r0 = 1e6 * moving[0] / p[0]

    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=n_assets, memory_days=10, k_per_day=20)
    spec = tfmm.Pool(fee=FEE, chunk_period=1440)
    exact = make_request(prices, strategy, spec, 0, minutes + 1, "exact")
    smooth = make_request(prices, strategy, spec, 0, minutes + 1, "smooth")
    return {
        "pool scan, moving weights": lambda: pool.simulate_reserves(r0, moving, p, FEE, 0.0, 0.0, sig),
        "pool scan, constant weights": lambda: pool.simulate_reserves(r0, constant, p, FEE, 0.0, 0.0, sig),
        "momentum bout, exact": lambda: simulate_bout(exact, 0),
        "momentum bout, smooth": lambda: simulate_bout(smooth, 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=525_600)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--assets", default="2,3")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reference.json"))
    args = parser.parse_args()

    rows = []
    for n in (int(a) for a in args.assets.split(",")):
        for name, fn in cases(n, args.minutes).items():
            wall, cpu = best_times(fn, args.repeats)
            rows.append({
                "case": name, "n_assets": n, "minutes": args.minutes, "fee": FEE,
                "best_wall_s": wall, "best_cpu_s": cpu,
                "pool_minutes_per_s_wall": args.minutes / wall, "pool_minutes_per_s_cpu": args.minutes / cpu,
            })
            print(f"  measured {name}, n={n}", flush=True)

    print(f"\n{'case':<30} {'n':>2} {'best wall s':>12} {'Mmin/s wall':>12} {'Mmin/s cpu':>11}")
    for r in rows:
        print(f"{r['case']:<30} {r['n_assets']:>2} {r['best_wall_s']:>12.4f} "
              f"{r['pool_minutes_per_s_wall'] / 1e6:>12.2f} {r['pool_minutes_per_s_cpu'] / 1e6:>11.2f}")

    result = {
        "benchmark": "reference forward throughput (pool-minutes per second, single thread)",
        "machine": {
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "load_average_at_end": os.getloadavg(), "python": platform.python_version(),
            "numba": numba.__version__, "numpy": np.__version__,
        },
        "repeats": args.repeats,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
