"""Objectives (docs/math.md section 6) against direct numpy formulas, plus their edge cases and gradients, on every
array backend (the ``bk`` fixture)."""

from __future__ import annotations

import numpy as np
import pytest

from tfmm.core import objectives as O
from tfmm.specs import OBJECTIVES

from array_helpers import grad, np_dtype, to_np

DAY, YEAR = 1440, 525_600
T = 3 * DAY + 17  # four daily samples: three daily returns


def np_objectives(v, r0, p, eps=1e-8):
    """docs/math.md 6 written out with numpy."""
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
def all_jit(bk):
    return bk.jit(lambda v, r0, p: O.all_objectives(v, r0, p, bk))


def ones(bk, *shape):
    return bk.asarray(np.ones(shape))


@pytest.mark.parametrize("seed", [0, 1])
def test_objectives_match_numpy_formulas(bk, seed, all_jit):
    v, r0, p = series(seed)
    ref = np_objectives(v, r0, p)
    got = all_jit(bk.asarray(v), bk.asarray(r0), bk.asarray(p))
    assert set(got) == set(OBJECTIVES)
    for name in OBJECTIVES:
        # means and variances of ~4,000 returns ~5e-4 (summation order differs from numpy's pairwise sums),
        # and a power of YEAR / T ~ 120 for the annualised ones: 1e-10
        np.testing.assert_allclose(float(got[name]), ref[name], rtol=1e-10, err_msg=name)
    name = ("sharpe", "returns_over_hodl")[seed]  # objective() directly (not jitted) agrees too
    np.testing.assert_allclose(float(O.objective(name, bk.asarray(v), bk.asarray(r0), bk.asarray(p), bk)),
                               ref[name], rtol=1e-10, err_msg=name)  # as above
    assert -1 <= float(got["max_drawdown"]) < 0


def test_small_closed_forms(bk):
    v = bk.asarray([1.0, 2.0, 1.0, 1.5])
    p = ones(bk, 4, 2)
    r0 = bk.asarray([0.25, 0.25])
    assert float(O.objective("max_drawdown", v, r0, p, bk)) == -0.5
    assert float(O.objective("returns", v, r0, p, bk)) == 0.5
    two = bk.asarray([1.0, 1.0 + 1e-6])
    # (1 + 1e-6)^525600 through exp/log: the rounding of 1e-6 (~1e-22 absolute) times YEAR, ~1e-10 relative
    np.testing.assert_allclose(float(O.objective("annualised_returns", two, r0, p[:2], bk)),
                               (1.0 + 1e-6) ** YEAR - 1, rtol=1e-9)
    # dyadic inputs: exact up to an ulp
    np.testing.assert_allclose(float(O.objective("returns_over_hodl", v, r0, p, bk)), 1.5 / 0.5 - 1, rtol=1e-15)
    np.testing.assert_allclose(float(O.objective("returns_over_uniform_hodl", v, r0, p, bk)), 0.5, rtol=1e-15)


def test_hodl_pool_has_zero_return_over_hodl(bk):
    _, r0, p = series(3)
    v = p @ r0  # the HODL portfolio's value
    got = float(O.objective("returns_over_hodl", bk.asarray(v), bk.asarray(r0), bk.asarray(p), bk))
    assert abs(got) < 1e-15  # v / v - 1: an ulp or two of 1
    uniform = np.full(3, v[0] / 3) / p[0]  # the uniform HODL portfolio
    got = float(O.objective("returns_over_uniform_hodl", bk.asarray(p @ uniform), bk.asarray(r0), bk.asarray(p),
                            bk))
    assert abs(got) < 1e-14  # the benchmark is recomputed from v_0 / (n p_0): a few ulps


def test_benchmarks_carry_no_gradient(bk):
    v, r0, p = (bk.asarray(a) for a in series(4))
    for name in ("returns_over_hodl", "returns_over_uniform_hodl"):
        gv, gr, gp = (to_np(bk, g) for g in grad(bk, lambda v, r, p: O.objective(name, v, r, p, bk),
                                                  argnums=(0, 1, 2))(v, r0, p))
        assert np.all(gr == 0) and np.all(gp == 0)
        assert float(gv[-1]) > 0


@pytest.mark.parametrize("name", ["daily_log_sharpe", "daily_sharpe", "sharpe"])
def test_sharpe_ratios_on_a_constant_series_are_zero_with_finite_gradient(bk, name):
    v = bk.asarray(np.full(T, 1e6))
    p = ones(bk, T, 2)
    value, g = bk.value_and_grad(lambda v: O.objective(name, v, ones(bk, 2), p, bk))(v)
    assert float(value) == 0.0
    g = to_np(bk, g)
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    # the gradient is that of mean(returns) / eps: a finite-difference check on a bump of the last value
    h = 1e-3
    bumped_v = np.full(T, 1e6)
    bumped_v[-1] += h
    bumped = float(O.objective(name, bk.asarray(bumped_v), ones(bk, 2), p, bk))
    # a one-sided difference of a function linear in the bump up to O(h / 1e6) = 1e-9, and the
    # variance term eps^2 + var(bump) changes at second order: 1e-3 with margin
    np.testing.assert_allclose(float(g[-1]) * h, bumped, rtol=1e-3)


def test_daily_log_sharpe_gradient_matches_finite_differences(bk):
    v, r0, p = (bk.asarray(a) for a in series(5))
    f = bk.jit(lambda v: O.objective("daily_log_sharpe", v, r0, p, bk))
    g = grad(bk, f)(v)
    direction = bk.asarray(np.random.default_rng(0).normal(size=T) * 10.0)
    h = 1e-3
    fd = (f(v + h * direction) - f(v - h * direction)) / (2 * h)
    # values ~1e6 bumped by ~1e-2: truncation (h / v)^2 ~1e-18, rounding ~eps v / (h |direction|) ~1e-8
    np.testing.assert_allclose(float(bk.xp.sum(g * direction)), float(fd), rtol=1e-6)


def test_daily_objectives_need_two_daily_returns(bk):
    short = ones(bk, 2 * DAY)  # samples at rows 0 and 1440: one daily return
    p = ones(bk, 2 * DAY, 2)
    with pytest.raises(ValueError, match="length=2881"):
        O.objective("daily_log_sharpe", short, ones(bk, 2), p, bk)
    with pytest.raises(ValueError, match="daily returns"):
        O.objective("daily_sharpe", short, ones(bk, 2), p, bk)
    ok = ones(bk, 2 * DAY + 1)  # rows 0, 1440, 2880: two daily returns (the API's minimum length 2882)
    assert float(O.objective("daily_log_sharpe", ok, ones(bk, 2), ones(bk, 2 * DAY + 1, 2), bk)) == 0.0
    metrics = O.all_objectives(short, ones(bk, 2), p, bk)
    assert np.isnan(float(metrics["daily_log_sharpe"])) and np.isnan(float(metrics["daily_sharpe"]))
    assert float(metrics["returns"]) == 0.0
    with pytest.raises(ValueError, match="objective"):
        O.objective("sortino", short, ones(bk, 2), p, bk)


def test_monotone_series_has_finite_calmar_and_one_row_is_not_nan(bk):
    v = bk.asarray(np.linspace(1.0, 1.001, 100))
    out = O.all_objectives(v, ones(bk, 2), ones(bk, 100, 2), bk)
    assert float(out["max_drawdown"]) == 0.0 and np.isfinite(float(out["calmar"])) and float(out["calmar"]) > 0
    one = O.all_objectives(ones(bk, 1), ones(bk, 2), ones(bk, 1, 2), bk)
    assert float(one["annualised_returns"]) == 0.0 and float(one["returns"]) == 0.0
    assert np.isnan(float(one["sharpe"]))
    with pytest.raises(ValueError, match="length=2"):
        O.objective("sharpe", ones(bk, 1), ones(bk, 2), ones(bk, 1, 2), bk)


def test_objectives_run_in_float32(bk, all_jit):
    v, r0, p = series(6)
    ref = np_objectives(v, r0, p)
    got = all_jit(bk.asarray(v, "float32"), bk.asarray(r0, "float32"), bk.asarray(p, "float32"))
    for name in OBJECTIVES:
        assert np_dtype(got[name]) == np.float32, name
        assert np.isfinite(float(got[name])), name
    # log returns of float32 values near 1e6 carry about 1e-7 / 5e-4 relative noise per minute
    for name in ("daily_log_sharpe", "daily_sharpe", "returns", "returns_over_hodl", "max_drawdown"):
        np.testing.assert_allclose(float(got[name]), ref[name], rtol=2e-3, atol=1e-5, err_msg=name)
