"""tfmm.objective_fn / tfmm.simulate_fn: pure functions that compose with the framework's transformations."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm

DAY = 1440


@pytest.fixture(scope="module")
def scenario():
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=5 * DAY, seed=3, vol=0.6)
    pool = tfmm.Pool(fee=0.003, chunk_period=60, gas=0.5)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20, chunk_period=60)
    return prices, pool, strategy


@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_jax_jit_grad_equals_value_and_grad(scenario, mode):
    jax = pytest.importorskip("jax")
    prices, pool, strategy = scenario
    with tfmm.use("jax"):
        f = tfmm.objective_fn(prices, strategy, pool, length=3 * DAY, mode=mode)
        params = {k: jax.numpy.asarray(v) for k, v in strategy.params.items()}
        value, grads = jax.jit(jax.value_and_grad(f))(params, 120)
        ref_value, ref_grads = tfmm.value_and_grad(prices, strategy, pool, start=120, length=3 * DAY, mode=mode)
    # the same compiled math through two entry points; only the order of fusion can differ
    np.testing.assert_allclose(float(value), float(ref_value), rtol=1e-10)
    for k in ref_grads:
        np.testing.assert_allclose(np.asarray(grads[k]), np.asarray(ref_grads[k]), rtol=1e-10, atol=1e-14)


def test_jax_traced_start_and_sets(scenario):
    """``start`` may be traced (vmap over starts equals the batched mean); a parameter-set axis gives (sets,)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    prices, pool, strategy = scenario
    with tfmm.use("jax"):
        f = tfmm.objective_fn(prices, strategy, pool, length=3 * DAY)
        params = {k: jnp.asarray(v) for k, v in strategy.params.items()}
        starts = jnp.asarray([0, 60, 600])
        per_start = jax.jit(jax.vmap(f, in_axes=(None, 0)))(params, starts)
        np.testing.assert_allclose(float(jnp.mean(per_start)), float(f(params, starts)), rtol=1e-12)
        sets = {k: jnp.stack([v, v + 0.1]) for k, v in params.items()}
        both = f(sets, 60)
        assert both.shape == (2,)
        np.testing.assert_allclose(float(both[0]), float(f(params, 60)), rtol=1e-12)


def test_jax_optax_step_improves(scenario):
    """A user's own loss (objective plus an L2 regulariser) under jit with optax improves on its start."""
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    jnp = jax.numpy
    prices, pool, strategy = scenario
    with tfmm.use("jax"):
        f = tfmm.objective_fn(prices, strategy, pool, length=3 * DAY)

        def loss(params):
            return -f(params, 0) + 1e-3 * sum(jnp.sum(v ** 2) for v in params.values())

        params = {k: jnp.asarray(v) for k, v in strategy.params.items()}
        opt = optax.adam(0.05)
        state = opt.init(params)
        step = jax.jit(lambda p, s: (lambda g: opt.update(g, s, p))(jax.grad(loss)(p)))
        start_loss = float(loss(params))
        for _ in range(5):
            updates, state = step(params, state)
            params = optax.apply_updates(params, updates)
        assert float(loss(params)) < start_loss


def test_simulate_fn_equals_simulate(scenario):
    jax = pytest.importorskip("jax")
    prices, pool, strategy = scenario
    with tfmm.use("jax"):
        g = tfmm.simulate_fn(prices, strategy, pool, length=2 * DAY)
        params = {k: jax.numpy.asarray(v) for k, v in strategy.params.items()}
        sim = g(params, 30)
        ref = tfmm.simulate(prices, strategy, pool, start=30, length=2 * DAY)
        np.testing.assert_array_equal(sim.timestamps, ref.timestamps)
        np.testing.assert_allclose(np.asarray(sim.values), np.asarray(ref.values), rtol=1e-12)
        # returned from jit: Simulation is a pytree of arrays
        jitted = jax.jit(g)(params, 30)
        np.testing.assert_allclose(np.asarray(jitted.reserves), np.asarray(ref.reserves), rtol=1e-12)
        # differentiable: d(final value)/d(params) is finite and non-zero
        grads = jax.grad(lambda p: g(p, 30).values[-1])(params)
        assert all(np.all(np.isfinite(np.asarray(v))) for v in grads.values())


def test_strategy_is_a_jax_pytree(scenario):
    jax = pytest.importorskip("jax")
    _, _, strategy = scenario
    tfmm.get_backend("jax")
    leaves, treedef = jax.tree_util.tree_flatten(strategy)
    assert len(leaves) == len(strategy.params)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, strategy)
    assert doubled.name == strategy.name
    np.testing.assert_allclose(doubled.params["log_k"], 2 * strategy.params["log_k"])


def test_errors_name_the_argument(scenario):
    prices, pool, strategy = scenario
    f = tfmm.objective_fn(prices, strategy, pool, length=3 * DAY)
    with pytest.raises(ValueError, match="start"):
        f({k: np.asarray(v) for k, v in strategy.params.items()}, 5 * DAY)
    with pytest.raises(ValueError, match="params must map"):
        f({"log_k": np.asarray(strategy.params["log_k"])}, 0)
    with pytest.raises(TypeError, match="length"):
        tfmm.objective_fn(prices, strategy, pool, length=3.5 * DAY)
    with pytest.raises(ValueError, match="daily"):
        tfmm.objective_fn(prices, strategy, pool, length=DAY)
