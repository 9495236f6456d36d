"""Every strategy runs on every installed backend (issue 14, item 7), batched the way the engine batches:
a parameter-set axis and an array of starts, i.e. under ``vmap`` (``torch.func.vmap`` on torch), and the
results agree with the reference simulator set by set and start by start."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.data import synthetic_prices
from tfmm.specs import STRATEGY_PARAMETERS

DAY = 1440
POOL = tfmm.Pool(fee=0.003, chunk_period=60, max_change=2e-3)
STARTS = np.array([240, 600])
LENGTH = 8 * 60
ARRAY_BACKENDS = [b for b in ("jax", "torch") if b in tfmm.available_backends()]


@pytest.fixture(scope="module")
def prices():
    return synthetic_prices(n_assets=3, n_minutes=DAY, seed=9, vol=0.9, corr=0.2)


def _strategy(name: str) -> tfmm.Strategy:
    w = np.array([0.3, 0.3, 0.4])
    if not STRATEGY_PARAMETERS[name]:
        return tfmm.Strategy(name, {}, w)
    s = tfmm.Strategy.from_memory_days(name, n_assets=3, memory_days=0.25, k_per_day=8.0, chunk_period=60,
                                       initial_weights=w, n_sets=2)
    rng = np.random.default_rng(sum(map(ord, name)))
    return s.with_params({k: v + rng.normal(0, 0.2, v.shape) for k, v in s.params.items()})


def _reference(prices, strategy):
    """(sets, starts, B-1, n) weights and (sets, starts, B-1) values from the reference, one bout at a time."""
    sets = [strategy] if strategy.n_sets is None else [strategy.param_set(i) for i in range(strategy.n_sets)]
    weights, values = [], []
    with tfmm.use("reference"):
        for single in sets:
            sims = [tfmm.simulate(prices, single, POOL, start=int(s), length=LENGTH).to_numpy() for s in STARTS]
            weights.append([s.weights for s in sims])
            values.append([s.values for s in sims])
    return np.asarray(weights), np.asarray(values)


@pytest.mark.parametrize("backend", ARRAY_BACKENDS)
@pytest.mark.parametrize("name", list(STRATEGY_PARAMETERS))
def test_every_strategy_runs_batched_on_every_backend(prices, name, backend):
    strategy = _strategy(name)
    with tfmm.use(backend) as bk:
        sim = tfmm.simulate(prices, strategy, POOL, start=STARTS, length=LENGTH)
        out = sim.to_numpy()
    lead = (2, len(STARTS)) if strategy.n_sets else (len(STARTS),)
    assert out.weights.shape == lead + (LENGTH - 1, 3)
    ref_w, ref_v = _reference(prices, strategy)
    if not strategy.n_sets:
        ref_w, ref_v = ref_w[0], ref_v[0]
    np.testing.assert_allclose(out.weights, ref_w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out.values, ref_v, rtol=1e-9)
    if strategy.is_trainable:
        # the weights move, so the comparison exercises the rule
        assert np.ptp(out.weights[..., 0]) > 1e-4
        with tfmm.use(backend) as bk:
            value, grads = tfmm.value_and_grad(prices, strategy, POOL, start=STARTS, length=LENGTH,
                                               objective="returns", mode="smooth")
            grads = {k: bk.to_numpy(v) for k, v in grads.items()}
        assert set(grads) == set(strategy.params)
        assert all(np.isfinite(g).all() and g.shape == strategy.params[k].shape for k, g in grads.items())


def test_every_strategy_runs_on_the_reference(prices):
    with tfmm.use("reference"):
        for name in STRATEGY_PARAMETERS:
            strategy = _strategy(name)
            single = strategy.param_set(0) if strategy.n_sets else strategy
            sim = tfmm.simulate(prices, single, POOL, start=STARTS, length=LENGTH).to_numpy()
            assert sim.weights.shape == (len(STARTS), LENGTH - 1, 3)
            assert np.isfinite(sim.values).all()
