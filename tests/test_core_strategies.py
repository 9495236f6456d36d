"""Estimators (docs/math.md 4), memory lengths and strategies (docs/math.md 3.1, 5) of tfmm.core, on every array
backend (the ``bk`` fixture)."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tfmm.core import estimators as E
from tfmm.core import weights as W
from tfmm.core.memory import memory_days_from_lambda
from tfmm.core.strategies import lambdas, memory_days, mixing_alpha, rule_kind, rule_outputs
from tfmm.specs import STRATEGY_PARAMETERS

from array_helpers import grad, np_dtype, to_np

RULES = ["momentum", "anti_momentum", "power_channel", "mean_reversion_channel", "difference_momentum",
         "min_variance"]


# --- independent numpy readings of docs/math.md 4 and 5 ---------------------------------------------------------

def np_ewma(x, lam):
    e = np.empty_like(x)
    e[0] = x[0]
    for t in range(1, len(x)):
        e[t] = lam * e[t - 1] + (1 - lam) * x[t]
    return e


def np_gradient(x, lam):
    e, a, g = x[0].copy(), np.zeros(x.shape[1]), np.zeros_like(x)
    b = lam / (1 - lam) ** 3
    for t in range(1, len(x)):
        e = lam * e + (1 - lam) * x[t]
        a = lam * a + (x[t] - e) / (1 - lam)
        g[t] = a / (b * e)
    return g


def np_variance(x, lam):
    rho = x[1:] / x[:-1] - 1
    e, v, out = rho[0].copy(), np.zeros(x.shape[1]), np.zeros_like(rho)
    for m in range(1, len(rho)):
        d = rho[m] - e
        e = e + (1 - lam) * d
        v = lam * v + d * (lam * d)
        out[m] = (1 - lam) * v
    return out


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sp(x):
    return (x + np.sqrt(x * x + 4)) / 2


def np_rule(name, x, p, c, beta=0.5, max_days=365.0):
    """docs/math.md 5, written from the formulas with numpy (cap by bisection on m(lambda), not Cardano)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if memory_days_from_lambda(mid, c) < max_days else (lo, mid)
    lam = np.minimum(sigmoid(p["logit_lambda"]), lo)
    m = memory_days_from_lambda(lam, c)

    def centred(k, s):
        return k * (s - (s @ k)[:, None] / k.sum())

    if name == "min_variance":
        s2 = np_variance(x, lam)
        out = np.full_like(s2, 1 / x.shape[1])
        inv = 1 / s2[1:]
        out[1:] = inv / inv.sum(axis=1, keepdims=True)
        return out
    if name == "difference_momentum":
        lam2 = np.minimum(sigmoid(p["logit_lambda_2"]), lo)
        k = 2.0 ** p["log_k"] * np.maximum(m, memory_days_from_lambda(lam2, c))
        return centred(k, 1 - np_ewma(x, lam2)[1:] / np_ewma(x, lam)[1:])
    k = 2.0 ** p["log_k"] * m
    g = np_gradient(x, lam)[1:]
    if name in ("momentum", "anti_momentum"):
        r = centred(k, g)
        return r if name == "momentum" else -r
    q = np.maximum(sp(p["raw_exponent"]), 1)
    power = np.sign(g) * np.abs(g / (2 * beta)) ** q
    if name == "power_channel":
        return centred(k, power)
    amp, width = sp(p["sp_amplitude"]) * m, sp(p["sp_width"])
    env = np.exp(-g ** 2 / (2 * width ** 2))
    z = np.pi * g / (3 * width)
    return centred(k, -amp * env * (z - z ** 3 / 6) / 0.5415 + (1 - env) * power)


def gbm(m, n, seed, vol=0.02):
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, vol, (m, n)), axis=0)) * rng.uniform(0.5, 2, n)


def random_params(name, n, seed, c=1440):
    rng = np.random.default_rng(seed)
    days = rng.uniform(2, 30, n)
    values = {
        "log_k": rng.uniform(0, 5, n),
        "logit_lambda": np.log(memory_days_lambda(days, c)),
        "logit_lambda_2": np.log(memory_days_lambda(rng.uniform(2, 30, n), c)),
        "raw_exponent": rng.uniform(-1, 3, n),
        "sp_amplitude": rng.uniform(-1, 2, n),
        "sp_width": rng.uniform(-3, 0, n),
    }
    return {k: values[k] for k in STRATEGY_PARAMETERS[name]}


def memory_days_lambda(days, c):
    """lambda / (1 - lambda) for a memory of ``days`` (so that its log is logit(lambda))."""
    from tfmm.core.memory import lambda_from_memory_days

    lam = lambda_from_memory_days(days, c)
    return lam / (1 - lam)


@functools.lru_cache(maxsize=None)
def rule_fn(bk, name, c=1440, beta=0.5, max_memory_days=365.0):
    """rule_outputs for one strategy and settings, jitted once (on JAX compiled once per input shape)."""
    return bk.jit(lambda x, p: rule_outputs(name, x, p, chunk_period=c, beta=beta,
                                            max_memory_days=max_memory_days, bk=bk))


def outputs(bk, name, x, params, c=1440, dtype="float64", **kw):
    """rule_outputs on numpy chunk prices and parameters: a backend array."""
    arrays = {k: bk.asarray(v, dtype) for k, v in params.items()}
    return rule_fn(bk, name, c, **kw)(bk.asarray(x, dtype), arrays)


def outputs_np(bk, *args, **kw):
    return to_np(bk, outputs(bk, *args, **kw))


# --- memory lengths and lambda ----------------------------------------------------------------------------

# docs/math.md 5 values, and the same roots to 30 digits (mpmath bisection on m(lambda) = days): the docs/math.md values
# for 365 days and for c = 60 are off by 2.5e-12 and 1.2e-12 in the last digit, so they are checked to 3e-12.
@pytest.mark.parametrize("days, c, lam, precise", [
    (10, 1440, 0.680360711885, 0.680360711885158226329383439372),
    (1, 1440, 0.019630362526, 0.0196303625258087367511972886549),
    (365, 1440, 0.990076220832, 0.990076220834518765710854839476),
    (10, 60, 0.984933761243, 0.984933761241800953940166268203),
])
def test_memory_days_reference_values(bk, days, c, lam, precise):
    # the 30-digit root gives the days to the rounding of m(lambda) (1 / (1 - lambda) amplifies it)
    np.testing.assert_allclose(float(memory_days(bk.asarray(precise), c, bk)), days, rtol=1e-13)
    got = float(memory_days(bk.asarray(lam), c, bk))
    # dm/m = (1/(3 lambda) + 1/(1 - lambda)) dlambda
    assert abs(got - days) <= 3e-12 * (1 / (3 * lam) + 1 / (1 - lam)) * days


def test_lambdas_sigmoid_and_cap(bk):
    lam = lambdas(bk.asarray([0.7554299808, -3.0]), 1440, 365.0, bk)
    # the logit is given to 10 digits, so lambda to ~1e-10
    np.testing.assert_allclose(to_np(bk, lam), [0.680360711885, sigmoid(-3.0)], rtol=1e-10)
    capped = lambdas(bk.asarray([20.0, 0.0]), 1440, 365.0, bk)
    # the cap is the 30-digit root (18 digits given); its computation rounds by a few ulps
    np.testing.assert_allclose(to_np(bk, capped), [0.990076220834518766, 0.5], rtol=1e-14)
    np.testing.assert_allclose(float(lambdas(bk.asarray([9.0]), 60, 10.0, bk)[0]), 0.984933761241800954,
                               rtol=1e-14)  # as above
    g = grad(bk, lambda z: lambdas(z, 1440, 365.0, bk)[0])(bk.asarray([20.0]))
    assert float(g[0]) == 0.0  # hard min
    # one-minute chunks, 365 days: 1 - lambda = 6.914445984380104e-6 (30-digit root); Cardano alone is 2e-6 off;
    # 1 - lambda loses ~5 digits to cancellation, so 1e-10 relative
    one_minus = 1.0 - float(lambdas(bk.asarray([30.0]), 1, 365.0, bk)[0])
    np.testing.assert_allclose(one_minus, 6.914445984380104e-6, rtol=1e-10)


# --- estimators --------------------------------------------------------------------------------------------

def test_ewma_reference(bk):
    e = E.ewma(bk.asarray([[3.0, 4.0], [2.0, 4.0]]), bk.asarray([0.7, 0.7]), bk)
    # 0.7 * 3 + 0.3 * 2 rounds to an ulp of 2.7
    np.testing.assert_allclose(to_np(bk, e), [[3.0, 4.0], [2.7, 4.0]], rtol=1e-15)


@functools.lru_cache(maxsize=None)
def jitted(bk, fn, method):
    return bk.jit(lambda x, lam: fn(x, lam, bk, method=method))


LONG = gbm(20_000, 3, 1, vol=0.001)  # one shape for every estimator test: each jit compiles once
LONG_LAMBDAS = np.array([0.5, 0.99, 0.9999])


def long_prices(bk):
    """LONG on JAX; its first 2,000 rows on torch (eager: the sequential scan is a Python loop)."""
    return LONG if bk.name == "jax" else LONG[:2000]


@pytest.mark.parametrize("method", ["associative", "sequential"])
def test_estimators_match_numpy_loops(bk, method):
    x, lam = long_prices(bk), LONG_LAMBDAS
    args = (bk.asarray(x), bk.asarray(lam))
    e = to_np(bk, jitted(bk, E.ewma, method)(*args))
    g = to_np(bk, jitted(bk, E.ewma_gradient, method)(*args))
    s2 = to_np(bk, jitted(bk, E.return_variance, method)(*args))
    assert e.shape == g.shape == x.shape and s2.shape == (len(x) - 1, 3)
    assert np.all(g[0] == 0) and np.all(s2[0] == 0)
    refs = (np_ewma(x, lam), np_gradient(x, lam), np_variance(x, lam))
    for got, ref in zip((e, g, s2), refs):
        for j in range(3):  # docs/math.md's 1e-12, relative to each column's scale (the gradient crosses zero)
            np.testing.assert_allclose(got[:, j], ref[:, j], rtol=0, atol=1e-12 * np.abs(ref[:, j]).max())
    if method == "sequential":
        e2, g2 = jitted(bk, E.ewma_and_gradient, method)(*args)
        # e is carried as x - y in the fused scan (estimators' docstring): an ulp or two of e
        np.testing.assert_allclose(to_np(bk, e2), e, rtol=1e-14)
        np.testing.assert_array_equal(to_np(bk, g2), g)


def test_associative_and_sequential_estimators_agree(bk):
    args = (bk.asarray(long_prices(bk)), bk.asarray(LONG_LAMBDAS))
    for fn in (E.ewma, E.ewma_gradient, E.return_variance):
        a = to_np(bk, jitted(bk, fn, "associative")(*args))
        s = to_np(bk, jitted(bk, fn, "sequential")(*args))
        for j in range(3):  # docs/math.md allows 1e-12 of each series' scale (the gradient crosses zero)
            np.testing.assert_allclose(a[:, j], s[:, j], rtol=0, atol=1e-12 * np.abs(s[:, j]).max())
    with pytest.raises(ValueError, match="method"):
        E.ewma(args[0], args[1], bk, method="fft")


def test_estimators_do_not_look_ahead_and_handle_one_row(bk):
    x = long_prices(bk)
    y = x.copy()
    y[30:] *= 1.7
    lam = bk.asarray(LONG_LAMBDAS)
    for method in ("associative", "sequential"):
        for fn, rows in ((E.ewma, 30), (E.ewma_gradient, 30), (E.return_variance, 29)):
            a = to_np(bk, jitted(bk, fn, method)(bk.asarray(x), lam))
            b = to_np(bk, jitted(bk, fn, method)(bk.asarray(y), lam))
            np.testing.assert_array_equal(a[:rows], b[:rows])
            assert np.all(a[rows] != b[rows])  # the first row that sees the change
    assert tuple(E.return_variance(bk.asarray(x[:1]), lam, bk).shape) == (0, 3)
    np.testing.assert_array_equal(to_np(bk, E.ewma_gradient(bk.asarray(x[:1]), lam, bk)), 0.0)


# --- strategies --------------------------------------------------------------------------------------------

def _prices_for_state(lam, a_prev, e_prev, x_new):
    """Chunk prices x_0, x_1, x_2 whose estimator state after x_1 is (a_prev, e_prev), then x_new.

    With e_0 = x_0 and a_0 = 0: a_1 = lam (x_1 - x_0) / (1 - lam), e_1 = x_0 + (1 - lam)(x_1 - x_0).
    """
    dx = (1 - lam) / lam * np.asarray(a_prev, dtype=float)
    x0 = np.asarray(e_prev, dtype=float) - (1 - lam) * dx
    return np.stack([x0, x0 + dx, np.asarray(x_new, dtype=float)])


# docs/math.md 5 values. By hand the second is 0.486021084337 (e = 2.49, a = (-14/15, 1.4), g = (-0.0252/1.743,
# 0.0135)): docs/math.md's 0.4860210808 is 3.5e-9 off, so each case is checked to the accuracy it is stated to.
@pytest.mark.parametrize("e_prev, x_new, k, expected, atol", [
    ((0.9, 1.2), (3, 4), (1, 1), (0.4955882353, 0.5044117647), 1e-10),
    ((2.7, 4.0), (2, 4), (1, 1), (0.4860210808, 0.5139789192), 4e-9),
    ((2.7, 4.0), (2, 4), (1, 1), (0.486021084337349, 0.513978915662651), 1e-14),
    ((2.7, 4.0), (2, 4), (1, 1.5), (0.4832253, 0.5167747), 1e-7),
])
def test_momentum_single_step_references(bk, e_prev, x_new, k, expected, atol):
    lam, c = 0.7, 1440
    x = _prices_for_state(lam, (1, 2), e_prev, x_new)
    assert np.all(x > 0)
    # the constructed history reproduces the stated previous state
    e1 = to_np(bk, E.ewma(bk.asarray(x[:2]), bk.asarray(np.full(2, lam)), bk))[1]
    g1 = to_np(bk, E.ewma_gradient(bk.asarray(x[:2]), bk.asarray(np.full(2, lam)), bk))[1]
    np.testing.assert_allclose(e1, e_prev, rtol=1e-14)  # a constructed history: a few ulps
    # a = g b e, through 1 / (1 - lam)^3 and the state's differences: 1e-13
    np.testing.assert_allclose(g1 * lam / (1 - lam) ** 3 * e1, (1, 2), rtol=1e-13)
    m = memory_days_from_lambda(lam, c)
    params = {"log_k": np.log2(np.asarray(k) / m), "logit_lambda": np.full(2, math.log(lam / (1 - lam)))}
    r = outputs(bk, "momentum", x, params, c)
    a, delta = W.coarse_weights(r[1:], bk.asarray([0.5, 0.5]), kind="delta", alpha=None, w_min=0.05,
                                w_max=0.95, max_change=1.0, interpolation_period=1, smooth=False,
                                temperature=1e-4, bk=bk)
    np.testing.assert_allclose(to_np(bk, a[0] + delta[0]), expected, rtol=0, atol=atol)  # atol: see the cases


@pytest.mark.parametrize("name", RULES)
def test_rule_outputs_match_the_formulas(bk, name):
    x = gbm(60, 3, 5)
    params = random_params(name, 3, 7)
    got = outputs_np(bk, name, x, params)
    ref = np_rule(name, x, params, 1440)
    assert got.shape == (59, 3)
    # the numpy reading caps lambda by bisection (1e-16) and powers |g|^q amplify rounding by q: 1e-9
    # relative, and 1e-12 of the scale where an output crosses zero
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())
    if rule_kind(name) == "delta":
        # centred outputs sum to 0 up to the rounding of their terms
        np.testing.assert_allclose(got.sum(axis=1), 0.0, atol=1e-13 * np.abs(got).max())
    else:
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-14)  # a softmax: rounding of 3 terms
        np.testing.assert_allclose(got[0], 1 / 3, rtol=1e-15)  # all variances 0: uniform, an ulp


@pytest.mark.parametrize("name", RULES)
def test_rule_outputs_do_not_look_ahead(bk, name):
    x = gbm(60, 3, 11)
    params = random_params(name, 3, 12)
    base = outputs_np(bk, name, x, params)
    for m in (1, 2, 17, 59):
        y = x.copy()
        y[m:] *= np.array([1.3, 0.6, 1.1])
        changed = outputs_np(bk, name, y, params)
        np.testing.assert_array_equal(changed[: m - 1], base[: m - 1])
        assert not np.array_equal(changed[m - 1:], base[m - 1:])  # row m - 1 is the first that may see it


@pytest.mark.parametrize("name", RULES)
def test_rule_outputs_have_finite_gradients_for_every_parameter(bk, name):
    x = gbm(60, 3, 3)
    x[20:25] = x[19]  # flat prices: zero gradient entries (|g|^q at g = 0)
    x = bk.asarray(x)
    params = {k: bk.asarray(v) for k, v in random_params(name, 3, 4).items()}
    weights = bk.asarray(np.random.default_rng(0).normal(size=(59, 3)))

    def loss(p):
        out = rule_outputs(name, x, p, chunk_period=1440, beta=0.5, max_memory_days=365.0, bk=bk)
        return bk.xp.sum(weights * out)

    loss = bk.jit(loss)
    grads = bk.jit(grad(bk, loss))(params)
    assert set(grads) == set(STRATEGY_PARAMETERS[name])
    for key, g in grads.items():
        g = to_np(bk, g)
        assert np.all(np.isfinite(g)), key
        if name == "min_variance" and key == "logit_lambda_2":  # alpha: used by the coarse recursion only
            assert np.all(g == 0)
        else:
            assert np.any(g != 0), key
    # central differences on one parameter entry
    key = "logit_lambda" if name == "min_variance" else STRATEGY_PARAMETERS[name][-1]
    h = 1e-5
    bump = bk.asarray(np.array([0.0, h, 0.0]))
    fd = (loss({**params, key: params[key] + bump}) - loss({**params, key: params[key] - bump})) / (2 * h)
    # truncation ~h^2 = 1e-10 relative, rounding ~eps / h = 2e-11 of the loss's terms: 1e-5 with margin
    np.testing.assert_allclose(float(grads[key][1]), float(fd), rtol=1e-5, atol=1e-8 * abs(float(fd)) + 1e-10)


def test_anti_momentum_is_negated_momentum_and_cap_binds(bk):
    x = gbm(60, 3, 8)
    params = random_params("momentum", 3, 9)
    np.testing.assert_array_equal(outputs_np(bk, "anti_momentum", x, params), -outputs_np(bk, "momentum", x, params))
    # beyond the cap every logit_lambda gives the capped lambda's outputs
    big = dict(params, logit_lambda=np.array([12.0, 15.0, 13.0]))
    bigger = dict(params, logit_lambda=np.array([20.0, 30.0, 25.0]))
    np.testing.assert_array_equal(outputs_np(bk, "momentum", x, big, max_memory_days=20.0),
                                  outputs_np(bk, "momentum", x, bigger, max_memory_days=20.0))


def test_rule_outputs_jit_vmap_over_parameter_sets(bk):
    """The engine vmaps rule_outputs over parameter sets (torch.func.vmap on torch, where in-place
    boolean-mask writes, e.g. array_api_compat's torch ``sign``, cannot be batched)."""
    x = bk.asarray(gbm(60, 3, 13))
    sets = [random_params("power_channel", 3, s) for s in range(3)]
    stacked = {k: bk.asarray(np.stack([p[k] for p in sets])) for k in sets[0]}
    fn = bk.jit(bk.vmap(lambda p: rule_outputs("power_channel", x, p, chunk_period=1440, beta=0.5,
                                               max_memory_days=365.0, bk=bk)))
    batched = to_np(bk, fn(stacked))
    for i, p in enumerate(sets):
        # batched and single programs vectorise differently: a few ulps; outputs cross zero (1e-16 floor)
        np.testing.assert_allclose(batched[i], outputs_np(bk, "power_channel", to_np(bk, x), p), rtol=1e-13,
                                   atol=1e-16)


def test_min_variance_mixing_alpha_and_rule_kinds(bk):
    zeros = bk.asarray(np.zeros(2))
    p = {"logit_lambda": zeros, "logit_lambda_2": bk.asarray([0.0, 2.0])}
    # a sigmoid: an ulp
    np.testing.assert_allclose(to_np(bk, mixing_alpha("min_variance", p, zeros, bk)), [0.5, sigmoid(2.0)],
                               rtol=1e-15)
    assert mixing_alpha("momentum", {}, zeros, bk) is None
    assert [rule_kind(n) for n in RULES] == ["delta"] * 5 + ["weight"]
    with pytest.raises(ValueError, match="balancer"):
        rule_outputs("balancer", bk.asarray(np.ones((3, 2))), {}, chunk_period=1, beta=0.5, max_memory_days=1.0,
                     bk=bk)


@pytest.mark.parametrize("name", RULES)
def test_rule_outputs_run_in_float32(bk, name):
    x = gbm(60, 3, 21)
    params = random_params(name, 3, 22)
    ref = outputs_np(bk, name, x, params)
    out = outputs(bk, name, x, params, dtype="float32")
    assert np_dtype(out) == np.float32
    out = to_np(bk, out).astype(np.float64)
    assert np.all(np.isfinite(out))
    # eps32 = 1.2e-7 amplified by the estimators' 1 / (1 - lambda)^3 and the powers: 2e-4 of the scale
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-4 * np.abs(ref).max())


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(RULES), seed=st.integers(0, 2**31))
def test_rule_outputs_are_finite_for_random_parameters(bk, name, seed):
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-6, 6, 3) for k in STRATEGY_PARAMETERS[name]}
    out = outputs_np(bk, name, gbm(60, 3, seed % 1000), params, c=60)
    assert np.all(np.isfinite(out))
