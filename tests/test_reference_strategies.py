"""The reference estimators and strategy rules against docs/math.md sections 4 and 5."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmm.reference import estimators as est
from tfmm.reference import strategies as strat
from tfmm.specs import DELTA_RULES, STRATEGY_PARAMETERS, WEIGHT_RULES

REFERENCE_DIR = Path(strat.__file__).parent
SETTINGS = settings(max_examples=30, deadline=None)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _random_prices(seed: int, m_rows: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.05, size=(m_rows, n)), axis=0))


def _random_params(name: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ranges = {
        "log_k": (0.0, 5.0), "logit_lambda": (-2.0, 4.0), "logit_lambda_2": (-2.0, 4.0),
        "raw_exponent": (-2.0, 3.0), "sp_amplitude": (-2.0, 2.0), "sp_width": (-2.0, 2.0),
    }
    return {p: rng.uniform(*ranges[p], size=n) for p in STRATEGY_PARAMETERS[name]}


# --- independence ------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["estimators", "strategies", "weights", "objectives"])
def test_reference_module_imports_only_numpy_numba_math(module):
    tree = ast.parse((REFERENCE_DIR / f"{module}.py").read_text())
    absolute = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            absolute.add(node.module.split(".")[0])
    assert absolute <= {"__future__", "math", "numpy", "numba"}, absolute


def test_rule_names_and_parameters_match_the_specs():
    assert set(strat.RULES) == set(DELTA_RULES) | set(WEIGHT_RULES)
    for name in strat.RULES:
        assert strat.RULE_PARAMETERS[name] == STRATEGY_PARAMETERS[name]


# --- memory lengths (math.md 5) ---------------------------------------------------------------------

@pytest.mark.parametrize(
    "days, chunk, expected",
    [(10, 1440, 0.680360711885), (1, 1440, 0.019630362526), (365, 1440, 0.990076220832),
     (10, 60, 0.984933761243)],
)
def test_lambda_from_memory_days_matches_math(days, chunk, expected):
    # math.md's 12-digit values for m=365 and (m=10, c=60) are off by about 1e-12 absolute.
    assert strat.lambda_from_memory_days(days, chunk) == pytest.approx(expected, rel=1e-10)
    assert strat.memory_days(strat.lambda_from_memory_days(days, chunk), chunk)[0] == pytest.approx(days, rel=1e-12)


def test_memory_days_and_logit_reference():
    assert strat.memory_days(0.680360711885, 1440)[0] == pytest.approx(10.0, rel=1e-10)
    lam = strat.lambdas([0.7554299808, 0.7554299808], 1440, 365.0)
    np.testing.assert_allclose(lam, 0.680360711885, rtol=1e-10)
    # closed form: m(1/2) = 2 cbrt(6 * 0.5 / 0.125) = 2 cbrt(24) days with c = 1440
    assert strat.memory_days(0.5)[0] == pytest.approx(2.0 * 24.0 ** (1 / 3), rel=1e-14)


@given(days=st.floats(0.01, 2000.0), chunk=st.sampled_from([1, 5, 60, 1440]))
@SETTINGS
def test_lambda_from_memory_days_inverts_memory_days(days, chunk):
    lam = strat.lambda_from_memory_days(days, chunk)
    assert 0.0 < lam < 1.0
    # m(lambda) amplifies the rounding of lambda by 1/(1 - lambda) (up to 1e6 here)
    assert strat.memory_days(lam, chunk)[0] == pytest.approx(days, rel=1e-9)


def test_lambdas_are_capped_at_the_maximum_memory():
    lam = strat.lambdas([50.0, -1.0, 0.7554299808], 1440, max_memory_days=10.0)
    assert lam[0] == strat.lambda_from_memory_days(10.0, 1440)
    assert lam[0] == pytest.approx(0.680360711885, rel=1e-10)
    assert lam[1] == pytest.approx(1.0 / (1.0 + math.e), rel=1e-14)
    assert lam[2] <= lam[0]
    assert strat.memory_days(strat.lambdas([40.0], 60, 365.0), 60)[0] == pytest.approx(365.0, rel=1e-12)


# --- estimators (math.md 4) -------------------------------------------------------------------------

def _loop_estimators(x: np.ndarray, lam: np.ndarray):
    """Straightforward per-asset Python loops over lists."""
    m_rows, n = x.shape
    e_out = [[0.0] * n for _ in range(m_rows)]
    g_out = [[0.0] * n for _ in range(m_rows)]
    v_out = [[0.0] * n for _ in range(m_rows - 1)]
    for i in range(n):
        lm = float(lam[i])
        prices = [float(v) for v in x[:, i]]
        e, a = prices[0], 0.0
        e_out[0][i] = e
        for t in range(1, m_rows):
            e = lm * e + (1 - lm) * prices[t]
            a = lm * a + (prices[t] - e) / (1 - lm)
            e_out[t][i] = e
            g_out[t][i] = a / (lm / (1 - lm) ** 3 * e)
        returns = [prices[t + 1] / prices[t] - 1 for t in range(m_rows - 1)]
        mean, var = returns[0], 0.0
        for t, rho in enumerate(returns):
            d = rho - mean
            mean = mean + (1 - lm) * d
            var = lm * var + lm * d * d
            v_out[t][i] = (1 - lm) * var
    return np.array(e_out), np.array(g_out), np.array(v_out)


@given(seed=st.integers(0, 2**31), m_rows=st.integers(2, 40), n=st.integers(1, 4))
@SETTINGS
def test_estimators_match_a_python_loop(seed, m_rows, n):
    x = _random_prices(seed, m_rows, n)
    lam = np.random.default_rng(seed + 1).uniform(0.05, 0.995, size=n)
    e, g, v = _loop_estimators(x, lam)
    np.testing.assert_allclose(est.ewma(x, lam), e, rtol=1e-13)
    np.testing.assert_allclose(est.ewma_gradient(x, lam), g, rtol=1e-11, atol=1e-15)
    np.testing.assert_allclose(est.return_variance(x, lam), v, rtol=1e-11, atol=1e-20)


def test_ewma_single_step_reference():
    # math.md 5: EWMA from (3, 4) with x = (2, 4), lambda = .7 -> (2.7, 4.0)
    e = est.ewma([[3.0, 4.0], [2.0, 4.0]], [0.7, 0.7])
    np.testing.assert_allclose(e[1], [2.7, 4.0], rtol=1e-15)
    np.testing.assert_array_equal(e[0], [3.0, 4.0])


def test_gradient_of_a_linear_trend_is_its_relative_slope():
    # x_t = alpha + beta t: e_t -> x_t - beta lam/(1-lam), a_t -> beta b, so g_t e_t -> beta.
    lam = np.array([0.3, 0.6])
    t = np.arange(400.0)[:, None]
    x = 50.0 + np.array([0.5, -0.02]) * t
    g = est.ewma_gradient(x, lam)
    e = est.ewma(x, lam)
    np.testing.assert_allclose((g * e)[-1], [0.5, -0.02], rtol=1e-10)
    np.testing.assert_allclose(e[-1], x[-1] - np.array([0.5, -0.02]) * lam / (1 - lam), rtol=1e-12)


def test_constant_prices_give_zero_gradient_and_variance():
    x = np.full((20, 3), 7.5)
    lam = [0.2, 0.5, 0.9]
    np.testing.assert_array_equal(est.ewma(x, lam), x)
    np.testing.assert_array_equal(est.ewma_gradient(x, lam), 0.0)
    np.testing.assert_array_equal(est.return_variance(x, lam), 0.0)


def test_return_variance_first_row_is_zero_and_rows_are_nonnegative():
    x = _random_prices(3, 30, 3)
    v = est.return_variance(x, [0.3, 0.7, 0.95])
    assert v.shape == (29, 3)
    np.testing.assert_array_equal(v[0], 0.0)
    assert np.all(v[1:] > 0)


def test_return_variance_of_two_returns_closed_form():
    # state (rho_0, 0); second return: d = rho_1 - rho_0, v = lam d^2, sigma2 = (1 - lam) lam d^2
    lam = 0.4
    x = np.array([[100.0], [110.0], [99.0]])
    d = (99.0 / 110.0 - 1.0) - 0.1
    np.testing.assert_allclose(est.return_variance(x, [lam])[:, 0], [0.0, (1 - lam) * lam * d * d], rtol=1e-13)


# --- single-step momentum references (math.md 5) ----------------------------------------------------

MOMENTUM_CASES = [
    # previous e, new x, k, expected w + r; previous a = (1, 2), w = (.5, .5), lambda = .7
    ((0.9, 1.2), (3.0, 4.0), (1.0, 1.0), (0.4955882353, 0.5044117647)),
    ((2.7, 4.0), (2.0, 4.0), (1.0, 1.0), (0.4860210808, 0.5139789192)),
    ((2.7, 4.0), (2.0, 4.0), (1.0, 1.5), (0.4832253, 0.5167747)),
]


@pytest.mark.parametrize("e_prev, x, k, expected", MOMENTUM_CASES)
def test_momentum_single_step_with_gradient_step(e_prev, x, k, expected):
    lam = np.array([0.7, 0.7])
    _, e, g = est.gradient_step(np.array([1.0, 2.0]), np.array(e_prev), np.array(x), lam)
    np.testing.assert_allclose(e, 0.7 * np.array(e_prev) + 0.3 * np.array(x), rtol=1e-15)
    w = 0.5 + strat.centred_update(g, np.array(k))
    np.testing.assert_allclose(w, expected, atol=6e-8 if k[1] == 1.5 else 6e-11)


@pytest.mark.parametrize("e_prev, x, k, expected", MOMENTUM_CASES)
def test_momentum_single_step_through_rule_outputs(e_prev, x, k, expected):
    # chunk prices x0, x1 that leave exactly the previous state (e, a) after one step:
    # e1 = lam x0 + (1-lam) x1, a1 = lam (x1 - x0) / (1-lam)
    lam = 0.7
    a_prev, e_prev = np.array([1.0, 2.0]), np.array(e_prev)
    x0 = e_prev - (1 - lam) ** 2 * a_prev / lam
    x1 = x0 + a_prev * (1 - lam) / lam
    prices = np.array([x0, x1, x])
    memory = strat.memory_days(lam, 1440)[0]
    params = {"log_k": np.log2(np.array(k) / memory), "logit_lambda": np.full(2, _logit(lam))}
    r = strat.rule_outputs("momentum", prices, params, 1440)
    assert r.shape == (2, 2)
    np.testing.assert_allclose(0.5 + r[1], expected, atol=6e-8 if k[1] == 1.5 else 1e-9)


# --- rule outputs --------------------------------------------------------------------------------

@given(
    name=st.sampled_from(strat.RULES), seed=st.integers(0, 2**31), n=st.integers(2, 4),
    m_rows=st.integers(3, 12), data=st.data(),
)
@SETTINGS
def test_rule_outputs_do_not_look_ahead(name, seed, n, m_rows, data):
    m = data.draw(st.integers(1, m_rows - 1), label="first changed row")
    x = _random_prices(seed, m_rows, n)
    params = _random_params(name, n, seed)
    changed = x.copy()
    changed[m:] *= np.random.default_rng(seed + 7).uniform(0.5, 2.0, size=(m_rows - m, n))
    before = strat.rule_outputs(name, x, params, 60)
    after = strat.rule_outputs(name, changed, params, 60)
    assert before.shape == (m_rows - 1, n)
    np.testing.assert_array_equal(before[: m - 1], after[: m - 1])


@pytest.mark.parametrize("name", strat.RULES)
def test_rule_output_m_uses_chunk_price_m_plus_one(name):
    x = _random_prices(11, 8, 3)
    params = _random_params(name, 3, 11)
    base = strat.rule_outputs(name, x, params, 1440)
    changed = x.copy()
    changed[4] *= np.array([1.3, 0.8, 1.1])
    after = strat.rule_outputs(name, changed, params, 1440)
    np.testing.assert_array_equal(base[:3], after[:3])
    assert np.all(np.abs(base[3] - after[3]) > 1e-12)


@given(name=st.sampled_from(strat.RULES), seed=st.integers(0, 2**31), n=st.integers(2, 5))
@SETTINGS
def test_delta_rules_are_zero_sum_and_weight_rules_sum_to_one(name, seed, n):
    r = strat.rule_outputs(name, _random_prices(seed, 10, n), _random_params(name, n, seed), 1440)
    assert np.all(np.isfinite(r))
    target = 1.0 if name in WEIGHT_RULES else 0.0
    np.testing.assert_allclose(r.sum(axis=1), target, atol=1e-12 * max(1.0, np.abs(r).max()))


def _numpy_pieces(x, params, chunk=1440):
    lam = 1.0 / (1.0 + np.exp(-params["logit_lambda"]))
    memory = (2 * chunk / 1440) * np.cbrt(6 * lam / (1 - lam) ** 3)
    g = est.ewma_gradient(x, lam)[1:]
    return lam, memory, g


def _centre(s, k):
    return k * (s - (s * k).sum(axis=1, keepdims=True) / k.sum())


def test_momentum_and_anti_momentum_formula():
    x = _random_prices(5, 15, 3)
    params = _random_params("momentum", 3, 5)
    _, memory, g = _numpy_pieces(x, params)
    k = 2.0 ** params["log_k"] * memory
    expected = _centre(g, k)
    np.testing.assert_allclose(strat.rule_outputs("momentum", x, params), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(strat.rule_outputs("anti_momentum", x, params), -expected, rtol=1e-12, atol=1e-15)


def test_power_channel_with_unit_exponent_and_beta_half_is_momentum():
    x = _random_prices(6, 15, 3)
    params = _random_params("power_channel", 3, 6)
    params["raw_exponent"] = np.array([-3.0, 0.0, -0.5])  # sp <= 1 -> q = 1
    momentum = strat.rule_outputs("momentum", x, {k: params[k] for k in ("log_k", "logit_lambda")})
    np.testing.assert_allclose(strat.rule_outputs("power_channel", x, params, beta=0.5), momentum, rtol=1e-12,
                               atol=1e-15)


def test_power_channel_formula():
    x = _random_prices(7, 15, 3)
    params = _random_params("power_channel", 3, 7)
    params["raw_exponent"] = np.array([1.0, 2.5, -1.0])
    _, memory, g = _numpy_pieces(x, params)
    q = np.maximum((params["raw_exponent"] + np.sqrt(params["raw_exponent"] ** 2 + 4)) / 2, 1.0)
    s = np.sign(g) * np.abs(g / (2 * 0.3)) ** q
    expected = _centre(s, 2.0 ** params["log_k"] * memory)
    np.testing.assert_allclose(strat.rule_outputs("power_channel", x, params, beta=0.3), expected, rtol=1e-11,
                               atol=1e-15)


def test_mean_reversion_channel_formula():
    x = _random_prices(8, 15, 3)
    params = _random_params("mean_reversion_channel", 3, 8)
    _, memory, g = _numpy_pieces(x, params)
    sp = lambda v: (v + np.sqrt(v * v + 4)) / 2  # noqa: E731
    q = np.maximum(sp(params["raw_exponent"]), 1.0)
    amplitude, width = sp(params["sp_amplitude"]) * memory, sp(params["sp_width"])
    envelope = np.exp(-(g**2) / (2 * width**2))
    z = np.pi * g / (3 * width)
    s = -amplitude * envelope * (z - z**3 / 6) / 0.5415 + (1 - envelope) * np.sign(g) * np.abs(g / 1.0) ** q
    expected = _centre(s, 2.0 ** params["log_k"] * memory)
    np.testing.assert_allclose(strat.rule_outputs("mean_reversion_channel", x, params), expected, rtol=1e-11,
                               atol=1e-15)


def test_difference_momentum_formula():
    x = _random_prices(9, 15, 3)
    params = _random_params("difference_momentum", 3, 9)
    lam1 = 1 / (1 + np.exp(-params["logit_lambda"]))
    lam2 = 1 / (1 + np.exp(-params["logit_lambda_2"]))
    mem = lambda lam: 2 * np.cbrt(6 * lam / (1 - lam) ** 3)  # noqa: E731
    s = (1 - est.ewma(x, lam2) / est.ewma(x, lam1))[1:]
    k = 2.0 ** params["log_k"] * np.maximum(mem(lam1), mem(lam2))
    np.testing.assert_allclose(strat.rule_outputs("difference_momentum", x, params), _centre(s, k), rtol=1e-11,
                               atol=1e-15)


def test_min_variance_is_inverse_variance_and_uniform_first():
    x = _random_prices(10, 15, 4)
    params = _random_params("min_variance", 4, 10)
    lam = 1 / (1 + np.exp(-params["logit_lambda"]))
    r = strat.rule_outputs("min_variance", x, params)
    np.testing.assert_allclose(r[0], 0.25, rtol=1e-15)  # all variances are 0 at the first output
    inv = 1.0 / est.return_variance(x, lam)[1:]
    np.testing.assert_allclose(r[1:], inv / inv.sum(axis=1, keepdims=True), rtol=1e-12)


def test_delta_rule_with_zero_k_entry_gives_zero():
    # sum(k s) / sum(k) = (2 * -0.1 + 0.5) / 3 = 0.1
    r = strat.centred_update(np.array([0.3, -0.1, 0.5]), np.array([0.0, 2.0, 1.0]))
    assert r[0] == 0.0
    np.testing.assert_allclose(r[1:], [-0.4, 0.4], rtol=1e-14)
    np.testing.assert_array_equal(strat.centred_update(np.array([1.0, 2.0]), np.zeros(2)), 0.0)


def test_rule_outputs_rejects_unknown_and_baseline_rules():
    x = _random_prices(1, 5, 2)
    for name in ("balancer", "hodl", "nope"):
        with pytest.raises(ValueError, match="rule"):
            strat.rule_outputs(name, x, {})
    with pytest.raises(ValueError, match="log_k"):
        strat.rule_outputs("momentum", x, {"logit_lambda": np.zeros(2)})
