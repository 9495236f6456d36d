"""The composed reference simulator (tfmm.reference.simulate) and the "reference" backend."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tfmm
from tfmm.api import make_request
from tfmm.reference import make_backend, pool, simulate_bout
from tfmm.reference.objectives import objective as reference_objective
from tfmm.specs import STRATEGY_PARAMETERS

STRATEGIES = tuple(STRATEGY_PARAMETERS)


def make_strategy(name: str, n: int = 2, chunk_period: int = 60, n_sets: int | None = None,
                  memory_days: float = 0.5, k_per_day: float = 50.0) -> tfmm.Strategy:
    if name in ("balancer", "hodl"):
        w = np.arange(1, n + 1, dtype=float)
        return tfmm.Strategy(name, {}, initial_weights=w / w.sum())
    return tfmm.Strategy.from_memory_days(name, n_assets=n, memory_days=memory_days, k_per_day=k_per_day,
                                          chunk_period=chunk_period, n_sets=n_sets)


@pytest.fixture(scope="module")
def prices():
    return tfmm.synthetic_prices(n_assets=2, n_minutes=4 * 1440, seed=7, vol=1.2)


# --- isolation and the backend object ------------------------------------------------------------

def test_reference_imports_no_core_math_and_no_array_framework():
    code = textwrap.dedent("""
        import sys
        import tfmm
        before = {m for m in sys.modules if m.startswith("tfmm.core")}
        import tfmm.reference
        from tfmm.api import make_request
        prices = tfmm.Prices(100 * (1 + 0.01 * __import__("numpy").random.default_rng(0).random((3000, 2))))
        strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, chunk_period=60)
        backend = tfmm.reference.make_backend()
        sim = backend.simulate(make_request(prices, strategy, tfmm.Pool(chunk_period=60), 60, 2000, "smooth"))
        backend.metrics(sim)
        added = sorted({m for m in sys.modules if m.startswith("tfmm.core")} - before)
        frameworks = sorted(m for m in sys.modules
                            if m.split(".")[0] in ("jax", "jaxlib", "torch", "optax") or m.startswith("tfmm.backends"))
        print(repr((added, frameworks)))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    added, frameworks = ast.literal_eval(out.stdout.strip().splitlines()[-1])
    assert added == [] and frameworks == []


def test_use_reference_gives_the_numpy_backend():
    with tfmm.use("reference") as bk:
        assert bk.name == "reference" and bk.xp is np
        assert tfmm.get_backend() is bk
        assert bk.asarray([1, 2], "float32").dtype == np.float32


# --- end to end through tfmm.simulate / tfmm.metrics ------------------------------------------------

def test_simulate_and_metrics_end_to_end(prices):
    strategy = make_strategy("momentum")
    pool_spec = tfmm.Pool(fee=0.003, chunk_period=60, gas=0.5)
    start, length = 120, 3 * 1440 + 2
    with tfmm.use("reference"):
        sim = tfmm.simulate(prices, strategy, pool_spec, start=start, length=length)
        metrics = tfmm.metrics(sim)
    T = length - 1
    assert sim.backend == "reference" and sim.mode == "exact"
    assert sim.reserves.shape == (T, 2) and sim.weights.shape == (T, 2) and sim.values.shape == (T,)
    assert sim.trades.shape == (T, 2) and sim.fees.shape == (T,)
    np.testing.assert_array_equal(sim.prices, prices.values[start:start + T])
    np.testing.assert_array_equal(sim.timestamps, prices.timestamps[start:start + T])
    np.testing.assert_allclose(sim.reserves[0], 1e6 * strategy.initial_weights / prices.values[start], rtol=1e-15)
    np.testing.assert_allclose(sim.values, np.sum(sim.reserves * sim.prices, axis=1), rtol=1e-14)
    np.testing.assert_allclose(sim.reserves, sim.reserves[0] + np.cumsum(sim.trades, axis=0), rtol=1e-9)
    assert np.any(sim.weights[-1] != strategy.initial_weights)
    v, r0, p = sim.values, sim.reserves[0], sim.prices
    assert metrics["returns"] == pytest.approx(v[-1] / v[0] - 1, rel=1e-12)
    assert metrics["returns_over_hodl"] == pytest.approx(v[-1] / (r0 @ p[-1]) - 1, rel=1e-12)
    daily = np.diff(np.log(v[::1440]))
    expected = np.sqrt(365) * daily.mean() / np.sqrt(daily.var() + 1e-16)
    assert metrics["daily_log_sharpe"] == pytest.approx(expected, rel=1e-10)
    assert all(isinstance(x, float) for x in metrics.values())
    frame = sim.to_pandas()
    assert len(frame) == T


def test_batched_sets_and_starts_equal_single_bouts(prices):
    strategy = make_strategy("power_channel", n_sets=2)
    params = {k: v.copy() for k, v in strategy.params.items()}
    params["log_k"][1] += 1.0
    strategy = strategy.with_params(params)
    pool_spec = tfmm.Pool(fee=0.002, chunk_period=60)
    starts = np.array([60, 700])
    length = 2 * 1440 + 10
    with tfmm.use("reference"):
        sim = tfmm.simulate(prices, strategy, pool_spec, start=starts, length=length, mode="smooth")
        metrics = tfmm.metrics(sim)
        assert sim.values.shape == (2, 2, length - 1) and sim.reserves.shape == (2, 2, length - 1, 2)
        assert sim.prices.shape == (2, length - 1, 2) and sim.timestamps.shape == (2, length - 1)
        assert metrics["returns"].shape == (2, 2)
        for k in range(2):
            for j, s in enumerate(starts):
                single = tfmm.simulate(prices, strategy.param_set(k), pool_spec, start=int(s), length=length,
                                       mode="smooth")
                np.testing.assert_array_equal(sim.reserves[k, j], single.reserves)
                np.testing.assert_array_equal(sim.weights[k, j], single.weights)
                np.testing.assert_array_equal(sim.fees[k, j], single.fees)
                np.testing.assert_array_equal(sim.prices[j], single.prices)
                assert metrics["returns"][k, j] == tfmm.metrics(single)["returns"]
        assert not np.array_equal(sim.weights[0, 0], sim.weights[1, 0])
        only_starts = tfmm.simulate(prices, strategy.param_set(1), pool_spec, start=starts, length=length,
                                    mode="smooth")
        assert only_starts.values.shape == (2, length - 1)
        np.testing.assert_array_equal(only_starts.values, sim.values[1])


def test_float32_request_returns_float32(prices):
    with tfmm.use("reference"):
        sim = tfmm.simulate(prices, make_strategy("momentum"), tfmm.Pool(chunk_period=60), start=0, length=2000,
                            dtype="float32")
    assert sim.values.dtype == np.float32 and sim.reserves.dtype == np.float32


# --- the composition -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_values_weights_and_reserves_are_consistent(prices, name, mode):
    n = 3 if name == "min_variance" else 2
    values = prices.values if n == 2 else np.column_stack([prices.values, prices.values[:, 0] ** 0.5 * 10])
    pool_spec = tfmm.Pool(fee=0.003, chunk_period=60, max_change=1e-3)
    req = make_request(values, make_strategy(name, n=n, k_per_day=400.0), pool_spec, 300, 1440 * 2 + 2, mode)
    out = simulate_bout(req, 300)
    w_min, w_max = pool_spec.weight_bounds(n)
    np.testing.assert_allclose(out["values"], np.sum(out["reserves"] * out["prices"], axis=1), rtol=1e-14)
    np.testing.assert_allclose(out["weights"].sum(axis=1), 1.0, atol=1e-12)
    assert np.all(out["weights"] >= w_min - 1e-12) and np.all(out["weights"] <= w_max + 1e-12)
    assert np.all(out["reserves"] > 0)
    np.testing.assert_array_equal(out["weights"][:60], np.tile(req.strategy.initial_weights, (60, 1)))
    if name == "hodl":
        assert np.all(out["reserves"] == out["reserves"][0]) and np.all(out["trades"] == 0)
    if name in ("balancer", "hodl"):
        assert np.all(out["weights"] == req.strategy.initial_weights)
    else:
        assert np.max(np.abs(np.diff(out["weights"], axis=0))) <= 1e-3 * (1 + 1e-9)


def test_fee_free_balancer_is_the_closed_form(prices):
    strategy = make_strategy("balancer")
    req = make_request(prices, strategy, tfmm.Pool(fee=0.0, chunk_period=60), 100, 1500)
    out = simulate_bout(req, 100)
    expected = pool.zero_fee_closed_form(out["reserves"][0], out["weights"], out["prices"])
    np.testing.assert_allclose(out["reserves"], expected, rtol=1e-7)


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["momentum", "anti_momentum", "power_channel", "mean_reversion_channel",
                        "difference_momentum", "min_variance"]),
       st.floats(0.1, 5.0), st.floats(1.0, 2000.0), st.sampled_from([1, 30, 60]), st.booleans(),
       st.sampled_from(["linear", "approx_optimal"]))
def test_weights_stay_in_bounds_and_sum_to_one(name, memory_days, k_per_day, interval, smooth, interpolation):
    prices = tfmm.synthetic_prices(n_assets=3, n_minutes=1440, seed=int(k_per_day), vol=2.0)
    strategy = make_strategy(name, n=3, memory_days=memory_days, k_per_day=k_per_day)
    pool_spec = tfmm.Pool(chunk_period=60, interpolation_period=interval, max_change=5e-3,
                          interpolation=interpolation)
    req = make_request(prices, strategy, pool_spec, 60, 1300, "smooth" if smooth else "exact")
    w = simulate_bout(req, 60)["weights"]
    w_min, w_max = pool_spec.weight_bounds(3)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    slack = 1e-12 if interpolation == "linear" else 1e-3 * (w_max - w_min)
    assert np.all(w >= w_min - 1e-12) and np.all(w <= w_max + slack)


# --- no look-ahead -----------------------------------------------------------------------------------

@pytest.mark.parametrize("chunk_period, starts", [(1, (0, 7)), (60, (120, 150)), (1440, (1440, 2000))])
@pytest.mark.parametrize("name", STRATEGIES)
def test_no_look_ahead(prices, name, chunk_period, starts):
    """Changing prices from row m on leaves bout rows < m - start unchanged (and changes row m - start)."""
    n_rows = prices.n_rows
    strategy = make_strategy(name, chunk_period=chunk_period, memory_days=0.5 if chunk_period > 1 else 0.05)
    pool_spec = tfmm.Pool(fee=0.003, chunk_period=chunk_period)
    rng = np.random.default_rng(0)
    for start in starts:
        length = n_rows - start + 1
        boundary = (start // chunk_period + 2) * chunk_period
        for mode in ("exact", "smooth") if chunk_period == 60 else ("exact",):
            base = simulate_bout(make_request(prices, strategy, pool_spec, start, length, mode), start)
            for m in (boundary - 1, boundary, boundary + 1, start + length // 2):
                changed = prices.values.copy()
                changed[m:] *= np.exp(rng.normal(0.0, 0.05, (n_rows - m, 2)))
                other = simulate_bout(make_request(changed, strategy, pool_spec, start, length, mode), start)
                cut = m - start
                for key in ("reserves", "weights", "values", "trades", "fees", "prices"):
                    np.testing.assert_array_equal(base[key][:cut], other[key][:cut], err_msg=f"{key}, m={m}")
                assert base["values"][cut] != other["values"][cut]


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_bout_may_end_on_the_last_row(name):
    """T = 50 c + 1 rows: the last rule output of a bout to the end needs chunk price row 50 c = T - 1."""
    c = 60
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=50 * c + 1, seed=3)
    strategy = make_strategy(name, chunk_period=c)
    start = 2 * c
    length = prices.n_rows - start + 1
    req = make_request(prices, strategy, tfmm.Pool(fee=0.003, chunk_period=c), start, length)
    out = simulate_bout(req, start)
    assert out["values"].shape == (prices.n_rows - start,)
    np.testing.assert_array_equal(out["prices"][-1], prices.values[-1])
    assert (start // c + (length - 2) // c) * c == prices.n_rows - 1
    with pytest.raises(ValueError, match="rows"):
        make_request(prices, strategy, tfmm.Pool(chunk_period=c), start, length + 1)
    with pytest.raises(ValueError, match="rows"):
        simulate_bout(req, start + 1)


@pytest.mark.parametrize("name", ["momentum", "min_variance"])
def test_smooth_converges_to_exact_as_temperatures_vanish(prices, name):
    pool_spec = tfmm.Pool(fee=0.003, chunk_period=60, gas=0.2, arb_fee=5e-4)
    strategy = make_strategy(name)
    exact = simulate_bout(make_request(prices, strategy, pool_spec, 60, 2 * 1440, "exact"), 60)
    errors = []
    for factor in (1e-1, 1e-4, 1e-9):
        smoothing = tfmm.Smoothing(selection="softmax").scaled(factor)
        smooth = simulate_bout(make_request(prices, strategy, pool_spec, 60, 2 * 1440, "smooth", smoothing), 60)
        errors.append(max(float(np.max(np.abs(smooth["values"] / exact["values"] - 1))),
                          float(np.max(np.abs(smooth["weights"] - exact["weights"])))))
    assert errors[-1] < 1e-7
    assert errors[-1] < errors[0]


# --- finite-difference gradients ----------------------------------------------------------------------

def test_value_and_grad_matches_hand_perturbed_objective(prices):
    strategy = make_strategy("momentum", memory_days=0.3, k_per_day=30.0)
    pool_spec = tfmm.Pool(fee=0.003, chunk_period=60)
    starts, length = np.array([0, 600]), 2 * 1440 + 62
    with tfmm.use("reference"):
        value, grads = tfmm.value_and_grad(prices, strategy, pool_spec, start=starts, length=length,
                                           objective="daily_log_sharpe", mode="smooth")

    def objective(params):
        req = make_request(prices, strategy.with_params(params), pool_spec, starts, length, "smooth")
        bouts = [simulate_bout(req, int(s)) for s in starts]
        return np.mean([reference_objective("daily_log_sharpe", b["values"], b["reserves"][0], b["prices"])
                        for b in bouts])

    assert isinstance(value, float) and value == pytest.approx(objective(strategy.params), rel=1e-14)
    assert set(grads) == set(strategy.params) and all(g.shape == (2,) for g in grads.values())
    h = 1e-4
    for name in strategy.params:
        for i in range(2):
            up = {k: v.copy() for k, v in strategy.params.items()}
            down = {k: v.copy() for k, v in strategy.params.items()}
            up[name][i] += h
            down[name][i] -= h
            by_hand = (objective(up) - objective(down)) / (2 * h)
            assert grads[name][i] == pytest.approx(by_hand, rel=1e-3, abs=1e-4)


def test_value_and_grad_with_parameter_sets(prices):
    strategy = make_strategy("anti_momentum", n_sets=2, memory_days=0.3, k_per_day=30.0)
    params = {k: v.copy() for k, v in strategy.params.items()}
    params["logit_lambda"][1] -= 0.5
    strategy = strategy.with_params(params)
    pool_spec = tfmm.Pool(fee=0.003, chunk_period=60)
    backend = make_backend()
    req = make_request(prices, strategy, pool_spec, 60, 2000, "smooth")
    values, grads = backend.value_and_grad_objective(req, "returns")
    assert values.shape == (2,) and all(g.shape == (2, 2) for g in grads.values())
    for k in range(2):
        single = make_request(prices, strategy.param_set(k), pool_spec, 60, 2000, "smooth")
        value, grad = backend.value_and_grad_objective(single, "returns")
        assert values[k] == value
        for name in grad:
            np.testing.assert_array_equal(grads[name][k], grad[name])


def test_simulate_bout_needs_one_parameter_set(prices):
    req = make_request(prices, make_strategy("momentum", n_sets=2), tfmm.Pool(chunk_period=60), 0, 1000)
    with pytest.raises(ValueError, match="parameter-set"):
        simulate_bout(req, 0)
