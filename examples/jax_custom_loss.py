"""A user's own loss around tfmm's objective, under ``jax.jit`` / ``jax.grad``, optimised with optax.

``tfmm.objective_fn`` validates the scenario once and returns a pure JAX function ``f(params, start)``
(the smooth-mode daily log Sharpe ratio of the bouts at ``start``); this script adds a regulariser of its
own (an L2 pull of the parameters towards their starting values, and a penalty on memory lengths beyond
``--max-memory``), takes ``jax.value_and_grad`` of the sum under ``jax.jit`` and runs ``optax.adam``
(gradients clipped to norm 1) on minibatches of a fixed set of training bouts. Data: the bundled BTC/ETH
minute prices (``tfmm.example_prices()``); the first 70% of the rows train, the bouts of the last 30% test.
It prints the objective on the training bouts before and after, and exact-mode test metrics of the trained
strategy, of the starting strategy and of HODL (six bouts: an illustration, not evidence of an edge).

Run (about 10 seconds with the defaults on 2 cores, a few of them compiling):

    python examples/jax_custom_loss.py                 # --steps 100 --batch 16 --train-bouts 64
    python examples/jax_custom_loss.py --steps 2 --batch 2 --train-bouts 2 --test-bouts 2  # smoke run
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tfmm

DAY = 1440


def memory_days(logit_lambda: jax.Array, chunk_period: int) -> jax.Array:
    """m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3) days, lambda = sigmoid(logit_lambda)."""
    lam = jax.nn.sigmoid(logit_lambda)
    return (2.0 * chunk_period / DAY) * jnp.cbrt(6.0 * lam / (1.0 - lam) ** 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optax steps (default 100)")
    parser.add_argument("--batch", type=int, default=16, help="bouts per step, from the training bouts (default 16)")
    parser.add_argument("--bout-days", type=int, default=4, help="bout length in days (default 4)")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    parser.add_argument("--l2", type=float, default=1e-2, help="weight of the L2 pull to the start (default 1e-2)")
    parser.add_argument("--max-memory", type=float, default=10.0, help="memory days beyond which the penalty "
                                                                       "applies (default 10)")
    parser.add_argument("--test-bouts", type=int, default=None, help="test bouts (default: all that fit)")
    parser.add_argument("--train-bouts", type=int, default=64, help="training bouts, drawn once (default 64)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tfmm.use("jax")
    rng = np.random.default_rng(args.seed)

    prices = tfmm.example_prices()
    pool = tfmm.Pool(fee=0.003, chunk_period=60)
    initial = tfmm.Strategy.from_memory_days("momentum", n_assets=prices.n_assets, memory_days=2, k_per_day=20,
                                             pool=pool)
    length = args.bout_days * DAY
    train_end = int(0.7 * prices.n_rows)
    train_prices = prices.slice(0, train_end)  # the objective sees the training rows only

    f = tfmm.objective_fn(train_prices, initial, pool, length=length, objective="daily_log_sharpe", mode="smooth")
    params0 = {k: jnp.asarray(v) for k, v in initial.params.items()}

    def loss(params: dict[str, jax.Array], starts: jax.Array) -> jax.Array:
        l2 = sum(jnp.sum((params[k] - params0[k]) ** 2) for k in params)
        too_long = jax.nn.relu(memory_days(params["logit_lambda"], pool.chunk_period) / args.max_memory - 1.0)
        return -f(params, starts) + args.l2 * l2 + jnp.sum(too_long ** 2)

    # per-bout Sharpe ratios have heavy-tailed gradients: clip the global norm
    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(args.lr))

    @jax.jit
    def step(params, state, starts):
        value, grads = jax.value_and_grad(loss)(params, starts)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    objective = jax.jit(f)
    # the training set: bout starts drawn once from the training rows; each step takes a minibatch of them
    train_starts = rng.choice(np.arange(0, train_end - length + 1), args.train_bouts, replace=False)
    before = float(objective(params0, jnp.asarray(train_starts)))
    params, state = params0, optimizer.init(params0)
    print(f"{prices.n_rows} rows of {', '.join(prices.assets)}; training on rows < {train_end}, bouts of "
          f"{args.bout_days} days, {args.steps} steps of {args.batch} bouts")
    t0 = time.perf_counter()
    for i in range(args.steps):
        starts = jnp.asarray(rng.choice(train_starts, min(args.batch, len(train_starts)), replace=False))
        params, state, value = step(params, state, starts)
        if i % 10 == 0 or i == args.steps - 1:
            print(f"step {i:3d}  loss {float(value):8.3f}  ({time.perf_counter() - t0:.1f} s; the first step compiles)")
    after = float(objective(params, jnp.asarray(train_starts)))
    print(f"objective on the {len(train_starts)} training bouts (smooth mode): {before:.3f} before, "
          f"{after:.3f} after")

    trained = initial.with_params({k: np.asarray(v) for k, v in params.items()})
    print("trained memory days:", np.round(np.asarray(memory_days(params["logit_lambda"], pool.chunk_period)), 2),
          " log_k:", np.round(np.asarray(params["log_k"]), 3))

    # exact-mode test on the full price history (rows before each bout warm the estimators)
    test_starts = np.arange(train_end, prices.n_rows - length + 1, length)
    if args.test_bouts is not None:
        test_starts = test_starts[: args.test_bouts]
    hodl = tfmm.Strategy("hodl", initial_weights=initial.initial_weights)
    mean = {}
    for name, strategy in (("trained", trained), ("initial", initial), ("hodl", hodl)):
        sim = tfmm.simulate(prices, strategy, pool, start=test_starts, length=length, mode="exact")
        m = tfmm.metrics(sim)
        mean[name] = {k: float(np.mean(m[k])) for k in ("daily_log_sharpe", "returns", "returns_over_hodl")}
    print(f"test metrics (exact mode, {len(test_starts)} bouts of {args.bout_days} days, fee {pool.fee:.1%}): "
          + "; ".join(f"{name}: daily_log_sharpe {m['daily_log_sharpe']:.3f}, returns {m['returns']:+.3%}, "
                      f"over hodl {m['returns_over_hodl']:+.3%}" for name, m in mean.items()))


if __name__ == "__main__":
    main()
