"""Time the pool reserves of tfmm.core.g3m over one year of minutes (prints the numbers; writes nothing).

reserves_with_fees (fee 0.3%, exact and smooth mode) and zero_fee_reserves, 2 assets, float64, JAX on CPU:
forward and forward+grad (gradient of the mean pool value with respect to the weights and prices),
jax.jit, block_until_ready, median of 3 runs after a warm-up; wall time and process CPU time (the scan is
single-threaded; CPU time is less disturbed by other load on a shared machine). fee, gas and arb_fee are
numpy constants by default (reserves_with_fees then specialises its loop); ``--traced-rates`` passes them as
traced arguments instead.

    python bench/bench_pool_step.py [--minutes 525600] [--assets 2] [--checkpoint-every K] [--no-hoist]
                                    [--traced-rates] [--modes exact,smooth,zero] [--repeats 3]

By default XLA:CPU is told to compile each scan into a single kernel
(``--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=...``, set before JAX starts);
``--no-hoist`` leaves XLA_FLAGS as they are (XLA then runs the loop body as one thunk per fusion).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


HOIST_FLAG = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000000"


def _median_time(fn, *args, repeats: int = 3) -> tuple[float, float]:
    """(wall seconds, process CPU seconds): medians over ``repeats`` runs after one warm-up run."""
    import jax

    jax.block_until_ready(fn(*args))
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=525_600)
    parser.add_argument("--assets", type=int, default=2)
    parser.add_argument("--fee", type=float, default=0.003)
    parser.add_argument("--checkpoint-every", type=int, default=None)
    parser.add_argument("--modes", default="exact,smooth,zero")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-hoist", action="store_true", help="do not set the XLA:CPU while-loop flag")
    parser.add_argument("--traced-rates", action="store_true", help="fee, gas, arb_fee as traced arguments")
    args = parser.parse_args()
    if not args.no_hoist:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + HOIST_FLAG).strip()

    import jax
    import jax.numpy as jnp

    import tfmm
    from tfmm.core import g3m

    bk = tfmm.get_backend("jax")
    n, t = args.assets, args.minutes
    rng = np.random.default_rng(0)
    prices = np.exp(np.cumsum(rng.normal(0.0, 1e-3, (t, n)), axis=0)) * np.linspace(100.0, 3000.0, n)
    phase = np.linspace(0.0, 40.0, t)[:, None] + np.arange(n)[None, :]
    weights = 1.0 + 0.3 * np.sin(phase)
    weights = weights / weights.sum(axis=1, keepdims=True)
    sig = g3m.signature_matrix(n, "all")
    smoothing = tfmm.Smoothing()
    fee = np.full(t, args.fee)
    zeros = np.zeros(t)
    prices_j, weights_j = jnp.asarray(prices), jnp.asarray(weights)

    def mean_value(out, p):
        """Mean pool value (USD); with reserves_with_fees' (reserves, trades, fees), plus the mean trade value and
        fees, so that every output is computed."""
        if isinstance(out, tuple):
            reserves, trades, fees = out
            return jnp.mean(jnp.sum((reserves + trades) * p, axis=1) + fees)
        return jnp.mean(jnp.sum(out * p, axis=1))

    rates = (jnp.asarray(fee), jnp.asarray(zeros), jnp.asarray(zeros))

    def fee_fn(smooth):
        def f(w, p, fee_t, gas_t, arb_t):
            r0 = g3m.initial_reserves(1e6, w[0], p[0], jnp)
            if not args.traced_rates:
                fee_t, gas_t, arb_t = fee, zeros, zeros
            return g3m.reserves_with_fees(r0, w, p, fee_t, gas_t, arb_t, sig, smooth=smooth, smoothing=smoothing,
                                    bk=bk, checkpoint_every=args.checkpoint_every)
        return f

    def zero_fn(w, p, *_):
        r0 = g3m.initial_reserves(1e6, w[0], p[0], jnp)
        return g3m.zero_fee_reserves(r0, w, p, bk)

    cases = {"exact": fee_fn(False), "smooth": fee_fn(True), "zero": zero_fn}
    print(f"T={t} n={n} fee={args.fee} checkpoint_every={args.checkpoint_every} traced_rates={args.traced_rates} "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} devices={jax.devices()}")
    for name in args.modes.split(","):
        f = cases[name]
        fwd = jax.jit(f)
        loss = lambda w, p, *r, f=f: mean_value(f(w, p, *r), p)  # noqa: E731
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        vgrad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        t_f = _median_time(fwd, weights_j, prices_j, *rates, repeats=args.repeats)
        t_g = _median_time(grad, weights_j, prices_j, *rates, repeats=args.repeats)
        t_vg = _median_time(vgrad, weights_j, prices_j, *rates, repeats=args.repeats)
        print(f"{name:7s} forward {t_f[0]:.4f} s (cpu {t_f[1]:.4f})  grad {t_g[0]:.4f} s (cpu {t_g[1]:.4f})  "
              f"value_and_grad {t_vg[0]:.4f} s (cpu {t_vg[1]:.4f})", flush=True)


if __name__ == "__main__":
    main()
