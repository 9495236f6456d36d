"""The fee path: fused kernel vs scan, end to end (tfmm.simulate / tfmm.value_and_grad) and the kernel alone.

One year (525,600 minutes) of synthetic 2- or 3-asset prices, momentum with daily weight updates, float64,
median of ``--repeats`` warm calls (the first call, with compilation, is reported apart). Cases, per backend
and fee path (``tfmm.use(backend, fee_path=...)``):
- fee 0.3%, 2 assets: forward (exact), forward+gradient of daily log Sharpe exact and smooth;
- no fee, 2 assets: forward+gradient (the closed form; the fee path is not used);
- fee 0.3%, 3 assets, pairwise and all signatures: forward+gradient exact.
And the kernel alone (no strategy, no objective): pool-minutes per second forward and forward+reverse.

Usage: python bench/bench_fee_path.py [--quick] [--backends jax,torch] [--repeats 3] [--out bench/results]
Writes fee_path_cpu.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tfmm.benchmark.inputs import DAY, YEAR, momentum_inputs, timed  # one pool and timing rule for every benchmark


def end_to_end_cases(length: int) -> list[tuple[str, int, dict, str, str]]:
    """(label, n_assets, pool kwargs, what, mode)."""
    return [
        ("fee 0.3%, 2 assets, forward exact", 2, {"fee": 0.003}, "forward", "exact"),
        ("fee 0.3%, 2 assets, fwd+grad exact", 2, {"fee": 0.003}, "grad", "exact"),
        ("fee 0.3%, 2 assets, fwd+grad smooth", 2, {"fee": 0.003}, "grad", "smooth"),
        ("no fee, 2 assets, fwd+grad exact", 2, {"fee": 0.0}, "grad", "exact"),
        ("fee 0.3%, 3 assets pairwise, fwd+grad exact", 3, {"fee": 0.003, "signatures": "pairwise"}, "grad", "exact"),
        ("fee 0.3%, 3 assets all, fwd+grad exact", 3, {"fee": 0.003, "signatures": "all"}, "grad", "exact"),
    ]


def run_end_to_end(backend: str, fee_path: str, length: int, repeats: int) -> list[dict]:
    import tfmm

    rows = []
    inputs = {n: momentum_inputs(n, length, extra_rows=2 * DAY) for n in (2, 3)}
    with tfmm.use(backend, fee_path=fee_path):
        for label, n, pool_kwargs, what, mode in end_to_end_cases(length):
            pool = tfmm.Pool(**pool_kwargs)
            prices, strategy = inputs[n]
            if what == "forward":
                def call():
                    return tfmm.simulate(prices, strategy, pool, start=DAY, length=length, mode=mode).to_numpy()
            else:
                def call():
                    value, grads = tfmm.value_and_grad(prices, strategy, pool, start=DAY, length=length, mode=mode)
                    return float(value), {k: np.asarray(v) for k, v in grads.items()}
            first, warm = timed(call, repeats)
            rows.append({"backend": backend, "fee_path": fee_path, "case": label, "first_s": first, "warm_s": warm})
            print(f"{backend:5s} {fee_path:6s} {label:45s} {warm * 1e3:8.1f} ms   (first call {first:.1f} s)",
                  flush=True)
    return rows


def run_kernel_alone(length: int, repeats: int) -> list[dict]:
    from tfmm.backends.kernels import fee_path as kernel
    from tfmm.core.g3m import signature_matrix
    from tfmm.data import synthetic_prices

    rows = []
    for n, kind in ((2, "pairwise"), (3, "pairwise"), (3, "all")):
        prices = synthetic_prices(n_assets=n, n_minutes=length, seed=0, vol=0.7).values
        t = np.arange(length)[:, None]
        weights = np.full((length, n), 1.0 / n) + 0.05 * np.sin(t / 5000.0) * (np.arange(n) == 0) \
            - 0.05 * np.sin(t / 5000.0) * (np.arange(n) == 1)
        r0 = 1e6 * weights[0] / prices[0]
        zeros = np.zeros(length)
        for smooth in (False, True):
            settings = kernel.FeePathSettings(signature_matrix(n, kind), smooth)
            fwd = lambda: kernel.forward(settings, r0, weights, prices, zeros + 0.003, zeros, zeros)  # noqa: E731
            reserves, fees, residuals = fwd()

            def both():
                res, f, aux = fwd()
                return kernel.backward(settings, r0, weights, prices, zeros + 0.003, zeros, zeros, res, aux,
                                       np.ones_like(res), np.ones_like(f))

            _, t_fwd = timed(fwd, repeats)
            _, t_both = timed(both, repeats)
            mode = "smooth" if smooth else "exact"
            rows.append({"n_assets": n, "signatures": kind, "mode": mode, "forward_s": t_fwd, "forward_reverse_s": t_both,
                         "forward_M_pool_min_per_s": (length - 1) / t_fwd / 1e6,
                         "forward_reverse_M_pool_min_per_s": (length - 1) / t_both / 1e6})
            print(f"kernel n={n} {kind:8s} {mode:6s} forward {t_fwd * 1e3:7.1f} ms ({rows[-1]['forward_M_pool_min_per_s']:.1f} M/s)"
                  f"  forward+reverse {t_both * 1e3:7.1f} ms ({rows[-1]['forward_reverse_M_pool_min_per_s']:.1f} M/s)",
                  flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    cases = [c[0] for c in end_to_end_cases(YEAR)]
    paths = sorted({(r["backend"], r["fee_path"]) for r in rows})
    lines = ["| case | " + " | ".join(f"{b} {p}" for b, p in paths) + " |",
             "|---|" + "---|" * len(paths)]
    for case in cases:
        cells = []
        for b, p in paths:
            hit = [r for r in rows if r["backend"] == b and r["fee_path"] == p and r["case"] == case]
            cells.append(f"{hit[0]['warm_s'] * 1e3:.0f} ms" if hit else "-")
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30-day bouts instead of a year")
    parser.add_argument("--backends", default="jax,torch")
    parser.add_argument("--fee-paths", default="scan,kernel")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    length = 30 * DAY if args.quick else YEAR
    kernel_rows = run_kernel_alone(length, args.repeats)
    rows = []
    for backend in args.backends.split(","):
        for fee_path in args.fee_paths.split(","):
            if backend == "torch" and fee_path == "scan" and not args.quick:
                print("torch scan: skipped at one year (the eager loop takes minutes per call)")
                continue
            rows += run_end_to_end(backend, fee_path, length, args.repeats)
    table = markdown(rows)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import tfmm

    record = {"machine": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
              "tfmm": tfmm.__version__, "date": time.strftime("%Y-%m-%d"), "minutes": length - 1,
              "kernel": kernel_rows, "end_to_end": rows, "table": table}
    name = "fee_path_cpu_quick.json" if args.quick else "fee_path_cpu.json"
    (out / name).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
