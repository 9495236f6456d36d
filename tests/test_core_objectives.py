"""Objectives (MATH.md section 6) against direct numpy formulas, plus their edge cases and gradients."""

from __future__ import annotations

import numpy as np
import pytest

from tfmm.backend import _load
from tfmm.core import objectives as O
from tfmm.specs import OBJECTIVES

bk = _load("jax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

DAY, YEAR = 1440, 525_600
T = 3 * DAY + 17  # four daily samples: three daily returns


def np_objectives(v, r0, p, eps=1e-8):
    """MATH.md 6 written out with numpy."""
    def ratio(x, periods):
        return np.sqrt(periods) * x.mean() / np.sqrt(x.var() + eps ** 2)

    daily = v[::DAY]
    total = v[-1] / v[0]
    annual = total ** (YEAR / (len(v) - 1)) - 1
    peak = np.maximum.accumulate(v)
    mdd = np.min((v - peak) / peak)
    n = p.shape[1]
    return {
        "daily_log_sharpe": ratio(np.diff(np.log(daily)), 365),
        "daily_sharpe": ratio(daily[1:] / daily[:-1] - 1, 365),
        "sharpe": ratio(v[1:] / v[:-1] - 1, YEAR),
        "returns": total - 1,
        "annualised_returns": annual,
        "returns_over_hodl": v[-1] / (r0 @ p[-1]) - 1,
        "returns_over_uniform_hodl": v[-1] / np.sum(v[0] / (n * p[0]) * p[-1]) - 1,
        "max_drawdown": mdd,
        "calmar": annual / -mdd,
    }


def series(seed, t=T, n=3):
    rng = np.random.default_rng(seed)
    p = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (t, n)), axis=0))
    v = 1e6 * np.exp(np.cumsum(rng.normal(2e-6, 5e-4, t)))
    r0 = rng.uniform(100, 1000, n)
    return v, r0, p


@pytest.fixture(scope="module")
def all_jit():
    return jax.jit(lambda v, r0, p: O.all_objectives(v, r0, p, bk))


@pytest.mark.parametrize("seed", [0, 1])
def test_objectives_match_numpy_formulas(seed, all_jit):
    v, r0, p = series(seed)
    ref = np_objectives(v, r0, p)
    got = all_jit(jnp.asarray(v), jnp.asarray(r0), jnp.asarray(p))
    assert set(got) == set(OBJECTIVES)
    for name in OBJECTIVES:
        np.testing.assert_allclose(float(got[name]), ref[name], rtol=1e-10, err_msg=name)
    name = ("sharpe", "returns_over_hodl")[seed]  # objective() directly (not jitted) agrees too
    np.testing.assert_allclose(float(O.objective(name, jnp.asarray(v), jnp.asarray(r0), jnp.asarray(p), bk)),
                               ref[name], rtol=1e-10, err_msg=name)
    assert -1 <= float(got["max_drawdown"]) < 0


def test_small_closed_forms():
    v = jnp.asarray([1.0, 2.0, 1.0, 1.5])
    p = jnp.ones((4, 2))
    r0 = jnp.asarray([0.25, 0.25])
    assert float(O.objective("max_drawdown", v, r0, p, bk)) == -0.5
    assert float(O.objective("returns", v, r0, p, bk)) == 0.5
    two = jnp.asarray([1.0, 1.0 + 1e-6])
    np.testing.assert_allclose(float(O.objective("annualised_returns", two, r0, p[:2], bk)),
                               (1.0 + 1e-6) ** YEAR - 1, rtol=1e-9)
    np.testing.assert_allclose(float(O.objective("returns_over_hodl", v, r0, p, bk)), 1.5 / 0.5 - 1, rtol=1e-15)
    np.testing.assert_allclose(float(O.objective("returns_over_uniform_hodl", v, r0, p, bk)), 0.5, rtol=1e-15)


def test_hodl_pool_has_zero_return_over_hodl():
    _, r0, p = series(3)
    v = p @ r0  # the HODL portfolio's value
    got = float(O.objective("returns_over_hodl", jnp.asarray(v), jnp.asarray(r0), jnp.asarray(p), bk))
    assert abs(got) < 1e-15
    uniform = np.full(3, v[0] / 3) / p[0]  # the uniform HODL portfolio
    got = float(O.objective("returns_over_uniform_hodl", jnp.asarray(p @ uniform), jnp.asarray(r0), jnp.asarray(p), bk))
    assert abs(got) < 1e-14


def test_benchmarks_carry_no_gradient():
    v, r0, p = (jnp.asarray(a) for a in series(4))
    for name in ("returns_over_hodl", "returns_over_uniform_hodl"):
        gv, gr, gp = jax.grad(lambda v, r, p: O.objective(name, v, r, p, bk), argnums=(0, 1, 2))(v, r0, p)
        assert np.all(np.asarray(gr) == 0) and np.all(np.asarray(gp) == 0)
        assert float(gv[-1]) > 0


@pytest.mark.parametrize("name", ["daily_log_sharpe", "daily_sharpe", "sharpe"])
def test_sharpe_ratios_on_a_constant_series_are_zero_with_finite_gradient(name):
    v = jnp.full(T, 1e6)
    p = jnp.ones((T, 2))
    value, grad = jax.value_and_grad(lambda v: O.objective(name, v, jnp.ones(2), p, bk))(v)
    assert float(value) == 0.0
    g = np.asarray(grad)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    # the gradient is that of mean(returns) / eps: a finite-difference check on a bump of the last value
    h = 1e-3
    bumped = float(O.objective(name, v.at[-1].add(h), jnp.ones(2), p, bk))
    np.testing.assert_allclose(float(g[-1]) * h, bumped, rtol=1e-3)


def test_daily_log_sharpe_gradient_matches_finite_differences():
    v, r0, p = (jnp.asarray(a) for a in series(5))
    f = jax.jit(lambda v: O.objective("daily_log_sharpe", v, r0, p, bk))
    g = jax.grad(f)(v)
    direction = jnp.asarray(np.random.default_rng(0).normal(size=T)) * 10.0
    h = 1e-3
    fd = (f(v + h * direction) - f(v - h * direction)) / (2 * h)
    np.testing.assert_allclose(float(g @ direction), float(fd), rtol=1e-6)


def test_daily_objectives_need_two_daily_returns():
    short = jnp.ones(2 * DAY)  # samples at rows 0 and 1440: one daily return
    p = jnp.ones((2 * DAY, 2))
    with pytest.raises(ValueError, match="length=2881"):
        O.objective("daily_log_sharpe", short, jnp.ones(2), p, bk)
    with pytest.raises(ValueError, match="daily returns"):
        O.objective("daily_sharpe", short, jnp.ones(2), p, bk)
    ok = jnp.ones(2 * DAY + 1)  # rows 0, 1440, 2880: two daily returns (the API's minimum length 2882)
    assert float(O.objective("daily_log_sharpe", ok, jnp.ones(2), jnp.ones((2 * DAY + 1, 2)), bk)) == 0.0
    metrics = O.all_objectives(short, jnp.ones(2), p, bk)
    assert np.isnan(float(metrics["daily_log_sharpe"])) and np.isnan(float(metrics["daily_sharpe"]))
    assert float(metrics["returns"]) == 0.0
    with pytest.raises(ValueError, match="objective"):
        O.objective("sortino", short, jnp.ones(2), p, bk)


def test_monotone_series_has_finite_calmar_and_one_row_is_not_nan():
    v = jnp.linspace(1.0, 1.001, 100)
    out = O.all_objectives(v, jnp.ones(2), jnp.ones((100, 2)), bk)
    assert float(out["max_drawdown"]) == 0.0 and np.isfinite(float(out["calmar"])) and float(out["calmar"]) > 0
    one = O.all_objectives(jnp.ones(1), jnp.ones(2), jnp.ones((1, 2)), bk)
    assert float(one["annualised_returns"]) == 0.0 and float(one["returns"]) == 0.0
    assert np.isnan(float(one["sharpe"]))
    with pytest.raises(ValueError, match="length=2"):
        O.objective("sharpe", jnp.ones(1), jnp.ones(2), jnp.ones((1, 2)), bk)


def test_objectives_run_in_float32(all_jit):
    v, r0, p = series(6)
    ref = np_objectives(v, r0, p)
    got = all_jit(jnp.asarray(v, jnp.float32), jnp.asarray(r0, jnp.float32), jnp.asarray(p, jnp.float32))
    for name in OBJECTIVES:
        assert got[name].dtype == jnp.float32, name
        assert np.isfinite(float(got[name])), name
    # log returns of float32 values near 1e6 carry about 1e-7 / 5e-4 relative noise per minute
    for name in ("daily_log_sharpe", "daily_sharpe", "returns", "returns_over_hodl", "max_drawdown"):
        np.testing.assert_allclose(float(got[name]), ref[name], rtol=2e-3, atol=1e-5, err_msg=name)
