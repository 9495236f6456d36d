"""The JAX backend end to end: gradients vs finite differences, batching, dtypes, compile cache, errors."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.data import synthetic_prices
from tfmm.specs import STRATEGY_PARAMETERS

jax = pytest.importorskip("jax")

DAY = 1440
TRAINABLE = [name for name, params in STRATEGY_PARAMETERS.items() if params]


@pytest.fixture(autouse=True)
def _jax_backend():
    with tfmm.use("jax"):
        yield


@pytest.fixture(scope="module")
def prices():
    return synthetic_prices(n_assets=2, n_minutes=8 * DAY, seed=11, vol=0.9, corr=0.3)


def _strategy(name, n=2, **kw):
    s = tfmm.Strategy.from_memory_days(name, n_assets=n, memory_days=0.5, k_per_day=4.0, chunk_period=60, **kw)
    rng = np.random.default_rng(sum(map(ord, name)))
    # break the symmetry between assets so every gradient entry is exercised
    return s.with_params({k: v + rng.normal(0, 0.2, v.shape) for k, v in s.params.items()})


POOL = tfmm.Pool(fee=0.003, chunk_period=60, max_change=2e-3, gas=0.5, arb_fee=0.0005)
SMOOTH = tfmm.Smoothing(gate_temperature=2.0, selection_temperature=2.0, weight_temperature=1e-3)


@pytest.mark.parametrize("objective", ["returns", "daily_log_sharpe"])
@pytest.mark.parametrize("name", TRAINABLE)
def test_smooth_gradient_matches_central_differences(prices, name, objective):
    strategy = _strategy(name)
    start, length = 2 * DAY, 3 * DAY + 2
    value, grads = tfmm.value_and_grad(prices, strategy, POOL, start=start, length=length,
                                       objective=objective, mode="smooth", smoothing=SMOOTH)
    assert np.isfinite(float(value))

    def f(params):
        v, _ = tfmm.value_and_grad(prices, strategy.with_params(params), POOL, start=start, length=length,
                                   objective=objective, mode="smooth", smoothing=SMOOTH)
        return float(v)

    def shifted(key, i, delta):
        p = {k: np.array(v, copy=True) for k, v in strategy.params.items()}
        p[key][i] += delta
        return f(p)

    # Values carry ~3e-13 relative rounding noise (a long product of per-minute factors), so with h = 1e-5 the
    # quotient is good to ~3e-8: "returns" is checked entry-wise at rtol 1e-5. A Sharpe ratio of a few daily
    # returns divides that noise by their small spread (condition number ~1e3 here), so daily_log_sharpe is
    # checked norm-wise at 1e-3 of the largest gradient entry.
    scale = max(float(np.max(np.abs(np.asarray(g)))) for g in grads.values())
    rtol, atol = (1e-3, 1e-3 * scale) if objective == "daily_log_sharpe" else (1e-5, 3e-8)
    for key, arr in strategy.params.items():
        g = np.asarray(grads[key])
        assert np.all(np.isfinite(g)), key
        for i in range(arr.size):
            # Central differences with h = 1e-5: smooth mode keeps a few hard branches (candidate validity,
            # q = max(sp, 1), the lambda cap), which put kinks ~1e-4 away in parameter space on this data.
            h = 1e-5
            fd = (shifted(key, i, h) - shifted(key, i, -h)) / (2 * h)
            assert g[i] == pytest.approx(fd, rel=rtol, abs=atol), (key, i, g[i], fd)


@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_vmap_over_bouts_equals_loop(prices, mode):
    strategy = _strategy("momentum")
    starts = np.array([0, 60, 1000, 2 * DAY])
    batch = tfmm.simulate(prices, strategy, POOL, start=starts, length=DAY, mode=mode, smoothing=SMOOTH)
    assert np.asarray(batch.values).shape == (4, DAY - 1)
    for i, s in enumerate(starts):
        one = tfmm.simulate(prices, strategy, POOL, start=int(s), length=DAY, mode=mode, smoothing=SMOOTH)
        np.testing.assert_allclose(np.asarray(batch.values)[i], np.asarray(one.values), rtol=1e-13)
        np.testing.assert_allclose(np.asarray(batch.weights)[i], np.asarray(one.weights), rtol=1e-13)


def test_parameter_sets_equal_separate_runs(prices):
    sets = tfmm.Strategy.from_memory_days("power_channel", n_assets=2, n_sets=3, chunk_period=60)
    rng = np.random.default_rng(0)
    sets = sets.with_params({k: v + rng.normal(0, 0.3, v.shape) for k, v in sets.params.items()})
    starts = np.array([0, DAY])
    batch = tfmm.simulate(prices, sets, POOL, start=starts, length=DAY)
    assert np.asarray(batch.values).shape == (3, 2, DAY - 1)
    value, grads = tfmm.value_and_grad(prices, sets, POOL, start=starts, length=3 * DAY + 2, objective="returns")
    assert np.asarray(value).shape == (3,) and np.asarray(grads["log_k"]).shape == (3, 2)
    for j in range(3):
        one = tfmm.simulate(prices, sets.param_set(j), POOL, start=starts, length=DAY)
        np.testing.assert_allclose(np.asarray(batch.values)[j], np.asarray(one.values), rtol=1e-13)
        v1, g1 = tfmm.value_and_grad(prices, sets.param_set(j), POOL, start=starts, length=3 * DAY + 2,
                                     objective="returns")
        assert float(np.asarray(value)[j]) == pytest.approx(float(v1), rel=1e-12)
        np.testing.assert_allclose(np.asarray(grads["log_k"])[j], np.asarray(g1["log_k"]), rtol=1e-10)


def test_float32_close_to_float64_on_30_days():
    prices = synthetic_prices(n_assets=2, n_minutes=31 * DAY, seed=3, vol=0.6)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=3, k_per_day=5)
    pool = tfmm.Pool(fee=0.003)
    f64 = tfmm.simulate(prices, strategy, pool, start=0, length=30 * DAY, dtype="float64")
    f32 = tfmm.simulate(prices, strategy, pool, start=0, length=30 * DAY, dtype="float32")
    assert np.asarray(f32.values).dtype == np.float32 and np.asarray(f64.values).dtype == np.float64
    rel = np.max(np.abs(np.asarray(f32.values, dtype=np.float64) / np.asarray(f64.values) - 1))
    assert rel < 1e-4, rel


def test_compiled_function_cached_across_calls(prices):
    strategy = _strategy("momentum")
    engine = tfmm.get_backend().engine
    tfmm.simulate(prices, strategy, POOL, start=0, length=DAY)
    n_cached = len(engine._cache)
    fn = next(v for k, v in engine._cache.items() if k[0] == "simulate")
    size = fn._cache_size()
    other = strategy.with_params({k: v + 0.1 for k, v in strategy.params.items()})
    tfmm.simulate(prices, other, POOL, start=DAY, length=DAY)
    assert len(engine._cache) == n_cached and fn._cache_size() == size


def test_compiled_cache_is_bounded(prices):
    """A sweep over many static configurations keeps at most ``cache_size`` compiled functions (least
    recently used out) and still computes the same numbers after an eviction."""
    from tfmm.api import make_request
    from tfmm.engine import ArrayEngine, CompiledCache

    engine = ArrayEngine(tfmm.get_backend("jax"), cache_size=2)
    strategy = _strategy("momentum")
    first = None
    for length in (DAY // 4, DAY // 3, DAY // 2, DAY // 4):
        sim = engine.simulate(make_request(prices, strategy, POOL, start=0, length=length))
        first = sim.values if first is None else first
        assert len(engine._cache) <= 2
    assert engine._cache.evictions == 2  # the fourth call rebuilt the evicted first length
    np.testing.assert_array_equal(np.asarray(sim.values), np.asarray(first))
    cache = CompiledCache(maxsize=1)
    cache.get("a", lambda: len)
    cache.get("b", lambda: len)
    assert "a" not in cache and "b" in cache and cache.forget(lambda k: k == "b") == 1 and len(cache) == 0
    with pytest.raises(ValueError, match="TFMM_COMPILED_CACHE_SIZE"):
        import os
        from unittest import mock

        with mock.patch.dict(os.environ, {"TFMM_COMPILED_CACHE_SIZE": "0"}):
            CompiledCache()


def test_clear_compiled_frees_compiled_functions_and_their_memory_maps(prices):
    """clear_compiled drops every compiled function of the backend (their count is returned), the process's
    memory mappings fall back (XLA:CPU maps each executable's code separately), and the next call recompiles
    the same numbers."""
    import gc
    from pathlib import Path

    maps = Path("/proc/self/maps")
    count_maps = (lambda: len(maps.read_text().splitlines())) if maps.exists() else (lambda: 0)
    bk = tfmm.get_backend("jax", fee_path="scan")  # an instance of its own: other tests' functions stay
    with tfmm.use("jax", fee_path="scan"):  # the process's first compile maps some code for good
        tfmm.simulate(prices, _strategy("momentum"), POOL, start=0, length=299)
    bk.clear_compiled()
    gc.collect()
    before = count_maps()
    with tfmm.use("jax", fee_path="scan"):
        first = [tfmm.simulate(prices, _strategy("momentum"), POOL, start=0, length=n).values for n in (300, 301, 302)]
        assert bk.clear_compiled() == 3 and bk.clear_compiled() == 0
        gc.collect()
        assert count_maps() <= before + 50  # 3 compiled functions held ~300 more mappings
        again = tfmm.simulate(prices, _strategy("momentum"), POOL, start=0, length=300).values
    np.testing.assert_array_equal(np.asarray(again), np.asarray(first[0]))


def test_zero_fee_equals_tiny_fee_limit(prices):
    strategy = _strategy("momentum")
    zero = tfmm.simulate(prices, strategy, tfmm.Pool(fee=0.0, chunk_period=60, max_change=2e-3), start=0, length=DAY)
    tiny = tfmm.simulate(prices, strategy, tfmm.Pool(fee=1e-9, chunk_period=60, max_change=2e-3), start=0, length=DAY)
    np.testing.assert_allclose(np.asarray(tiny.values), np.asarray(zero.values), rtol=1e-6)


def test_errors_before_tracing(prices):
    strategy = _strategy("momentum")
    with pytest.raises(ValueError, match="bouts are never clamped"):
        tfmm.simulate(prices, strategy, POOL, start=7 * DAY, length=2 * DAY)
    with pytest.raises(ValueError, match="needs at least 2 daily returns"):
        tfmm.value_and_grad(prices, strategy, POOL, start=0, length=2 * DAY)
    with pytest.raises(ValueError, match=r"mode='fast' is invalid"):
        tfmm.simulate(prices, strategy, POOL, mode="fast")
    with pytest.raises(TypeError, match="start must be an integer"):
        tfmm.simulate(prices, strategy, POOL, start=1.5)


def test_bout_ending_on_last_row_runs(prices):
    strategy = _strategy("min_variance")
    n = prices.n_rows
    sim = tfmm.simulate(prices, strategy, POOL, start=n - 2 * DAY, length=2 * DAY + 1)
    assert np.all(np.isfinite(np.asarray(sim.values))) and np.asarray(sim.values).shape == (2 * DAY,)
