"""The reference objectives against docs/math.md section 6 (direct numpy formulas and closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmm.reference import objectives as obj
from tfmm.specs import OBJECTIVES

DAY, YEAR = 1440, 525600


def _series(seed: int, t: int, n: int = 3, sigma: float = 1e-3):
    rng = np.random.default_rng(seed)
    prices = 50.0 * np.exp(np.cumsum(rng.normal(0, sigma, size=(t, n)), axis=0))
    values = 1e6 * np.exp(np.cumsum(rng.normal(1e-6, sigma, size=t)))
    reserves0 = rng.uniform(0.5, 2.0, size=n) * 1e6 / (n * prices[0])
    return values, reserves0, prices


def _numpy_objectives(v, r0, p, eps=1e-8):
    daily = v[::DAY]
    l = np.diff(np.log(daily))
    d = daily[1:] / daily[:-1] - 1
    m = v[1:] / v[:-1] - 1
    ann = (v[-1] / v[0]) ** (YEAR / (len(v) - 1)) - 1
    peak = np.maximum.accumulate(v)
    mdd = np.min((v - peak) / peak)
    return {
        "daily_log_sharpe": np.sqrt(365) * l.mean() / np.sqrt(l.var() + eps**2),
        "daily_sharpe": np.sqrt(365) * d.mean() / np.sqrt(d.var() + eps**2),
        "sharpe": np.sqrt(YEAR) * m.mean() / np.sqrt(m.var() + eps**2),
        "returns": v[-1] / v[0] - 1,
        "annualised_returns": ann,
        "returns_over_hodl": v[-1] / (r0 @ p[-1]) - 1,
        "returns_over_uniform_hodl": v[-1] / ((v[0] / (len(r0) * p[0])) @ p[-1]) - 1,
        "max_drawdown": mdd,
        "calmar": ann / max(-mdd, eps),
    }


def test_objective_names_match_the_specs():
    assert obj.OBJECTIVES == OBJECTIVES


@given(seed=st.integers(0, 2**31), t=st.integers(2 * DAY + 1, 5 * DAY), n=st.integers(2, 4),
       sigma=st.sampled_from([1e-4, 1e-3, 5e-3]))
@settings(max_examples=25, deadline=None)
def test_objectives_equal_numpy_formulas(seed, t, n, sigma):
    v, r0, p = _series(seed, t, n, sigma)
    expected = _numpy_objectives(v, r0, p)
    got = obj.all_objectives(v, r0, p)
    assert set(got) == set(OBJECTIVES)
    for name in OBJECTIVES:
        assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-14), name
        assert obj.objective(name, v, r0, p) == got[name]


def test_daily_log_sharpe_closed_form():
    # two daily log returns .01 and .03: mean .02, population variance 1e-4
    t = 2 * DAY + 1
    v = np.linspace(1.0, 2.0, t)
    v[0], v[DAY], v[2 * DAY] = 1.0, math.exp(0.01), math.exp(0.04)
    expected = math.sqrt(365) * 0.02 / math.sqrt(1e-4 + 1e-16)
    assert obj.objective("daily_log_sharpe", v) == pytest.approx(expected, rel=1e-12)
    # arithmetic daily returns e^.01 - 1 and e^.03 - 1
    d = np.array([math.expm1(0.01), math.expm1(0.03)])
    expected = math.sqrt(365) * d.mean() / math.sqrt(((d - d.mean()) ** 2).mean() + 1e-16)
    assert obj.objective("daily_sharpe", v) == pytest.approx(expected, rel=1e-12)


def test_constant_value_has_zero_sharpe_not_nan():
    v = np.full(3 * DAY, 1e6)
    for name in ("daily_log_sharpe", "daily_sharpe", "sharpe", "returns", "annualised_returns", "max_drawdown"):
        assert obj.objective(name, v) == 0.0, name


def test_geometric_growth_closed_forms():
    mu, t = 2e-6, 3 * DAY
    v = 1e6 * np.exp(mu * np.arange(t))
    assert obj.objective("returns", v) == pytest.approx(math.expm1(mu * (t - 1)), rel=1e-9)
    assert obj.objective("annualised_returns", v) == pytest.approx(math.expm1(mu * YEAR), rel=1e-9)
    assert obj.objective("max_drawdown", v) == 0.0
    assert obj.objective("calmar", v) == pytest.approx(math.expm1(mu * YEAR) / 1e-8, rel=1e-9)  # no drawdown
    # constant daily log return mu * 1440: zero variance, so the ratio is mean / eps
    assert obj.objective("daily_log_sharpe", v) == pytest.approx(math.sqrt(365) * mu * DAY / 1e-8, rel=1e-5)


def test_max_drawdown_and_calmar_closed_form():
    v = np.interp(np.arange(1001), np.arange(0, 1001, 200), [1.0, 2.0, 1.0, 3.0, 1.5, 2.0])
    assert obj.objective("max_drawdown", v) == pytest.approx(-0.5, rel=1e-15)
    ann = math.expm1(YEAR / 1000 * math.log(2.0))
    assert obj.objective("annualised_returns", v) == pytest.approx(ann, rel=1e-12)
    assert obj.objective("calmar", v) == pytest.approx(ann / 0.5, rel=1e-12)


def test_annualised_returns_overflow_to_inf():
    assert obj.objective("annualised_returns", np.array([1.0, 2.0, 1.5, 3.0])) == math.inf


def test_hodl_pool_has_zero_return_over_hodl():
    _, r0, p = _series(3, 500, 3)
    v = p @ r0  # a pool that never trades is worth its initial reserves at current prices
    assert obj.objective("returns_over_hodl", v, r0, p) == pytest.approx(0.0, abs=1e-15)
    uniform = v[0] / (3 * p[0])
    v_uniform = p @ uniform
    assert obj.objective("returns_over_uniform_hodl", v_uniform, uniform, p) == pytest.approx(0.0, abs=1e-15)
    assert obj.objective("returns_over_hodl", v_uniform, uniform, p) == pytest.approx(0.0, abs=1e-15)
    # doubling the final value doubles the ratio
    v2 = v.copy()
    v2[-1] *= 2
    assert obj.objective("returns_over_hodl", v2, r0, p) == pytest.approx(1.0, rel=1e-14)


@pytest.mark.parametrize("name", ["daily_log_sharpe", "daily_sharpe"])
def test_fewer_than_two_daily_returns_is_an_error_naming_the_bout_length(name):
    v = np.full(2 * DAY, 1.0)  # T = 2880 rows: samples 0 and 1440 only, one daily return
    with pytest.raises(ValueError, match="bout length 2881"):
        obj.objective(name, v)
    assert obj.objective(name, np.full(2 * DAY + 1, 1.0)) == 0.0  # T = 2881: two daily returns
    short = obj.all_objectives(v, np.ones(2), np.ones((2 * DAY, 2)))
    assert set(short) == set(OBJECTIVES)
    assert math.isnan(short["daily_log_sharpe"]) and math.isnan(short["daily_sharpe"])
    assert all(math.isfinite(short[k]) for k in OBJECTIVES if not k.startswith("daily"))


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="objective='nope'"):
        obj.objective("nope", np.ones(10))
    with pytest.raises(ValueError, match="bout length 2"):
        obj.objective("sharpe", np.ones(1))
    one_row = obj.all_objectives(np.ones(1), np.ones(2), np.ones((1, 2)))
    assert math.isnan(one_row["sharpe"]) and one_row["returns"] == one_row["annualised_returns"] == 0.0
    with pytest.raises(ValueError, match="prices"):
        obj.objective("returns_over_hodl", np.ones(10), np.ones(2), np.ones((9, 2)))
