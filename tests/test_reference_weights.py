"""The reference weight schedule against docs/math.md section 3 and docs/smooth_mode.md."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from tfmm.reference import weights as wts

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def simplex_problems(draw):
    """(u summing to 1 with entries possibly outside the bounds, w_min, w_max = 1 - (n-1) w_min)."""
    n = draw(st.integers(2, 6))
    u = np.array(draw(st.lists(st.floats(-1.0, 2.0), min_size=n, max_size=n)))
    assume(u.sum() > 0.1)
    w_min = draw(st.floats(0.0, 0.9 / n))
    return u / u.sum(), w_min, 1.0 - (n - 1) * w_min


# --- guardrail (math.md 3.2 step 3) -----------------------------------------------------------------

def test_guardrail_caps_first():
    # math.md 3.2: (1.5, .4, -.9) -> (.6, .3, .1) with w_min = .1, not (.711, .189, .1)
    np.testing.assert_allclose(wts.guardrail([1.5, 0.4, -0.9], 0.1, 0.8), [0.6, 0.3, 0.1], rtol=1e-14)


I1_CASES = [
    ((0.05, 0.45, 0.5), (0.1, 0.426315789473684, 0.473684210526316)),
    ((-0.1, 0.5, 0.6), (0.1, 0.409090909090909, 0.490909090909091)),
    ((0.95, 0.025, 0.025), (0.8, 0.1, 0.1)),
]


@pytest.mark.parametrize("u, expected", I1_CASES)
def test_guardrail_reference_cases(u, expected):
    np.testing.assert_allclose(wts.guardrail(u, 0.1, 0.8), expected, atol=1e-15)


@pytest.mark.parametrize("u, expected", I1_CASES)
def test_coarse_step_with_unit_interpolation_reaches_the_guarded_target(u, expected):
    # math.md 3.2, I = 1, w_min = .1, max change 1: a delta rule from uniform weights with r = u - 1/3
    w0 = np.full(3, 1.0 / 3.0)
    outputs = np.array([np.array(u) - w0, np.zeros(3)])
    a, delta = wts.coarse_weights(outputs, w0, "delta", None, 0.1, 0.8, 1.0, 1)
    np.testing.assert_array_equal(a[0], w0)
    np.testing.assert_allclose(a[1], expected, atol=1e-15)
    np.testing.assert_allclose(delta[0], np.array(expected) - w0, atol=1e-15)


@given(problem=simplex_problems())
@SETTINGS
def test_guardrail_output_is_in_bounds_and_sums_to_one(problem):
    u, lo, hi = problem
    w = wts.guardrail(u, lo, hi)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all(w >= lo - 1e-15) and np.all(w <= hi + 1e-15)
    # entries inside the bounds keep their proportions (the map rescales the free entries only)
    free = (w > lo + 1e-12) & (u > lo) & (u < hi) & (w < hi - 1e-12)
    if free.sum() >= 2:
        ratios = w[free] / u[free]
        np.testing.assert_allclose(ratios, ratios[0], rtol=1e-12)


@given(p=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6), fraction=st.floats(0.0, 0.99))
@SETTINGS
def test_guardrail_is_identity_inside_the_bounds(p, fraction):
    n = len(p)
    lo = fraction / n
    inside = lo + (1 - n * lo) * np.array(p) / sum(p)  # in [lo, 1 - (n-1) lo] by construction
    np.testing.assert_allclose(wts.guardrail(inside, lo, 1 - (n - 1) * lo), inside, rtol=1e-14)


def _one_exact_pass(u, lo, hi):
    x = np.clip(u, lo, hi)
    low = x <= lo
    return np.where(low, lo, x * (1 - lo * low.sum()) / x[~low].sum())


@given(problem=simplex_problems())
@SETTINGS
def test_smooth_guardrail_sums_to_one_and_converges_to_exact(problem):
    u, lo, hi = problem
    for tau in (1e-2, 1e-4):
        assert wts.guardrail(u, lo, hi, smooth=True, temperature=tau).sum() == pytest.approx(1.0, abs=1e-13)
    assume(np.all(np.abs(u - lo) > 1e-6) and np.all(np.abs(u - hi) > 1e-6))  # away from the kinks
    smooth = wts.guardrail(u, lo, hi, smooth=True, temperature=1e-10)
    np.testing.assert_allclose(smooth, wts.guardrail(u, lo, hi), atol=1e-8)


@pytest.mark.parametrize("u, lo", [((0.59259259259259, 0.59259259259259, 0.11111111111111, -0.2962962962963), 0.09375),
                                   ((0.0, 0.4, 0.4, 0.2), 0.1875)])
def test_smooth_guardrail_converges_where_the_exact_map_needs_several_passes(u, lo):
    # membership recomputed per pass would give 1/2 to an entry pinned exactly at lo by the previous pass
    u = np.array(u) / np.sum(u)
    hi = 1 - 3 * lo
    exact = wts.guardrail(u, lo, hi)
    assert np.any(_one_exact_pass(u, lo, hi) < lo)  # one pass is not enough here
    gaps = [np.abs(wts.guardrail(u, lo, hi, True, tau) - exact).max() for tau in (1e-4, 1e-6, 1e-8, 1e-10)]
    assert gaps[-1] < 1e-9
    assert all(later <= earlier for earlier, later in zip(gaps, gaps[1:]))


@given(problem=simplex_problems(), tau=st.sampled_from([1e-1, 1e-2, 1e-3]))
@SETTINGS
def test_smooth_guardrail_formula(problem, tau):
    # docs/smooth_mode.md: n passes of softclip, sigmoid membership on the pass input (kept pinned by a
    # soft OR with the previous pass, see reference/weights.py), rescale
    u, lo, hi = problem
    x, pinned = u.copy(), np.zeros_like(u)
    for _ in range(len(u)):
        clipped = lo + tau * np.logaddexp(0, (x - lo) / tau) - tau * np.logaddexp(0, (x - hi) / tau)
        with np.errstate(over="ignore"):
            m = 1 - (1 - pinned) * (1 - 1 / (1 + np.exp(-(lo - x) / tau)))
        pinned = m
        x = m * lo + (1 - m) * clipped * (1 - lo * m.sum()) / ((1 - m) * clipped).sum()
    np.testing.assert_allclose(wts.guardrail(u, lo, hi, smooth=True, temperature=tau), x, rtol=1e-12, atol=1e-15)


def test_smooth_guardrail_is_smooth_and_differs_at_moderate_temperature():
    u = np.array([0.7, 0.32, -0.02])
    a = wts.guardrail(u, 0.05, 0.9, smooth=True, temperature=1e-1)
    b = wts.guardrail(u, 0.05, 0.9, smooth=True, temperature=1e-2)
    exact = wts.guardrail(u, 0.05, 0.9)
    assert np.abs(a - exact).max() > np.abs(b - exact).max() > 0


# --- speed limit (math.md 3.2 step 4) ---------------------------------------------------------------

def test_speed_limit_reference_is_exactly_max_change():
    # math.md 3.2: prev (.5, .5), r (.5, -.5), w_min .05, max change 3e-4, I = 1440 -> target (.95, .05)
    a, delta = wts.coarse_weights([[0.5, -0.5]], [0.5, 0.5], "delta", None, 0.05, 0.95, 3e-4, 1440)
    np.testing.assert_array_equal(a[0], [0.5, 0.5])
    np.testing.assert_allclose(delta[0], [3e-4, -3e-4], rtol=1e-15)  # not the incumbent's 2.99999904e-4
    target = wts.guardrail([1.0, 0.0], 0.05, 0.95)
    np.testing.assert_allclose(target, [0.95, 0.05], rtol=1e-15)


@given(
    delta=st.lists(st.floats(-1e-2, 1e-2, allow_subnormal=False), min_size=2, max_size=6),
    max_change=st.floats(1e-5, 1e-2),
)
@example(delta=[0.0078125, 2.2250738585072014e-308], max_change=1.1e-5)  # a subnormal result (see below)
@SETTINGS
def test_speed_limit_bounds_and_smooth_limit(delta, max_change):
    delta = np.array(delta)
    exact = wts.speed_limit(delta, max_change)
    assert np.abs(exact).max() <= max_change * (1 + 1e-15)  # an ulp over max_change at most
    if np.abs(delta).max() <= max_change:
        np.testing.assert_array_equal(exact, delta)
    else:  # scaled, direction kept
        # rtol: a few ulps (the scaling is rounded in another order); atol: an entry near finfo.tiny scaled
        # down is subnormal, with fewer significant bits than rtol assumes
        np.testing.assert_allclose(exact, delta * max_change / np.abs(delta).max(), rtol=1e-14,
                                   atol=np.finfo(np.float64).tiny)
    for tau in (1e-1, 1e-3):
        smooth = wts.speed_limit(delta, max_change, smooth=True, temperature=tau)
        assert np.abs(smooth).max() <= max_change * (1 + 1e-15)  # as above
        # delta / M with M <= ~1e3 keeps even finfo.tiny nonzero (subnormal; numpy/Numba do not flush)
        assert np.all(np.sign(smooth) == np.sign(delta))
    smooth = wts.speed_limit(delta, max_change, smooth=True, temperature=1e-9)
    # M exceeds max(z, 1) by O(tau log n) = O(1e-9): relative to max_change, with margin
    np.testing.assert_allclose(smooth, exact, atol=1e-8 * max_change)


def test_smooth_speed_limit_formula():
    delta, mc, tau = np.array([2e-4, -5e-4]), 3e-4, 0.1
    z = np.sqrt((delta / mc) ** 2 + tau**2)
    big_m = tau * np.log(np.exp(z / tau).sum() + np.exp(1 / tau))
    np.testing.assert_allclose(wts.speed_limit(delta, mc, True, tau), delta / big_m, rtol=1e-14)


# --- coarse recursion (math.md 3.2) -----------------------------------------------------------------

@given(seed=st.integers(0, 2**31), n=st.integers(2, 5), n_chunks=st.integers(0, 12),
       smooth=st.booleans(), kind=st.sampled_from(["delta", "weight"]))
@SETTINGS
def test_coarse_weights_invariants(seed, n, n_chunks, smooth, kind):
    rng = np.random.default_rng(seed)
    w_min, period, max_change = 0.1 / n, 60, 1e-3
    w_max = 1.0 - (n - 1) * w_min
    if kind == "delta":
        outputs = rng.normal(0.0, 0.3, size=(n_chunks, n))
        outputs -= outputs.mean(axis=1, keepdims=True)
        alpha = None
    else:
        outputs = rng.dirichlet(np.ones(n), size=n_chunks)
        alpha = rng.uniform(0.0, 1.0, size=n)
    w0 = rng.dirichlet(np.ones(n)) * (1 - n * w_min) + w_min
    a, delta = wts.coarse_weights(outputs, w0, kind, alpha, w_min, w_max, max_change, period, smooth, 1e-4)
    assert a.shape == delta.shape == (n_chunks, n)
    if n_chunks == 0:
        return
    np.testing.assert_array_equal(a[0], w0)
    np.testing.assert_allclose(a[1:], a[:-1] + period * delta[:-1], rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-13)
    np.testing.assert_allclose(delta.sum(axis=1), 0.0, atol=1e-14)
    assert np.all(np.abs(delta) <= max_change * (1 + 1e-14))
    if not smooth:
        assert np.all(a >= w_min - 1e-15) and np.all(a <= w_max + 1e-15)


def test_weight_rule_mixes_carry_and_output():
    # u = alpha a + (1 - alpha) r, inside the bounds, I = 1 and max change 1: reached in one block
    w0, r, alpha = np.array([0.2, 0.3, 0.5]), np.array([0.4, 0.4, 0.2]), np.array([0.25, 0.5, 0.75])
    a, delta = wts.coarse_weights([r, r], w0, "weight", alpha, 0.05, 0.9, 1.0, 1)
    u = alpha * w0 + (1 - alpha) * r
    np.testing.assert_allclose(a[1], u / u.sum(), rtol=1e-14)


def test_coarse_weights_smooth_converges_to_exact():
    rng = np.random.default_rng(4)
    outputs = rng.normal(0, 0.2, size=(20, 3))
    outputs -= outputs.mean(axis=1, keepdims=True)
    w0 = np.array([0.3, 0.3, 0.4])
    exact = wts.coarse_weights(outputs, w0, "delta", None, 0.05, 0.9, 5e-4, 100)
    smooth = wts.coarse_weights(outputs, w0, "delta", None, 0.05, 0.9, 5e-4, 100, True, 1e-10)
    np.testing.assert_allclose(smooth[0], exact[0], atol=1e-7)
    np.testing.assert_allclose(smooth[1], exact[1], atol=1e-9)


def test_coarse_weights_rejects_a_zero_sum():
    with pytest.raises(ValueError, match="sum"):
        wts.coarse_weights([[-0.5, -0.5]], [0.5, 0.5], "delta", None, 0.05, 0.95, 1e-3, 10)
    with pytest.raises(ValueError, match="alpha"):
        wts.coarse_weights([[0.5, 0.5]], [0.5, 0.5], "weight", None, 0.05, 0.95, 1e-3, 10)


# --- fine weights (math.md 3.3) ---------------------------------------------------------------------

def test_linear_interpolation_reference_rows():
    # math.md 3.3: start (.5, .5), delta (1e-4, -1e-4), I = 4, c = 6 -> .5, .5001, .5002, .5003, .5004, .5004
    w_init = np.array([0.3, 0.7])
    w = wts.fine_weights(w_init, [[0.5, 0.5]], [[1e-4, -1e-4]], 6, 4, "linear", 12)
    np.testing.assert_array_equal(w[:6], np.tile(w_init, (6, 1)))  # the virtual first chunk
    np.testing.assert_allclose(w[6:, 0], [0.5, 0.5001, 0.5002, 0.5003, 0.5004, 0.5004], rtol=1e-15)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-15)


def test_approx_optimal_interpolation_reference_rows():
    w_init = np.array([0.3, 0.7])
    w = wts.fine_weights(w_init, [[0.5, 0.5]], [[0.1, -0.1]], 6, 4, "approx_optimal", 12)
    np.testing.assert_array_equal(w[:6], np.tile(w_init, (6, 1)))
    expected = [0.5, 0.603904545110655, 0.70311375569148, 0.794738725807339, 0.9, 0.9]
    np.testing.assert_allclose(w[6:, 0], expected, atol=1e-14)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-15)


@given(seed=st.integers(0, 2**31), n=st.integers(2, 4), n_chunks=st.integers(0, 5),
       chunk=st.integers(1, 9), data=st.data(), interpolation=st.sampled_from(["linear", "approx_optimal"]))
@SETTINGS
def test_fine_weights_blocks(seed, n, n_chunks, chunk, data, interpolation):
    period = data.draw(st.integers(1, chunk), label="interpolation period")
    n_rows = data.draw(st.integers(0, chunk * (n_chunks + 1)), label="rows")
    rng = np.random.default_rng(seed)
    outputs = rng.normal(0.0, 0.3, size=(n_chunks, n))
    outputs -= outputs.mean(axis=1, keepdims=True)
    w0 = np.full(n, 1.0 / n)
    a, delta = wts.coarse_weights(outputs, w0, "delta", None, 0.1 / n, 1 - (n - 1) * 0.1 / n, 0.05, period)
    w = wts.fine_weights(w0, a, delta, chunk, period, interpolation, n_rows)
    assert w.shape == (n_rows, n)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-14)
    full = wts.fine_weights(w0, a, delta, chunk, period, interpolation, chunk * (n_chunks + 1))
    np.testing.assert_array_equal(w, full[:n_rows])  # truncation only
    for k in range(n_chunks):
        block = full[(k + 1) * chunk: (k + 2) * chunk]
        np.testing.assert_allclose(block[0], a[k], atol=1e-15)
        np.testing.assert_allclose(block[period:], np.tile(a[k] + period * delta[k], (chunk - period, 1)),
                                   atol=1e-15)
        if interpolation == "linear":
            j = np.arange(period)[:, None]
            np.testing.assert_allclose(block[:period], a[k] + j * delta[k], atol=1e-15)


def test_fine_weights_rejects_rows_beyond_the_blocks():
    with pytest.raises(ValueError, match="n_rows"):
        wts.fine_weights([0.5, 0.5], [[0.5, 0.5]], [[0.0, 0.0]], 6, 4, "linear", 13)
