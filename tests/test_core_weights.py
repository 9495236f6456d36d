"""Weights (MATH.md 3.2-3.4, docs/smooth_mode.md): guardrail, speed limit, coarse recursion, interpolation."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from tfmm.backend import _load
from tfmm.core import weights as W

bk = _load("jax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None)
FEW = settings(max_examples=15, deadline=None)  # for properties whose every example compiles a new shape


# --- independent numpy readings of MATH.md 3.2 / 3.3 ------------------------------------------------------

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


@functools.partial(jax.jit, static_argnames=("kind", "interpolation_period", "smooth"))
def coarse(outputs, w_init, alpha, w_min, w_max, max_change, temperature, *, kind, interpolation_period, smooth):
    """coarse_weights, jitted once per shape (the scalar settings are traced, not baked in)."""
    return W.coarse_weights(outputs, w_init, kind=kind, alpha=alpha, w_min=w_min, w_max=w_max,
                            max_change=max_change, interpolation_period=interpolation_period, smooth=smooth,
                            temperature=temperature, bk=bk)


def guard(u, lo, hi, smooth=False, tau=1e-4):
    return np.asarray(W.guardrail(jnp.asarray(u, dtype=jnp.float64), lo, hi, smooth=smooth, temperature=tau, bk=bk))


# --- guardrail ---------------------------------------------------------------------------------------------

def test_guardrail_caps_first_with_three_assets():
    out = guard([1.5, 0.4, -0.9], 0.1, 0.8)
    np.testing.assert_allclose(out, [0.6, 0.3, 0.1], rtol=0, atol=1e-15)
    assert not np.allclose(out, [0.711, 0.189, 0.1], atol=1e-2)  # lifting only the low entries


@pytest.mark.parametrize("u, expected", [
    ((0.05, 0.45, 0.5), (0.1, 0.426315789473684, 0.473684210526316)),
    ((-0.1, 0.5, 0.6), (0.1, 0.409090909090909, 0.490909090909091)),
    ((0.95, 0.025, 0.025), (0.8, 0.1, 0.1)),
])
def test_guardrail_reference_cases_with_one_minute_interpolation(u, expected):
    np.testing.assert_allclose(guard(u, 0.1, 0.8), expected, rtol=0, atol=1e-14)
    # the same cases through the coarse recursion of a weight rule with alpha = 0, I = 1, max change 1
    a, delta = W.coarse_weights(jnp.asarray([u]), jnp.asarray([0.2, 0.3, 0.5]), kind="weight",
                                alpha=jnp.zeros(3), w_min=0.1, w_max=0.8, max_change=1.0,
                                interpolation_period=1, smooth=False, temperature=1e-4, bk=bk)
    np.testing.assert_allclose(np.asarray(a[0] + delta[0]), expected, rtol=0, atol=1e-14)


@st.composite
def simplex_inputs(draw):
    n = draw(st.integers(2, 6))
    raw = np.array(draw(st.lists(st.floats(-1.0, 2.0), min_size=n, max_size=n)))
    assume(raw.sum() > 0.2)
    lo = draw(st.floats(0.05, 0.95)) / n
    return raw / raw.sum(), lo, 1.0 - (n - 1) * lo


@SETTINGS
@given(simplex_inputs())
def test_guardrail_exact_stays_in_bounds_and_sums_to_one(case):
    u, lo, hi = case
    out = guard(u, lo, hi)
    assert np.all(out >= lo - 1e-12) and np.all(out <= hi + 1e-12)
    assert abs(out.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(out, np_guardrail(u, lo, hi), rtol=0, atol=1e-12)
    if np.all((u > lo) & (u < hi)):  # already feasible: untouched
        np.testing.assert_allclose(out, u, rtol=0, atol=1e-15)


@SETTINGS
@given(simplex_inputs())
def test_guardrail_smooth_sums_to_one_and_converges_to_exact(case):
    u, lo, hi = case
    exact = guard(u, lo, hi)
    errors = []
    for tau in (1e-3, 1e-5, 1e-7):
        out = guard(u, lo, hi, smooth=True, tau=tau)
        assert abs(out.sum() - 1.0) < 1e-12
        assert np.all(out >= lo - 10 * tau) and np.all(out <= hi + 10 * tau)
        errors.append(np.max(np.abs(out - exact)))
    assert errors[-1] < 1e-5
    assert errors[-1] <= errors[0] + 1e-15


def test_guardrail_smooth_keeps_pinned_entries_pinned():
    # pass 1 pins the first entry at lo and scales .2 below lo; pass 2 sees the first entry exactly at lo
    u, lo, hi = [0.0, 0.4, 0.4, 0.2], 0.1875, 0.4375
    np.testing.assert_allclose(guard(u, lo, hi), [0.1875, 0.3125, 0.3125, 0.1875], rtol=0, atol=1e-15)
    for tau in (1e-4, 1e-6, 1e-8):
        np.testing.assert_allclose(guard(u, lo, hi, smooth=True, tau=tau), guard(u, lo, hi), rtol=0, atol=1e-12)


def test_guardrail_smooth_gradient_is_informative_at_the_bound():
    u = jnp.asarray([0.02, 0.48, 0.5])  # first entry below w_min = 0.1: exact gradient w.r.t. it is 0
    f = lambda s: lambda x: W.guardrail(x, 0.1, 0.8, smooth=s, temperature=0.05, bk=bk)[0]
    assert float(jax.grad(f(False))(u)[0]) == 0.0
    g = jax.grad(f(True))(u)
    assert np.all(np.isfinite(np.asarray(g))) and float(g[0]) > 0.0


# --- speed limit -------------------------------------------------------------------------------------------

def test_speed_limit_reference_is_exact():
    a, delta = W.coarse_weights(jnp.asarray([[0.5, -0.5]]), jnp.asarray([0.5, 0.5]), kind="delta", alpha=None,
                                w_min=0.05, w_max=0.95, max_change=3e-4, interpolation_period=1440,
                                smooth=False, temperature=1e-4, bk=bk)
    np.testing.assert_array_equal(np.asarray(a), [[0.5, 0.5]])
    # the target (.95, .05) is 0.45 away: delta = 3.125e-4 per minute, limited to exactly 3e-4
    # (the incumbent, adding 1e-10 to the denominator, gets 2.99999904e-4: 3e-7 relative off)
    np.testing.assert_allclose(np.asarray(delta), [[3e-4, -3e-4]], rtol=1e-15, atol=0)


@SETTINGS
@given(st.integers(2, 6), st.floats(1e-5, 1e-2), st.data())
def test_speed_limit_bounds_and_direction(n, max_change, data):
    delta = np.array(data.draw(st.lists(st.floats(-0.05, 0.05, allow_subnormal=False), min_size=n, max_size=n)))
    exact = np.asarray(W.speed_limit(jnp.asarray(delta), max_change, smooth=False, temperature=1e-4, bk=bk))
    assert np.max(np.abs(exact)) <= max_change * (1 + 1e-14)
    scale = max(1.0, np.max(np.abs(delta)) / max_change)
    np.testing.assert_allclose(exact, delta / scale, rtol=1e-14, atol=0)
    previous = np.inf
    for tau in (1e-2, 1e-4, 1e-6, 1e-8):
        smooth = np.asarray(W.speed_limit(jnp.asarray(delta), max_change, smooth=True, temperature=tau, bk=bk))
        assert np.max(np.abs(smooth)) <= max_change * (1 + 1e-14)
        err = np.max(np.abs(smooth - exact)) / max_change
        assert err <= previous + 1e-15
        previous = err
    assert previous < 1e-6


# --- coarse recursion --------------------------------------------------------------------------------------

def test_coarse_weights_with_no_chunks():
    for kind, alpha in (("delta", None), ("weight", jnp.full(3, 0.5))):
        a, delta = W.coarse_weights(jnp.zeros((0, 3)), jnp.full(3, 1 / 3), kind=kind, alpha=alpha, w_min=0.1,
                                    w_max=0.8, max_change=1e-3, interpolation_period=10, smooth=False,
                                    temperature=1e-4, bk=bk)
        assert a.shape == (0, 3) and delta.shape == (0, 3)


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
@given(coarse_cases())
def test_coarse_weights_match_the_numpy_recursion(case):
    r, w_init, kind, alpha, lo, hi, max_change, period = case
    a, delta = coarse(jnp.asarray(r), jnp.asarray(w_init), None if alpha is None else jnp.asarray(alpha), lo, hi,
                      max_change, 1e-4, kind=kind, interpolation_period=period, smooth=False)
    a, delta = np.asarray(a), np.asarray(delta)
    ref_a, ref_d = np_coarse(r, w_init, kind, alpha, lo, hi, max_change, period)
    np.testing.assert_allclose(a, ref_a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(delta, ref_d, rtol=0, atol=1e-14)
    np.testing.assert_allclose(a[0], w_init, rtol=0, atol=0)
    np.testing.assert_allclose(a[1:], a[:-1] + period * delta[:-1], rtol=0, atol=1e-14)
    assert np.max(np.abs(delta)) <= max_change * (1 + 1e-12)
    np.testing.assert_allclose(delta.sum(axis=1), 0.0, atol=1e-14)


@FEW
@given(coarse_cases())
def test_coarse_weights_smooth_converge_to_exact(case):
    r, w_init, kind, alpha, lo, hi, max_change, period = case
    args = (jnp.asarray(r), jnp.asarray(w_init), None if alpha is None else jnp.asarray(alpha), lo, hi, max_change)
    _, exact = coarse(*args, 1.0, kind=kind, interpolation_period=period, smooth=False)
    _, smooth = coarse(*args, 1e-9, kind=kind, interpolation_period=period, smooth=True)
    a_s, d_s = coarse(*args, 1e-3, kind=kind, interpolation_period=period, smooth=True)
    assert np.max(np.abs(np.asarray(d_s))) <= max_change * (1 + 1e-12)
    np.testing.assert_allclose(np.asarray(a_s).sum(axis=1), 1.0, atol=1e-12)
    # per-minute deltas within about tau (weights) / I of the exact ones
    np.testing.assert_allclose(np.asarray(smooth), np.asarray(exact), rtol=0, atol=1e-7 / period + 1e-12)


def test_coarse_weights_jit_vmap_and_gradient():
    rng = np.random.default_rng(1)
    r = rng.normal(0, 0.05, (4, 6, 3))
    r -= r.mean(axis=-1, keepdims=True)

    @functools.partial(jax.jit, static_argnums=1)
    def final_weight(scale, smooth):
        a, delta = W.coarse_weights(scale * jnp.asarray(r[0]), jnp.full(3, 1 / 3), kind="delta", alpha=None,
                                    w_min=0.05, w_max=0.9, max_change=1e-3, interpolation_period=30,
                                    smooth=smooth, temperature=1e-4, bk=bk)
        return (a[-1] + 30 * delta[-1])[0]

    batched = jax.jit(jax.vmap(lambda x: W.coarse_weights(
        x, jnp.full(3, 1 / 3), kind="delta", alpha=None, w_min=0.05, w_max=0.9, max_change=1e-3,
        interpolation_period=30, smooth=False, temperature=1e-4, bk=bk)))(jnp.asarray(r))
    for i in range(4):
        single = W.coarse_weights(jnp.asarray(r[i]), jnp.full(3, 1 / 3), kind="delta", alpha=None, w_min=0.05,
                                  w_max=0.9, max_change=1e-3, interpolation_period=30, smooth=False,
                                  temperature=1e-4, bk=bk)
        np.testing.assert_allclose(np.asarray(batched[1][i]), np.asarray(single[1]), rtol=1e-14, atol=1e-18)
    g = jax.jit(jax.grad(final_weight), static_argnums=1)(1.0, True)
    h = 1e-6
    fd = (final_weight(1.0 + h, True) - final_weight(1.0 - h, True)) / (2 * h)
    assert np.isfinite(float(g))
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-5, atol=1e-9)


# --- fine weights ------------------------------------------------------------------------------------------

def test_fine_weights_references():
    kw = dict(chunk_period=6, interpolation_period=4, n_rows=12, bk=bk)
    lin = W.fine_weights(jnp.asarray([0.5, 0.5]), jnp.asarray([[0.5, 0.5]]), jnp.asarray([[1e-4, -1e-4]]),
                         interpolation="linear", **kw)
    np.testing.assert_allclose(np.asarray(lin)[:6], 0.5, rtol=0, atol=0)  # the virtual chunk of w_init
    np.testing.assert_allclose(np.asarray(lin)[6:, 0], [0.5, 0.5001, 0.5002, 0.5003, 0.5004, 0.5004],
                               rtol=0, atol=1e-15)
    opt = W.fine_weights(jnp.asarray([0.5, 0.5]), jnp.asarray([[0.5, 0.5]]), jnp.asarray([[0.1, -0.1]]),
                         interpolation="approx_optimal", **kw)
    np.testing.assert_allclose(np.asarray(opt)[:6], 0.5, rtol=0, atol=0)
    np.testing.assert_allclose(
        np.asarray(opt)[6:, 0], [0.5, 0.603904545110655, 0.70311375569148, 0.794738725807339, 0.9, 0.9],
        rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(opt).sum(axis=1), 1.0, atol=1e-15)


@FEW
@given(st.integers(2, 4), st.integers(1, 9), st.integers(1, 9), st.integers(0, 5), st.integers(0, 8),
       st.sampled_from(["linear", "approx_optimal"]), st.integers(0, 2**31))
def test_fine_weights_match_the_per_row_reading(n, c, period, nc, cut, interpolation, seed):
    period = min(period, c)
    rng = np.random.default_rng(seed)
    a = rng.dirichlet(np.full(n, 4.0), nc).reshape(nc, n)
    target = rng.dirichlet(np.full(n, 4.0), nc).reshape(nc, n)
    delta = (target - a) / period
    w_init = rng.dirichlet(np.full(n, 4.0))
    n_rows = max((nc + 1) * c - cut, 1)
    out = W.fine_weights(jnp.asarray(w_init), jnp.asarray(a), jnp.asarray(delta), chunk_period=c,
                         interpolation_period=period, interpolation=interpolation, n_rows=n_rows, bk=bk)
    ref = np_fine(w_init, a, delta, c, period, interpolation, n_rows)
    assert out.shape == (n_rows, n)
    np.testing.assert_allclose(np.asarray(out), ref, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, atol=1e-14)


def test_fine_weights_refuses_rows_it_cannot_fill():
    with pytest.raises(ValueError, match="n_rows"):
        W.fine_weights(jnp.asarray([0.5, 0.5]), jnp.zeros((1, 2)) + 0.5, jnp.zeros((1, 2)), chunk_period=4,
                       interpolation_period=4, interpolation="linear", n_rows=9, bk=bk)


# --- float32 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("smooth", [False, True])
def test_weights_run_in_float32(smooth):
    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.05, (8, 3))
    r -= r.mean(axis=1, keepdims=True)
    kw = dict(kind="delta", alpha=None, w_min=0.05, w_max=0.9, max_change=1e-3, interpolation_period=20,
              smooth=smooth, temperature=1e-3, bk=bk)
    out = {}
    for dtype in (jnp.float32, jnp.float64):
        a, delta = W.coarse_weights(jnp.asarray(r, dtype=dtype), jnp.full(3, 1 / 3, dtype=dtype), **kw)
        fine = W.fine_weights(jnp.full(3, 1 / 3, dtype=dtype), a, delta, chunk_period=30, interpolation_period=20,
                              interpolation="approx_optimal", n_rows=250, bk=bk)
        assert a.dtype == dtype and delta.dtype == dtype and fine.dtype == dtype
        out[dtype] = np.asarray(fine, dtype=np.float64)
    assert np.all(np.isfinite(out[jnp.float32]))
    np.testing.assert_allclose(out[jnp.float32], out[jnp.float64], rtol=0, atol=1e-5)
