"""User strategies (tfmm.register_strategy): one rule, written once, on JAX and torch; checked against a
hand computation, against the built-in momentum, through training and TOML, and every error it raises."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.core.strategies import registry
from tfmm.core.strategies.common import lambda_cap
from tfmm.specs import DELTA_RULES, STRATEGY_PARAMETERS, WEIGHT_RULES, unregister_strategy

DAY = 1440
ARRAY_BACKENDS = [b for b in ("jax", "torch") if b in tfmm.available_backends()]
BUILTIN_NAMES = registry.names()


# --- user rules, written against the namespace the core passes (bk.xp and bk's primitives) -------------

def trend(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk):
    """Last chunk's log return s_m = log(pbar_{m+1} / pbar_m), centred with k = exp(log_scale):
    r = k (s - sum(k s) / sum(k)) (zero-sum weight changes)."""
    xp = bk.xp
    k = xp.exp(params["log_scale"])
    s = xp.log(chunk_prices[1:] / chunk_prices[:-1])
    return k * (s - xp.sum(k * s, axis=-1, keepdims=True) / xp.sum(k))


def anti_trend(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk):
    return -trend(chunk_prices, params, chunk_period=chunk_period, beta=beta, max_memory_days=max_memory_days,
                  bk=bk)


def momentum_from_math(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk):
    """docs/math.md 4-5 read literally: EWMA e and gradient state a by a sequential bk.scan, g = a / (b e),
    b = lambda / (1 - lambda)^3, m = (2c/1440) cbrt(6 lambda / (1 - lambda)^3), k = 2^log_k m."""
    xp = bk.xp
    logit = params["logit_lambda"]
    lam = xp.minimum(bk.sigmoid(logit), xp.full_like(logit, lambda_cap(chunk_period, max_memory_days)))
    memory = (2.0 * chunk_period / DAY) * (6.0 * lam / (1.0 - lam) ** 3) ** (1.0 / 3.0)
    k = 2.0 ** params["log_k"] * memory
    b = lam / (1.0 - lam) ** 3

    def step(carry, x):
        e, a = carry
        e = lam * e + (1.0 - lam) * x
        a = lam * a + (x - e) / (1.0 - lam)
        return (e, a), a / (b * e)

    _, g = bk.scan(step, (chunk_prices[0], xp.zeros_like(chunk_prices[0])), chunk_prices[1:])
    return k * (g - xp.sum(k * g, axis=-1, keepdims=True) / xp.sum(k))


def tilt(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk):
    """A weight rule: target weights softmax(exp(log_scale) * log return), each row summing to 1."""
    xp = bk.xp
    return bk.softmax(xp.exp(params["log_scale"]) * xp.log(chunk_prices[1:] / chunk_prices[:-1]), axis=-1)


# --- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture
def register():
    """tfmm.register_strategy, with every strategy it registered removed after the test."""
    names: list[str] = []

    def _register(name, *args, **kwargs):
        record = tfmm.register_strategy(name, *args, **kwargs)
        names.append(name)
        return record

    yield _register
    for name in dict.fromkeys(names):
        if registry.is_registered(name):
            unregister_strategy(name)
    assert registry.names() == BUILTIN_NAMES


@pytest.fixture(scope="module")
def prices3():
    return tfmm.synthetic_prices(n_assets=3, n_minutes=2 * DAY, seed=5, vol=0.8, corr=0.3)


def _backend_arrays(bk, tree):
    return {k: bk.to_numpy(v) for k, v in tree.items()}


def _needs(backends):
    missing = [b for b in backends if b not in ARRAY_BACKENDS]
    if missing:
        pytest.skip(f"backends {missing} not installed")


# --- hand computation ---------------------------------------------------------------------------------

def _hand_simulation(values, w_init, log_scale, c, length, initial_value):
    """docs/math.md 1-3 for the trend rule in a pool without fees, guardrails or speed limit binding:
    chunk prices pbar_m = p_{mc}; r_m from :func:`trend`; coarse a_{k+1} = a_k + r_k; fine rows: c rows of
    w_init, then a_k + j r_k / c; reserves by the zero-fee closed form (2.2); V_t = sum R_t p_t."""
    pbar = values[::c]
    k = np.exp(log_scale)
    s = np.log(pbar[1:] / pbar[:-1])
    r = k * (s - (s @ k)[:, None] / k.sum())
    n_chunks = (length - 2) // c
    rows, a = [np.tile(w_init, (c, 1))], np.array(w_init, dtype=float)
    for m in range(n_chunks):
        rows.append(a + np.arange(c)[:, None] * (r[m] / c))
        a = a + r[m]
    w = np.concatenate(rows)[: length - 1]
    p = values[: length - 1]
    reserves = [initial_value * w[0] / p[0]]
    for t in range(1, length - 1):
        x, y = p[t] / p[t - 1], w[t] / w[t - 1]
        rho_p = np.exp(w[t - 1] @ np.log(x)) / x
        rho_w = y / np.exp(w[t] @ np.log(y))
        reserves.append(reserves[-1] * rho_p * rho_w)
    reserves = np.array(reserves)
    return w, (reserves * p).sum(axis=1)


@pytest.mark.parametrize("backend", ARRAY_BACKENDS)
def test_user_rule_equals_hand_computation(register, backend):
    register("trend", ("log_scale",), trend)
    rng = np.random.default_rng(0)
    values = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, (41, 2)), axis=0)) * np.array([1.0, 20.0])
    prices = tfmm.Prices(values)
    c, length = 8, 41  # 4 chunks of rule outputs after the virtual first chunk: 40 rows
    pool = tfmm.Pool(fee=0.0, chunk_period=c, max_change=1.0, min_weight=0.01)
    log_scale = np.array([0.3, -0.2])
    strategy = tfmm.Strategy("trend", {"log_scale": log_scale}, initial_weights=[0.4, 0.6])
    with tfmm.use(backend):
        sim = tfmm.simulate(prices, strategy, pool, start=0, length=length, mode="exact").to_numpy()
    w, v = _hand_simulation(values, np.array([0.4, 0.6]), log_scale, c, length, pool.initial_value)
    assert np.ptp(w[:, 0]) > 1e-3  # the rule moves the weights
    # the same formulas, another order (log-domain powers, cumulative products in the core): rounding only
    np.testing.assert_allclose(sim.weights, w, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sim.values, v, rtol=1e-12)


# --- one rule, two backends -----------------------------------------------------------------------------

def test_user_rule_values_and_gradients_agree_on_jax_and_torch(register, prices3):
    _needs(("jax", "torch"))
    register("trend", ("log_scale",), trend, defaults={"log_scale": -0.5})
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=2e-3)
    strategy = tfmm.Strategy.from_memory_days("trend", n_assets=3, pool=pool, initial_weights=[0.3, 0.3, 0.4],
                                              n_sets=2)
    strategy = strategy.with_params({"log_scale": np.array([[-0.5, 0.1, 0.4], [0.2, -0.3, 0.0]])})
    starts, length = np.array([360, 720]), DAY // 4
    out = {}
    for backend in ("jax", "torch"):
        with tfmm.use(backend) as bk:
            sim = tfmm.simulate(prices3, strategy, pool, start=starts, length=length).to_numpy()
            value, grads = tfmm.value_and_grad(prices3, strategy, pool, start=starts, length=length,
                                               objective="returns", mode="smooth")
            out[backend] = sim, bk.to_numpy(value), _backend_arrays(bk, grads)
    (sim_j, val_j, g_j), (sim_t, val_t, g_t) = out["jax"], out["torch"]
    assert sim_j.values.shape == (2, 2, length - 1)
    assert np.ptp(sim_j.weights[..., 0]) > 1e-3
    # one rule, the same float64 formulas in another order (XLA fusion vs eager torch): rounding (measured 1e-15)
    np.testing.assert_allclose(sim_j.values, sim_t.values, rtol=1e-10)
    np.testing.assert_allclose(sim_j.weights, sim_t.weights, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(val_j, val_t, rtol=1e-10)
    # reverse mode through ~360 arbitrage steps adds up the rounding of both passes (measured 1e-13)
    assert np.abs(g_j["log_scale"]).min() > 1e-8  # every entry is informative
    np.testing.assert_allclose(g_j["log_scale"], g_t["log_scale"], rtol=1e-8)


def test_user_momentum_from_the_math_equals_builtin_momentum(register, prices3):
    register("my_momentum", ("log_k", "logit_lambda"), momentum_from_math)
    pool = tfmm.Pool(fee=0.0, chunk_period=60, max_change=2e-3)  # the rule is under test: the closed-form pool
    kwargs = dict(n_assets=3, memory_days=0.3, k_per_day=6.0, pool=pool, initial_weights=[0.3, 0.3, 0.4])
    builtin = tfmm.Strategy.from_memory_days("momentum", **kwargs)
    rng = np.random.default_rng(1)
    builtin = builtin.with_params({k: v + rng.normal(0.0, 0.2, v.shape) for k, v in builtin.params.items()})
    mine = tfmm.Strategy("my_momentum", builtin.params, initial_weights=builtin.initial_weights,
                         chunk_period=pool.chunk_period)
    assert mine.rule_kind == "delta"
    with tfmm.use(ARRAY_BACKENDS[0]):  # one backend: the plumbing is shared (torch: the tests above)
        a = tfmm.simulate(prices3, builtin, pool, start=720, length=DAY // 4).to_numpy()
        b = tfmm.simulate(prices3, mine, pool, start=720, length=DAY // 4).to_numpy()
    assert np.ptp(a.weights[:, 0]) > 1e-3
    # same math, other operations (literal x - e recurrence, cbrt as a power): rounding (measured 6e-16)
    np.testing.assert_allclose(b.weights, a.weights, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(b.values, a.values, rtol=1e-10)


def test_weight_rule_runs_on_both_backends(register, prices3):
    register("tilt", ("log_scale", "logit_lambda_2"), tilt, kind="weight", defaults={"log_scale": 3.0})
    assert "tilt" in WEIGHT_RULES and "tilt" not in DELTA_RULES
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=2e-3)
    strategy = tfmm.Strategy.from_memory_days("tilt", n_assets=3, pool=pool, memory_days=0.2)
    assert strategy.rule_kind == "weight"
    assert strategy.params["log_scale"].tolist() == [3.0, 3.0, 3.0]
    values = []
    for backend in ARRAY_BACKENDS:
        with tfmm.use(backend):
            sim = tfmm.simulate(prices3, strategy, pool, start=720, length=DAY // 4).to_numpy()
        assert np.ptp(sim.weights[:, 0]) > 1e-4
        values.append(sim.values)
    # rounding only (see the test above)
    np.testing.assert_allclose(values[0], values[-1], rtol=1e-10)


# --- training and files ---------------------------------------------------------------------------------

def test_train_runs_on_jax(register):
    _needs(("jax",))
    register("trend", ("log_scale",), trend, defaults={"log_scale": -1.0})
    full = tfmm.example_prices()
    rows = 4 * DAY  # the first 4 days of the bundled data: 2 to train on, 1 to validate, 1 to test
    prices = tfmm.Prices(full.values[:rows], timestamps=full.timestamps[:rows], assets=full.assets)
    pool = tfmm.Pool(fee=0.0, chunk_period=60, max_change=1e-3)  # the closed-form pool compiles fastest
    strategy = tfmm.Strategy.from_memory_days("trend", n_assets=2, pool=pool)
    config = tfmm.TrainConfig(objective="returns", bout_length=DAY // 2, batch_size=2, n_iterations=3,
                              eval_every=3, burn_in=0, split=(0.5, 0.25, 0.25), checkpoint_every=3, seed=1)
    with tfmm.use("jax"):
        result = tfmm.train(prices, strategy, pool, config, progress=False)
    assert result.strategy.name == "trend"
    history = result.history
    assert len(history) == 3
    assert np.all(np.isfinite(history["objective"])) and np.all(history["grad_norm"] > 0)
    assert np.all(np.isfinite(result.strategy.params["log_scale"]))
    # the best parameters as a run folder writes them (best_params.toml) load back while it is registered
    best = tfmm.from_toml(tfmm.to_toml(strategy=result.strategy))["strategy"]
    np.testing.assert_array_equal(best.params["log_scale"], result.strategy.params["log_scale"])


def test_toml_round_trip_by_name(register, tmp_path):
    register("trend", ("log_scale",), trend)
    strategy = tfmm.Strategy("trend", {"log_scale": [0.25, -0.5]}, initial_weights=[0.3, 0.7], chunk_period=60)
    text = tfmm.to_toml(pool=tfmm.Pool(chunk_period=60), strategy=strategy)
    assert 'name = "trend"' in text
    back = tfmm.from_toml(text)["strategy"]
    assert back.name == "trend" and back.chunk_period == 60
    np.testing.assert_array_equal(back.params["log_scale"], strategy.params["log_scale"])
    np.testing.assert_array_equal(back.initial_weights, strategy.initial_weights)
    path = tmp_path / "run.toml"
    path.write_text(text)
    unregister_strategy("trend")
    with pytest.raises(ValueError, match=r"\[strategy\] name='trend' is invalid: .*tfmm\.register_strategy"):
        tfmm.load_config(path)
    register("trend", ("log_scale",), trend)
    assert tfmm.load_config(path)["strategy"].name == "trend"


# --- registry views and replacement ----------------------------------------------------------------------

def test_views_follow_the_registry(register):
    assert "trend" not in STRATEGY_PARAMETERS and "trend" not in DELTA_RULES
    register("trend", ("log_scale",), trend)
    assert STRATEGY_PARAMETERS["trend"] == ("log_scale",)
    assert "trend" in DELTA_RULES and DELTA_RULES[-1] == "trend"
    assert tuple(STRATEGY_PARAMETERS)[:8] == BUILTIN_NAMES
    unregister_strategy("trend")
    assert "trend" not in STRATEGY_PARAMETERS and "trend" not in DELTA_RULES
    assert DELTA_RULES == ("momentum", "anti_momentum", "power_channel", "mean_reversion_channel",
                           "difference_momentum")


def test_overwrite_replaces_the_compiled_rule(register):
    _needs(("jax",))
    register("trend", ("log_scale",), trend)
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=DAY // 2, seed=3, vol=1.0)
    pool = tfmm.Pool(fee=0.003, chunk_period=30)
    strategy = tfmm.Strategy("trend", {"log_scale": [0.0, 0.0]})
    with tfmm.use("jax"):
        before = tfmm.simulate(prices, strategy, pool).to_numpy().weights
        with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
            tfmm.register_strategy("trend", ("log_scale",), anti_trend)
        register("trend", ("log_scale",), anti_trend, overwrite=True)
        after = tfmm.simulate(prices, strategy, pool).to_numpy().weights
    # anti_trend's outputs are trend's negated; no guardrail binds, so the weights move the other way
    assert np.abs(before - before[0]).max() > 1e-3
    np.testing.assert_allclose(after - after[0], -(before - before[0]), atol=1e-15)


# --- errors ------------------------------------------------------------------------------------------

def test_builtin_names_cannot_be_replaced(register):
    for name in ("momentum", "balancer"):
        with pytest.raises(ValueError, match=f"{name!r} is a built-in strategy and cannot be replaced"):
            tfmm.register_strategy(name, ("log_k",), trend, overwrite=True)
    with pytest.raises(ValueError, match="built in and cannot be unregistered"):
        unregister_strategy("momentum")


@pytest.mark.parametrize("kind", ["constant", "delta_rule", None])
def test_bad_kind(kind):
    with pytest.raises(ValueError, match=r"kind=.* is invalid: allowed one of 'delta', 'weight'"):
        tfmm.register_strategy("trend", ("log_scale",), trend, kind=kind)


@pytest.mark.parametrize("parameters, problem", [
    ("log_scale", "a sequence of parameter names"),
    (("log scale",), "'log scale' is not a name"),
    (("a", "a"), "'a' appears twice"),
    ((1,), "1 is not a name"),
    ((), r"parameters=\[\] is invalid: a delta rule needs at least one parameter"),
])
def test_bad_parameter_names(parameters, problem):
    with pytest.raises(ValueError, match=problem) as info:
        tfmm.register_strategy("trend", parameters, trend)
    assert str(info.value).startswith("parameters=")
    assert not registry.is_registered("trend")


def test_bad_names_and_weight_rule_without_mixing_parameter():
    with pytest.raises(ValueError, match=r"name='my trend' is invalid: allowed a non-empty identifier"):
        tfmm.register_strategy("my trend", ("log_scale",), trend)
    with pytest.raises(ValueError, match=r"invalid for a weight rule: allowed parameters including 'logit_lambda_2'"):
        tfmm.register_strategy("tilt", ("log_scale",), tilt, kind="weight")
    with pytest.raises(ValueError, match=r"decay_parameters=\['lam'\] is invalid: 'lam' is not a parameter"):
        tfmm.register_strategy("trend", ("log_scale",), trend, decay_parameters=("lam",))
    assert not registry.is_registered("trend") and not registry.is_registered("tilt")


@pytest.mark.parametrize("rule", [None, "trend", 3.0])
def test_non_callable_rule(rule):
    with pytest.raises(TypeError, match="rule must be callable"):
        tfmm.register_strategy("trend", ("log_scale",), rule)


def test_bad_defaults():
    with pytest.raises(ValueError, match=r"defaults\['log_k'\] is invalid: .*derives 'log_k' from human units"):
        tfmm.register_strategy("trend", ("log_k", "log_scale"), trend, defaults={"log_k": 1.0})
    with pytest.raises(ValueError, match=r"defaults=\['scale'\] is invalid: 'scale' is not a parameter"):
        tfmm.register_strategy("trend", ("log_scale",), trend, defaults={"scale": 1.0})
    with pytest.raises(ValueError, match=r"defaults\['log_scale'\]=inf is invalid: allowed a finite number"):
        tfmm.register_strategy("trend", ("log_scale",), trend, defaults={"log_scale": float("inf")})
    assert not registry.is_registered("trend")


def test_from_memory_days_needs_defaults_for_other_parameters(register):
    register("trend", ("log_scale",), trend)
    with pytest.raises(ValueError, match=r"cannot initialise parameter 'log_scale' of strategy 'trend'.*defaults="):
        tfmm.Strategy.from_memory_days("trend", n_assets=2)
    # parameters named as the built-ins' come from human units, as the built-ins' do
    register("my_momentum", ("log_k", "logit_lambda"), momentum_from_math)
    mine = tfmm.Strategy.from_memory_days("my_momentum", n_assets=2, memory_days=5.0, k_per_day=10.0)
    ref = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=5.0, k_per_day=10.0)
    for key in ref.params:
        np.testing.assert_array_equal(mine.params[key], ref.params[key])
    # logit_lambda is a decay by default: lambda = sigmoid(-800) = 0 is refused as for the built-ins
    with pytest.raises(ValueError, match=r"params\['logit_lambda'\]\[0\]=-800.0 is invalid: lambda = sigmoid"):
        tfmm.Strategy("my_momentum", {"log_k": [1.0, 1.0], "logit_lambda": [-800.0, 0.0]})


def test_reference_backend_refuses_user_strategies(register):
    register("trend", ("log_scale",), trend)
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=DAY // 4, seed=0)
    strategy = tfmm.Strategy("trend", {"log_scale": [0.0, 0.0]})
    with tfmm.use("reference"):
        with pytest.raises(ValueError, match="strategy 'trend' is not implemented by the reference backend: the "
                                             "reference implements only the built-in strategies"):
            tfmm.simulate(prices, strategy, tfmm.Pool(chunk_period=30))


def test_rule_output_shape_is_checked(register):
    _needs(("jax",))

    def bad(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk):
        return chunk_prices  # M rows, not M - 1

    register("bad", ("log_scale",), bad)
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=DAY // 4, seed=0)
    with tfmm.use("jax"):
        with pytest.raises(ValueError, match=r"the rule of strategy 'bad' returned shape \(12, 2\): expected "
                                             r"\(M - 1, n\) = \(11, 2\)"):
            tfmm.simulate(prices, tfmm.Strategy("bad", {"log_scale": [0.0, 0.0]}), tfmm.Pool(chunk_period=30))
