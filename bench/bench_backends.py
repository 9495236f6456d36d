"""JAX against torch end to end: one year, 2 assets, fee 0.3%, float64, daily and hourly weight updates.

Per backend (and torch with ``compile=True``), momentum, ``tfmm.simulate`` (forward, exact) and
``tfmm.value_and_grad`` of daily log Sharpe (exact and smooth): the first call (tracing, compilation, Numba
kernels loaded from their cache) apart from the median of ``--repeats`` warm calls. Both backends run the
fused fee-path kernel; torch also runs the weight-path kernel (JAX compiles the weight recursion with
``lax.scan``).

Usage: python bench/bench_backends.py [--quick] [--repeats 3] [--no-compile] [--out bench/results]
Writes backends_cpu.json (or backends_cpu_quick.json) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from tfmm.benchmark.inputs import DAY, YEAR, momentum_inputs, timed  # one pool and timing rule for every benchmark

CASES = (("forward exact", "forward", "exact"), ("fwd+grad exact", "grad", "exact"),
         ("fwd+grad smooth", "grad", "smooth"))


def run(backend: str, options: dict, chunk_period: int, length: int, repeats: int) -> list[dict]:
    import tfmm

    prices, strategy = momentum_inputs(2, length, chunk_period=chunk_period, extra_rows=2 * DAY)
    pool = tfmm.Pool(fee=0.003, chunk_period=chunk_period)
    label = backend + (" compile" if options.get("compile") else "")
    rows = []
    with tfmm.use(backend, **options):
        for case, what, mode in CASES:
            if what == "forward":
                def call():
                    return tfmm.simulate(prices, strategy, pool, start=DAY, length=length, mode=mode).to_numpy()
            else:
                def call():
                    value, grads = tfmm.value_and_grad(prices, strategy, pool, start=DAY, length=length, mode=mode)
                    return float(value), {k: np.asarray(tfmm.get_backend().to_numpy(v)) for k, v in grads.items()}
            first, warm = timed(call, repeats)
            rows.append({"backend": label, "chunk_period": chunk_period, "case": case, "first_s": first,
                         "warm_s": warm})
            print(f"{label:14s} chunk {chunk_period:5d} {case:16s} {warm * 1e3:8.1f} ms   (first call {first:.1f} s)",
                  flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    labels = list(dict.fromkeys(r["backend"] for r in rows))
    lines = ["| chunk | case | " + " | ".join(f"{b} warm (first)" for b in labels) + " | torch / jax |",
             "|---|---|" + "---|" * (len(labels) + 1)]
    for chunk in sorted({r["chunk_period"] for r in rows}, reverse=True):
        for case, _, _ in CASES:
            hits = {r["backend"]: r for r in rows if r["chunk_period"] == chunk and r["case"] == case}
            cells = [f"{hits[b]['warm_s'] * 1e3:.0f} ms ({hits[b]['first_s']:.1f} s)" if b in hits else "-"
                     for b in labels]
            ratio = hits["torch"]["warm_s"] / hits["jax"]["warm_s"] if "torch" in hits and "jax" in hits else float("nan")
            lines.append(f"| {chunk} min | {case} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30-day bouts instead of a year")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch with compile=True")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    length = 30 * DAY if args.quick else YEAR
    variants = [("jax", {}), ("torch", {})] + ([] if args.no_compile else [("torch", {"compile": True})])
    rows = []
    for chunk_period in (1440, 60):
        for backend, options in variants:
            rows += run(backend, options, chunk_period, length, args.repeats)
    table = markdown(rows)
    print(table)
    import tfmm
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"machine": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
              "tfmm": tfmm.__version__, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
              "minutes": length - 1, "rows": rows, "table": table}
    (out / ("backends_cpu_quick.json" if args.quick else "backends_cpu.json")).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
