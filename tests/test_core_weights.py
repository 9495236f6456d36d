"""Weights (docs/math.md 3.2-3.4, docs/smooth_mode.md): guardrail, speed limit, coarse recursion, interpolation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tfmm.core import weights as W

from array_helpers import F64_TINY, grad, np_dtype, to_np

SETTINGS = settings(max_examples=30, deadline=None)
FEW = settings(max_examples=15, deadline=None)  # for properties whose every example compiles a new shape


# --- independent numpy readings of docs/math.md 3.2 / 3.3 ------------------------------------------------------

def np_guardrail(u, lo, hi):
    """Clip, rescale the entries not at lo to 1 - |L| lo, repeat until nothing leaves [lo, hi]."""
    x = np.asarray(u, dtype=np.float64).copy()
    for _ in range(100):
        if np.all(x >= lo - 1e-15) and np.all(x <= hi + 1e-15) and abs(x.sum() - 1) < 1e-14:
            break
        x = np.clip(x, lo, hi)
        at_lo = x <= lo
        x[~at_lo] *= (1 - at_lo.sum() * lo) / x[~at_lo].sum()
    return x


def np_coarse(outputs, w_init, kind, alpha, lo, hi, max_change, period):
    a = np.asarray(w_init, dtype=np.float64)
    out_a, out_d = [], []
    for r in outputs:
        u = a + r if kind == "delta" else alpha * a + (1 - alpha) * r
        target = np_guardrail(u / u.sum(), lo, hi)
        delta = (target - a) / period
        biggest = np.max(np.abs(delta))
        if biggest > max_change:
            delta = delta * (max_change / biggest)
        out_a.append(a)
        out_d.append(delta)
        a = a + period * delta
    return np.array(out_a), np.array(out_d)


def np_fine(w_init, a, delta, c, period, interpolation, n_rows):
    rows = [np.asarray(w_init, dtype=np.float64)] * c
    for ak, dk in zip(a, delta):
        end = ak + period * dk
        for j in range(c):
            if j >= period:
                rows.append(end)
            elif interpolation == "linear":
                rows.append(ak + j * dk)
            else:
                mixed = ak + j * dk + ak * (end / ak) ** (j / (period + 1))
                rows.append(mixed / mixed.sum())
    return np.array(rows[:n_rows])


@functools.lru_cache(maxsize=None)
def _coarse_fn(bk):
    def coarse(outputs, w_init, alpha, w_min, w_max, max_change, temperature, *, kind, interpolation_period,
               smooth):
        return W.coarse_weights(outputs, w_init, kind=kind, alpha=alpha, w_min=w_min, w_max=w_max,
                                max_change=max_change, interpolation_period=interpolation_period, smooth=smooth,
                                temperature=temperature, bk=bk)

    return bk.jit(coarse, static_argnames=("kind", "interpolation_period", "smooth"))


def coarse(bk, r, w_init, alpha, w_min, w_max, max_change, temperature, **static):
    """coarse_weights on numpy inputs, jitted once per shape on JAX (the scalar settings are traced, not
    baked in); returns numpy (a, delta)."""
    args = [bk.asarray(r), bk.asarray(w_init), None if alpha is None else bk.asarray(alpha)]
    args += [bk.asarray(x) for x in (w_min, w_max, max_change, temperature)]
    a, delta = _coarse_fn(bk)(*args, **static)
    return to_np(bk, a), to_np(bk, delta)


def guard(bk, u, lo, hi, smooth=False, tau=1e-4):
    return to_np(bk, W.guardrail(bk.asarray(u), lo, hi, smooth=smooth, temperature=tau, bk=bk))


# --- guardrail ---------------------------------------------------------------------------------------------

def test_guardrail_caps_first_with_three_assets(bk):
    out = guard(bk, [1.5, 0.4, -0.9], 0.1, 0.8)
    np.testing.assert_allclose(out, [0.6, 0.3, 0.1], rtol=0, atol=1e-15)  # a few ulps of weights ~0.5
    assert not np.allclose(out, [0.711, 0.189, 0.1], atol=1e-2)  # lifting only the low entries


@pytest.mark.parametrize("u, expected", [
    ((0.05, 0.45, 0.5), (0.1, 0.426315789473684, 0.473684210526316)),
    ((-0.1, 0.5, 0.6), (0.1, 0.409090909090909, 0.490909090909091)),
    ((0.95, 0.025, 0.025), (0.8, 0.1, 0.1)),
])
def test_guardrail_reference_cases_with_one_minute_interpolation(bk, u, expected):
    # the expected values are stated to 15 digits (1e-15 absolute), plus rounding: 1e-14
    np.testing.assert_allclose(guard(bk, u, 0.1, 0.8), expected, rtol=0, atol=1e-14)
    # the same cases through the coarse recursion of a weight rule with alpha = 0, I = 1, max change 1
    a, delta = W.coarse_weights(bk.asarray([u]), bk.asarray([0.2, 0.3, 0.5]), kind="weight",
                                alpha=bk.asarray(np.zeros(3)), w_min=0.1, w_max=0.8, max_change=1.0,
                                interpolation_period=1, smooth=False, temperature=1e-4, bk=bk)
    np.testing.assert_allclose(to_np(bk, a[0] + delta[0]), expected, rtol=0, atol=1e-14)  # as above


@st.composite
def simplex_inputs(draw):
    n = draw(st.integers(2, 6))
    raw = np.array(draw(st.lists(st.floats(-1.0, 2.0), min_size=n, max_size=n)))
    assume(raw.sum() > 0.2)
    lo = draw(st.floats(0.05, 0.95)) / n
    return raw / raw.sum(), lo, 1.0 - (n - 1) * lo


@SETTINGS
@given(case=simplex_inputs())
def test_guardrail_exact_stays_in_bounds_and_sums_to_one(bk, case):
    u, lo, hi = case
    out = guard(bk, u, lo, hi)
    # n passes of rescaling, each a few ulps of entries <= 10 (|u| <= 1 / 0.2 * 2): 1e-12 absolute
    assert np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
    assert abs(out.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(out, np_guardrail(u, lo, hi), rtol=0, atol=1e-12)
    if np.all((u > lo) & (u < hi)):  # already feasible: untouched up to the rounding of one rescale by ~1
        np.testing.assert_allclose(out, u, rtol=0, atol=1e-15)


@SETTINGS
@given(case=simplex_inputs())
def test_guardrail_smooth_sums_to_one_and_converges_to_exact(bk, case):
    u, lo, hi = case
    exact = guard(bk, u, lo, hi)
    errors = []
    for tau in (1e-3, 1e-5, 1e-7):
        out = guard(bk, u, lo, hi, smooth=True, tau=tau)
        assert abs(out.sum() - 1.0) < 1e-12  # rounding of the final rescale (entries up to ~10)
        assert np.all(out >= lo - 10 * tau) and np.all(out <= hi + 10 * tau)  # soft clip overshoots by O(tau)
        errors.append(np.max(np.abs(out - exact)))
    assert errors[-1] < 1e-5  # O(tau) = 1e-7 per pass, amplified by the rescales near a kink
    assert errors[-1] <= errors[0] + 1e-15  # monotone up to rounding


def test_guardrail_smooth_keeps_pinned_entries_pinned(bk):
    # pass 1 pins the first entry at lo and scales .2 below lo; pass 2 sees the first entry exactly at lo
    u, lo, hi = [0.0, 0.4, 0.4, 0.2], 0.1875, 0.4375
    # dyadic values: exact up to an ulp or two of ~0.3
    np.testing.assert_allclose(guard(bk, u, lo, hi), [0.1875, 0.3125, 0.3125, 0.1875], rtol=0, atol=1e-15)
    for tau in (1e-4, 1e-6, 1e-8):
        # the sigmoids at |u - lo| >= 0.0125 are within exp(-125) of 0/1; 1e-12 is rounding of the passes
        np.testing.assert_allclose(guard(bk, u, lo, hi, smooth=True, tau=tau), guard(bk, u, lo, hi), rtol=0,
                                   atol=1e-12)


def test_guardrail_smooth_gradient_is_informative_at_the_bound(bk):
    u = bk.asarray([0.02, 0.48, 0.5])  # first entry below w_min = 0.1: exact gradient w.r.t. it is 0
    f = lambda s: lambda x: W.guardrail(x, 0.1, 0.8, smooth=s, temperature=0.05, bk=bk)[0]  # noqa: E731
    assert float(grad(bk, f(False))(u)[0]) == 0.0
    g = to_np(bk, grad(bk, f(True))(u))
    assert np.all(np.isfinite(g)) and float(g[0]) > 0.0


# --- speed limit -------------------------------------------------------------------------------------------

def test_speed_limit_reference_is_exact(bk):
    a, delta = W.coarse_weights(bk.asarray([[0.5, -0.5]]), bk.asarray([0.5, 0.5]), kind="delta", alpha=None,
                                w_min=0.05, w_max=0.95, max_change=3e-4, interpolation_period=1440,
                                smooth=False, temperature=1e-4, bk=bk)
    np.testing.assert_array_equal(to_np(bk, a), [[0.5, 0.5]])
    # the target (.95, .05) is 0.45 away: delta = 3.125e-4 per minute, limited to exactly 3e-4
    # (the incumbent, adding 1e-10 to the denominator, gets 2.99999904e-4: 3e-7 relative off);
    # 1e-15: the scaling delta / (|delta| / max_change) rounds by an ulp or two
    np.testing.assert_allclose(to_np(bk, delta), [[3e-4, -3e-4]], rtol=1e-15, atol=0)


@SETTINGS
@given(n=st.integers(2, 6), max_change=st.floats(1e-5, 1e-2), data=st.data())
def test_speed_limit_bounds_and_direction(bk, n, max_change, data):
    delta = np.array(data.draw(st.lists(st.floats(-0.05, 0.05, allow_subnormal=False), min_size=n, max_size=n)))
    exact = to_np(bk, W.speed_limit(bk.asarray(delta), max_change, smooth=False, temperature=1e-4, bk=bk))
    assert np.max(np.abs(exact)) <= max_change * (1 + 1e-14)  # a few ulps over max_change
    scale = max(1.0, np.max(np.abs(delta)) / max_change)
    # rtol: a few ulps (delta / scale is rounded in another order); atol: an entry as small as finfo.tiny
    # scaled down is subnormal (fewer significant bits) and XLA:CPU flushes it to 0
    np.testing.assert_allclose(exact, delta / scale, rtol=1e-14, atol=F64_TINY)
    previous = np.inf
    for tau in (1e-2, 1e-4, 1e-6, 1e-8):
        smooth = to_np(bk, W.speed_limit(bk.asarray(delta), max_change, smooth=True, temperature=tau, bk=bk))
        assert np.max(np.abs(smooth)) <= max_change * (1 + 1e-14)  # as for the exact map
        err = np.max(np.abs(smooth - exact)) / max_change
        assert err <= previous + 1e-15  # monotone in tau up to rounding (relative to max_change)
        previous = err
    assert previous < 1e-6  # O(tau log n) at tau = 1e-8, with margin


def test_speed_limit_of_the_smallest_normal_entry(bk):
    """The draw that failed at atol=0: finfo.tiny scaled by 1/scale is subnormal (0 under XLA:CPU's
    flush-to-zero, a few significant bits elsewhere); the floor F64_TINY absorbs either."""
    delta = np.array([0.03125, F64_TINY])
    exact = to_np(bk, W.speed_limit(bk.asarray(delta), 1e-5, smooth=False, temperature=1e-4, bk=bk))
    assert 0.0 <= exact[1] < F64_TINY
    np.testing.assert_allclose(exact, delta * (1e-5 / 0.03125), rtol=1e-14, atol=F64_TINY)  # as above


# --- coarse recursion --------------------------------------------------------------------------------------

def test_coarse_weights_with_no_chunks(bk):
    for kind, alpha in (("delta", None), ("weight", bk.asarray(np.full(3, 0.5)))):
        a, delta = W.coarse_weights(bk.asarray(np.zeros((0, 3))), bk.asarray(np.full(3, 1 / 3)), kind=kind,
                                    alpha=alpha, w_min=0.1, w_max=0.8, max_change=1e-3, interpolation_period=10,
                                    smooth=False, temperature=1e-4, bk=bk)
        assert tuple(a.shape) == (0, 3) and tuple(delta.shape) == (0, 3)


@st.composite
def coarse_cases(draw):
    n = draw(st.integers(2, 4))
    nc = 10
    kind = draw(st.sampled_from(["delta", "weight"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    if kind == "delta":
        r = rng.normal(0, draw(st.sampled_from([0.01, 0.3])), (nc, n))
        r -= r.mean(axis=1, keepdims=True)
        alpha = None
    else:
        r = rng.dirichlet(np.ones(n), nc)
        alpha = rng.uniform(0, 1, n)
    w_init = rng.dirichlet(np.full(n, 5.0))
    lo = 0.1 / n
    period = draw(st.sampled_from([1, 7, 60]))
    max_change = draw(st.sampled_from([1e-4, 3e-3, 1.0]))
    return r, w_init, kind, alpha, lo, 1 - (n - 1) * lo, max_change, period


@SETTINGS
@given(case=coarse_cases())
def test_coarse_weights_match_the_numpy_recursion(bk, case):
    r, w_init, kind, alpha, lo, hi, max_change, period = case
    a, delta = coarse(bk, r, w_init, alpha, lo, hi, max_change, 1e-4, kind=kind, interpolation_period=period,
                      smooth=False)
    ref_a, ref_d = np_coarse(r, w_init, kind, alpha, lo, hi, max_change, period)
    # ten chunks of rounding (weights ~1, rescales and a + I delta): 1e-12 on a, and 1e-14 on the
    # per-minute delta (a difference of weights divided by I)
    np.testing.assert_allclose(a, ref_a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(delta, ref_d, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(a[0], w_init)  # a_0 is w_init itself, bit for bit
    np.testing.assert_allclose(a[1:], a[:-1] + period * delta[:-1], rtol=0, atol=1e-14)  # one add's rounding
    assert np.max(np.abs(delta)) <= max_change * (1 + 1e-12)  # an ulp over max_change, with margin
    np.testing.assert_allclose(delta.sum(axis=1), 0.0, atol=1e-14)  # targets and a both sum to 1 +- ulps


@FEW
@given(case=coarse_cases())
def test_coarse_weights_smooth_converge_to_exact(bk, case):
    r, w_init, kind, alpha, lo, hi, max_change, period = case
    args = (bk, r, w_init, alpha, lo, hi, max_change)
    _, exact = coarse(*args, 1.0, kind=kind, interpolation_period=period, smooth=False)
    _, smooth = coarse(*args, 1e-9, kind=kind, interpolation_period=period, smooth=True)
    a_s, d_s = coarse(*args, 1e-3, kind=kind, interpolation_period=period, smooth=True)
    assert np.max(np.abs(d_s)) <= max_change * (1 + 1e-12)  # the smooth limit never exceeds max_change
    np.testing.assert_allclose(a_s.sum(axis=1), 1.0, atol=1e-12)  # rounding of ten chunks of rescales
    # per-minute deltas within about tau (weights) / I of the exact ones
    np.testing.assert_allclose(smooth, exact, rtol=0, atol=1e-7 / period + 1e-12)


def test_coarse_weights_jit_vmap_and_gradient(bk):
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.05, (4, 6, 3))
    r -= r.mean(axis=-1, keepdims=True)
    kw = dict(kind="delta", alpha=None, w_min=0.05, w_max=0.9, max_change=1e-3, interpolation_period=30,
              temperature=1e-4, bk=bk)

    def final_weight(scale, smooth):
        a, delta = W.coarse_weights(scale * bk.asarray(r[0]), bk.asarray(np.full(3, 1 / 3)), smooth=smooth, **kw)
        return (a[-1] + 30 * delta[-1])[0]

    final_weight = bk.jit(final_weight, static_argnums=1)
    batched = bk.jit(bk.vmap(lambda x: W.coarse_weights(x, bk.asarray(np.full(3, 1 / 3)), smooth=False, **kw)))(
        bk.asarray(r))
    for i in range(4):
        single = W.coarse_weights(bk.asarray(r[i]), bk.asarray(np.full(3, 1 / 3)), smooth=False, **kw)
        # batched and single evaluation may fuse / vectorise differently: a few ulps of deltas ~1e-3
        np.testing.assert_allclose(to_np(bk, batched[1][i]), to_np(bk, single[1]), rtol=1e-14, atol=1e-18)
    one = bk.asarray(1.0)
    g = grad(bk, final_weight)(one, True)
    h = 1e-6
    fd = (final_weight(one + h, True) - final_weight(one - h, True)) / (2 * h)
    assert np.isfinite(float(g))
    # central differences at h = 1e-6: truncation ~h^2, rounding ~eps / h = 2e-10 of values ~0.3
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-5, atol=1e-9)


# --- fine weights ------------------------------------------------------------------------------------------

def test_fine_weights_references(bk):
    kw = dict(chunk_period=6, interpolation_period=4, n_rows=12, bk=bk)
    lin = to_np(bk, W.fine_weights(bk.asarray([0.5, 0.5]), bk.asarray([[0.5, 0.5]]), bk.asarray([[1e-4, -1e-4]]),
                                   interpolation="linear", **kw))
    np.testing.assert_array_equal(lin[:6], 0.5)  # the virtual chunk of w_init, bit for bit
    # a + j delta: one multiply-add of ~0.5 rounds by ~1e-16
    np.testing.assert_allclose(lin[6:, 0], [0.5, 0.5001, 0.5002, 0.5003, 0.5004, 0.5004], rtol=0, atol=1e-15)
    opt = to_np(bk, W.fine_weights(bk.asarray([0.5, 0.5]), bk.asarray([[0.5, 0.5]]), bk.asarray([[0.1, -0.1]]),
                                   interpolation="approx_optimal", **kw))
    np.testing.assert_array_equal(opt[:6], 0.5)  # as above
    # the expected values are given to 15 digits; exp/log of the geometric part round by a few ulps
    np.testing.assert_allclose(opt[6:, 0], [0.5, 0.603904545110655, 0.70311375569148, 0.794738725807339, 0.9, 0.9],
                               rtol=0, atol=1e-14)
    np.testing.assert_allclose(opt.sum(axis=1), 1.0, atol=1e-15)  # normalised: one division's rounding


@FEW
@given(n=st.integers(2, 4), c=st.integers(1, 9), period=st.integers(1, 9), nc=st.integers(0, 5),
       cut=st.integers(0, 8), interpolation=st.sampled_from(["linear", "approx_optimal"]),
       seed=st.integers(0, 2**31))
def test_fine_weights_match_the_per_row_reading(bk, n, c, period, nc, cut, interpolation, seed):
    period = min(period, c)
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.full(n, 4.0), nc).reshape(nc, n)
    target = rng.dirichlet(np.full(n, 4.0), nc).reshape(nc, n)
    delta = (target - a) / period
    w_init = rng.dirichlet(np.full(n, 4.0))
    n_rows = max((nc + 1) * c - cut, 1)
    out = W.fine_weights(bk.asarray(w_init), bk.asarray(a), bk.asarray(delta), chunk_period=c,
                         interpolation_period=period, interpolation=interpolation, n_rows=n_rows, bk=bk)
    ref = np_fine(w_init, a, delta, c, period, interpolation, n_rows)
    assert tuple(out.shape) == (n_rows, n)
    # weights <= 1 from a few multiply-adds and exp/log (approx_optimal): 1e-14 absolute
    np.testing.assert_allclose(to_np(bk, out), ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(to_np(bk, out).sum(axis=1), 1.0, atol=1e-14)


def test_fine_weights_refuses_rows_it_cannot_fill(bk):
    with pytest.raises(ValueError, match="n_rows"):
        W.fine_weights(bk.asarray([0.5, 0.5]), bk.asarray(np.full((1, 2), 0.5)), bk.asarray(np.zeros((1, 2))),
                       chunk_period=4, interpolation_period=4, interpolation="linear", n_rows=9, bk=bk)


# --- float32 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("smooth", [False, True])
def test_weights_run_in_float32(bk, smooth):
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.05, (8, 3))
    r -= r.mean(axis=1, keepdims=True)
    kw = dict(kind="delta", alpha=None, w_min=0.05, w_max=0.9, max_change=1e-3, interpolation_period=20,
              smooth=smooth, temperature=1e-3, bk=bk)
    out = {}
    for dtype in ("float32", "float64"):
        w0 = bk.asarray(np.full(3, 1 / 3), dtype)
        a, delta = W.coarse_weights(bk.asarray(r, dtype), w0, **kw)
        fine = W.fine_weights(w0, a, delta, chunk_period=30, interpolation_period=20,
                              interpolation="approx_optimal", n_rows=250, bk=bk)
        assert np_dtype(a) == np_dtype(delta) == np_dtype(fine) == np.dtype(dtype)
        out[dtype] = to_np(bk, fine).astype(np.float64)
    assert np.all(np.isfinite(out["float32"]))
    # float32 weights ~0.5 carry eps32 = 1.2e-7 per operation, over eight chunks of recursion: 1e-5
    np.testing.assert_allclose(out["float32"], out["float64"], rtol=0, atol=1e-5)
