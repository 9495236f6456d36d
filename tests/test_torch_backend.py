"""The torch backend: each primitive against its JAX counterpart, and whole simulations and gradients
against the JAX backend (same core code, so they agree to rounding), plus batching and float32."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tfmm
from tfmm.data import synthetic_prices

torch = pytest.importorskip("torch")

DAY = 1440
POOL = tfmm.Pool(fee=0.003, chunk_period=60, max_change=2e-3, gas=0.5, arb_fee=0.0005)
SMOOTH = tfmm.Smoothing(gate_temperature=2.0, selection_temperature=2.0, weight_temperature=1e-3)
START = 600  # ten chunks of burn-in for the estimators


@pytest.fixture(scope="module")
def tbk():
    with tfmm.use("torch") as bk:
        yield bk


@pytest.fixture(scope="module")
def jbk():
    pytest.importorskip("jax")
    with tfmm.use("jax") as bk:
        yield bk


@pytest.fixture(scope="module")
def prices():
    return synthetic_prices(n_assets=2, n_minutes=2 * DAY, seed=5, vol=0.9, corr=0.3)


def _strategy(name: str) -> tfmm.Strategy:
    s = tfmm.Strategy.from_memory_days(name, n_assets=2, memory_days=0.5, k_per_day=4.0, chunk_period=60)
    rng = np.random.default_rng(sum(map(ord, name)))
    # break the symmetry between the assets so every entry matters
    return s.with_params({k: v + rng.normal(0, 0.2, v.shape) for k, v in s.params.items()})


def _np(x):
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# -- whole simulations against the JAX backend ------------------------------------------------------------
@pytest.mark.parametrize("mode", ["exact", "smooth"])
@pytest.mark.parametrize("fee", [0.003, 0.0])
@pytest.mark.parametrize("name", ["momentum", "min_variance"])
def test_simulate_equals_jax(prices, name, fee, mode):
    strategy = _strategy(name)
    pool = tfmm.Pool(fee=fee, chunk_period=60, max_change=2e-3, gas=0.5 if fee else 0.0,
                     arb_fee=0.0005 if fee else 0.0)
    kw = dict(start=START, length=DAY, mode=mode, smoothing=SMOOTH)
    pytest.importorskip("jax")
    with tfmm.use("jax"):
        ref = tfmm.simulate(prices, strategy, pool, **kw).to_numpy()
    with tfmm.use("torch"):
        sim = tfmm.simulate(prices, strategy, pool, **kw)
    assert sim.backend == "torch" and isinstance(sim.values, torch.Tensor)
    assert sim.values.dtype == torch.float64 and tuple(sim.reserves.shape) == (DAY - 1, 2)
    out = sim.to_numpy()
    # the weights move (otherwise the comparison would not exercise the strategy)
    assert np.ptp(out.weights[:, 0]) > 1e-3
    for field in ("reserves", "weights", "values", "prices"):
        np.testing.assert_allclose(getattr(out, field), getattr(ref, field), rtol=1e-10, err_msg=field)
    # trades are differences of consecutive reserves and fees are proportional to them: their rounding
    # error is relative to the reserves (the value), not to their own size
    scale = np.max(np.abs(ref.reserves), axis=0)
    np.testing.assert_allclose(out.trades, ref.trades, rtol=1e-10, atol=1e-10 * float(np.max(scale)))
    np.testing.assert_allclose(out.fees, ref.fees, rtol=1e-10, atol=1e-10 * float(np.max(ref.values)) * fee)
    if fee:
        assert np.sum(out.fees) > 0


@pytest.mark.parametrize("mode, objective, length", [("smooth", "returns", DAY), ("exact", "sharpe", DAY // 2)])
def test_value_and_grad_equals_jax(prices, mode, objective, length):
    strategy = _strategy("momentum")
    kw = dict(start=START, length=length, objective=objective, mode=mode, smoothing=SMOOTH)
    pytest.importorskip("jax")
    with tfmm.use("jax"):
        v_ref, g_ref = tfmm.value_and_grad(prices, strategy, POOL, **kw)
    with tfmm.use("torch"):
        value, grads = tfmm.value_and_grad(prices, strategy, POOL, **kw)
    assert isinstance(value, torch.Tensor) and value.ndim == 0 and not value.requires_grad
    assert float(value) == pytest.approx(float(v_ref), rel=1e-8)
    assert set(grads) == set(strategy.params)
    for key, g in grads.items():
        assert tuple(g.shape) == strategy.params[key].shape and g.dtype == torch.float64
        assert np.all(np.isfinite(_np(g))) and np.max(np.abs(_np(g))) > 0, key
        np.testing.assert_allclose(_np(g), np.asarray(g_ref[key]), rtol=1e-8, atol=1e-14, err_msg=key)


def test_batched_starts_equal_single_runs_and_jax(prices):
    strategy = _strategy("momentum")
    starts = np.array([0, 60, 700])
    kw = dict(length=DAY // 2, mode="exact")
    with tfmm.use("torch"):
        batch = tfmm.simulate(prices, strategy, POOL, start=starts, **kw)
        assert tuple(batch.values.shape) == (3, DAY // 2 - 1)
        assert tuple(batch.prices.shape) == (3, DAY // 2 - 1, 2)
        for i, s in enumerate(starts):
            one = tfmm.simulate(prices, strategy, POOL, start=int(s), **kw)
            np.testing.assert_allclose(_np(batch.values)[i], _np(one.values), rtol=1e-13)
            np.testing.assert_allclose(_np(batch.weights)[i], _np(one.weights), rtol=1e-13)
    pytest.importorskip("jax")
    with tfmm.use("jax"):
        ref = tfmm.simulate(prices, strategy, POOL, start=starts, **kw)
    np.testing.assert_allclose(_np(batch.reserves), np.asarray(ref.reserves), rtol=1e-10)


def test_parameter_sets_and_metrics_equal_jax(prices):
    sets = tfmm.Strategy.from_memory_days("momentum", n_assets=2, n_sets=2, memory_days=0.5, k_per_day=4.0,
                                          chunk_period=60)
    rng = np.random.default_rng(1)
    sets = sets.with_params({k: v + rng.normal(0, 0.3, v.shape) for k, v in sets.params.items()})
    pool = tfmm.Pool(fee=0.0, chunk_period=60, max_change=2e-3)
    kw = dict(start=np.array([START, DAY]), length=DAY // 2)
    with tfmm.use("torch"):
        sim = tfmm.simulate(prices, sets, pool, **kw)
        metrics = tfmm.metrics(sim)
    assert tuple(sim.values.shape) == (2, 2, DAY // 2 - 1)
    pytest.importorskip("jax")
    with tfmm.use("jax"):
        ref = tfmm.simulate(prices, sets, pool, **kw)
        ref_metrics = tfmm.metrics(ref)
    np.testing.assert_allclose(_np(sim.values), np.asarray(ref.values), rtol=1e-10)
    assert set(metrics) == set(ref_metrics)
    for key in ("returns", "sharpe", "returns_over_hodl", "max_drawdown"):
        np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-8, err_msg=key)


def test_float32_runs_and_returns_float32(prices):
    strategy = _strategy("momentum")
    kw = dict(start=START, length=DAY // 2)
    with tfmm.use("torch"):
        f32 = tfmm.simulate(prices, strategy, POOL, dtype="float32", **kw)
        f64 = tfmm.simulate(prices, strategy, POOL, dtype="float64", **kw)
        value, grads = tfmm.value_and_grad(prices, strategy, POOL, objective="returns", dtype="float32",
                                           mode="smooth", smoothing=SMOOTH, **kw)
    for field in ("reserves", "weights", "values", "trades", "fees", "prices"):
        assert getattr(f32, field).dtype == torch.float32, field
    assert value.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads.values())
    rel = np.max(np.abs(_np(f32.values).astype(np.float64) / _np(f64.values) - 1))
    assert rel < 1e-4, rel


# -- primitives against their JAX counterparts ----------------------------------------------------------
def _t(x, dtype=None):
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def test_namespace_and_conversion(tbk):
    assert tbk.name == "torch" and tbk.xp.concat is not None
    assert torch.get_num_threads() == 1  # the documented side effect of making the backend
    a = np.arange(6.0).reshape(2, 3)
    x = tbk.asarray(a)
    a[0, 0] = 99.0  # asarray copies
    assert x.dtype == torch.float64 and float(x[0, 0]) == 0.0
    assert tbk.asarray(a, "float32").dtype == torch.float32
    assert tbk.asarray(np.array([1, 2]), "int64").dtype == torch.int64
    assert tbk.asarray(np.array([1, 2]), "int32").dtype == torch.int32
    assert tbk.asarray(x, "float32").dtype == torch.float32
    y = x.clone().requires_grad_(True) * 2
    out = tbk.to_numpy(y)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out[0, 1] == 2.0
    assert torch.get_default_dtype() == torch.float32  # the global default is left alone


def _scan_step(carry, x):
    """A carry of (vector, scalar) and a dict of inputs; ys a tuple with a nested dict."""
    h, s = carry
    h = 0.9 * h + x["a"] * x["b"]
    s = s + (h * h).sum()
    return (h, s), (h, {"s": s * x["b"]})


def test_scan_equals_lax_scan(tbk, jbk):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)), rng.normal(size=(7,))
    h0 = rng.normal(size=(3,))

    def run(bk, xs_a, xs_b):
        carry = (bk.asarray(h0), bk.asarray(0.0))
        return bk.scan(_scan_step, carry, {"a": bk.asarray(xs_a), "b": bk.asarray(xs_b)[:, None]})

    (th, ts), (tys, tyd) = run(tbk, a, b)
    (jh, js), (jys, jyd) = run(jbk, a, b)
    np.testing.assert_allclose(_np(th), np.asarray(jh), rtol=1e-13)
    np.testing.assert_allclose(_np(ts), np.asarray(js), rtol=1e-13)
    assert tuple(tys.shape) == (7, 3) and tuple(tyd["s"].shape) == (7, 1)
    np.testing.assert_allclose(_np(tys), np.asarray(jys), rtol=1e-13)
    np.testing.assert_allclose(_np(tyd["s"]), np.asarray(jyd["s"]), rtol=1e-13)
    # checkpoint_every is accepted (and ignored)
    (th2, _), _ = tbk.scan(_scan_step, (tbk.asarray(h0), tbk.asarray(0.0)),
                           {"a": tbk.asarray(a), "b": tbk.asarray(b)[:, None]}, checkpoint_every=2)
    assert torch.equal(th2, th)
    # zero steps: carry unchanged, empty ys of the right shapes
    (h_e, s_e), (ys_e, yd_e) = tbk.scan(_scan_step, (tbk.asarray(h0), tbk.asarray(0.0)),
                                        {"a": tbk.asarray(a[:0]), "b": tbk.asarray(b[:0])[:, None]})
    assert torch.equal(h_e, tbk.asarray(h0)) and tuple(ys_e.shape) == (0, 3) and tuple(yd_e["s"].shape) == (0, 1)


def test_scan_gradient_equals_jax(tbk, jbk):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 2))

    def loss(bk):
        def f(params, xs):
            (h, s), (ys, _) = bk.scan(_scan_step, (params["h0"], params["s0"]), {"a": xs, "b": xs[:, :1]})
            return s + bk.xp.sum(ys[-1] * params["h0"]), ys

        return f

    p = {"h0": np.array([0.3, -0.2]), "s0": np.array(0.5)}
    (tv, taux), tg = tbk.value_and_grad(loss(tbk), has_aux=True)({k: tbk.asarray(v) for k, v in p.items()},
                                                                  tbk.asarray(a))
    (jv, jaux), jg = jbk.value_and_grad(loss(jbk), has_aux=True)({k: jbk.asarray(v) for k, v in p.items()},
                                                                  jbk.asarray(a))
    assert float(tv) == pytest.approx(float(jv), rel=1e-13)
    assert not taux.requires_grad and tuple(taux.shape) == (50, 2)
    for k in p:
        np.testing.assert_allclose(_np(tg[k]), np.asarray(jg[k]), rtol=1e-12, err_msg=k)


def _affine(left, right):
    """Composition of h -> A1 h + B1, then h -> A2 h + B2 (associative, not commutative)."""
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 3), axis=st.sampled_from([0, 1]), seed=st.integers(0, 2**16))
def test_associative_scan_equals_sequential(n, m, axis, seed):
    tbk = tfmm.get_backend("torch")
    rng = np.random.default_rng(seed)
    shape = (n, m) if axis == 0 else (m, n)
    a, b = rng.uniform(0.5, 1.0, shape), rng.normal(size=shape)
    ta, tb = tbk.associative_scan(_affine, (_t(a), _t(b)), axis=axis)
    # sequential reference: the running composition along the axis
    a0, b0 = np.moveaxis(a, axis, 0), np.moveaxis(b, axis, 0)
    ea, eb = np.empty_like(a0), np.empty_like(b0)
    ea[0], eb[0] = a0[0], b0[0]
    for i in range(1, n):
        ea[i], eb[i] = ea[i - 1] * a0[i], a0[i] * eb[i - 1] + b0[i]
    np.testing.assert_allclose(_np(ta), np.moveaxis(ea, 0, axis), rtol=1e-12)
    np.testing.assert_allclose(_np(tb), np.moveaxis(eb, 0, axis), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_associative_scan_equals_lax(tbk, jbk, axis):
    rng = np.random.default_rng(3)
    shape = (13, 3) if axis == 0 else (3, 13)
    a, b = rng.uniform(0.5, 1.0, shape), rng.normal(size=shape)
    ta, tb = tbk.associative_scan(_affine, (_t(a), _t(b)), axis=axis)
    ja, jb = jbk.associative_scan(_affine, (jbk.asarray(a), jbk.asarray(b)), axis=axis)
    np.testing.assert_allclose(_np(ta), np.asarray(ja), rtol=1e-12)
    np.testing.assert_allclose(_np(tb), np.asarray(jb), rtol=1e-11, atol=1e-12)


def test_argmax_first_maximum_like_jax(tbk, jbk):
    x = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [np.nan, 1.0, np.nan, 5.0],
                  [-np.inf, -np.inf, -np.inf, -np.inf], [0.0, 1.0, 0.0, 1.0]])
    expected = np.array([1, 0, 0, 0, 1])
    np.testing.assert_array_equal(_np(tbk.argmax(_t(x), axis=-1)), expected)
    np.testing.assert_array_equal(np.asarray(jbk.argmax(x, axis=-1)), expected)
    np.testing.assert_array_equal(_np(tbk.argmax(_t(x.T), axis=0)), expected)
    np.testing.assert_array_equal(_np(tbk.vmap(lambda r: tbk.argmax(r))(_t(x))), expected)
    # a long tie (a vectorised reduction must still pick the lowest index)
    y = np.zeros((2, 1000))
    y[:, 300:] = 1.0
    np.testing.assert_array_equal(_np(tbk.argmax(_t(y), axis=-1)), [300, 300])


def test_one_hot_like_jax(tbk, jbk):
    idx = np.array([[0, 2], [-1, 3]])
    for dtype in ("float64", "float32"):
        out = tbk.one_hot(_t(idx), 3, getattr(torch, dtype))
        assert out.dtype == getattr(torch, dtype) and tuple(out.shape) == (2, 2, 3)
        np.testing.assert_array_equal(_np(out), np.asarray(jbk.one_hot(idx, 3, dtype)))
    assert float(tbk.one_hot(_t(np.array(1)), 3, torch.float64).sum()) == 1.0
    np.testing.assert_array_equal(_np(tbk.vmap(lambda i: tbk.one_hot(i, 3, torch.float64))(_t(idx[0]))),
                                  [[1, 0, 0], [0, 0, 1]])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reductions_and_elementwise_like_jax(tbk, jbk, axis):
    rng = np.random.default_rng(2)
    x = rng.normal(scale=30.0, size=(4, 5))
    for op in ("softmax", "logsumexp", "cumsum"):
        np.testing.assert_allclose(_np(getattr(tbk, op)(_t(x), axis=axis)),
                                   np.asarray(getattr(jbk, op)(x, axis=axis)), rtol=1e-13, atol=1e-300, err_msg=op)
    np.testing.assert_allclose(_np(tbk.sigmoid(_t(x))), np.asarray(jbk.sigmoid(x)), rtol=1e-13)
    # softmax rows sum to one, logsumexp of -inf row is -inf, as in JAX
    np.testing.assert_allclose(_np(tbk.softmax(_t(x), axis=axis)).sum(axis=axis), 1.0, rtol=1e-14)
    assert float(tbk.logsumexp(_t(np.full(3, -np.inf)))) == -np.inf


def test_where_dtypes_and_finite_gradient(tbk):
    cond = _t(np.array([True, False, True]))
    x32 = torch.ones(3, dtype=torch.float32)
    assert tbk.where(cond, x32, 0.0).dtype == torch.float32
    assert tbk.where(cond, 1.0, 0.0).dtype == torch.float64
    np.testing.assert_array_equal(_np(tbk.where(np.array([True, False]), 1.0, 0.0)), [1.0, 0.0])
    # double-where: the gradient of log at the masked zero is an exact 0, not NaN
    z = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64, requires_grad=True)
    safe = tbk.where(z > 0, z, torch.ones_like(z))
    out = tbk.where(z > 0, torch.log(safe), torch.zeros_like(z)).sum()
    (g,) = torch.autograd.grad(out, z)
    np.testing.assert_array_equal(_np(g), [1.0, 0.0, 0.5])


def test_stop_gradient(tbk):
    x = torch.tensor([1.5, -2.0], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((x * tbk.stop_gradient(x)).sum(), x)
    np.testing.assert_array_equal(_np(g), [1.5, -2.0])  # d/dx x * sg(x) = sg(x), not 2x
    tree = tbk.stop_gradient({"a": x * 2, "b": (x, None)})
    assert not tree["a"].requires_grad and not tree["b"][0].requires_grad and tree["b"][1] is None


@settings(max_examples=25, deadline=None)
@given(dim=st.integers(1, 12), data=st.data())
def test_dynamic_slice_like_jax(dim, data):
    tbk = tfmm.get_backend("torch")
    size = data.draw(st.integers(1, dim))
    start = data.draw(st.integers(-2 * dim - 2, dim + 3))
    x = np.arange(dim * 2, dtype=np.float64).reshape(dim, 2)
    # lax semantics: a negative start counts once from the end, then the start is clamped into range
    lo = min(max(start + dim if start < 0 else start, 0), dim - size)
    expected = x[lo : lo + size]
    np.testing.assert_array_equal(_np(tbk.dynamic_slice(_t(x), start, size, axis=0)), expected)
    np.testing.assert_array_equal(_np(tbk.dynamic_slice(_t(x), _t(np.int64(start)), size, axis=0)), expected)
    np.testing.assert_array_equal(_np(tbk.dynamic_slice(_t(x.T), _t(np.int32(start)), size, axis=1)), expected.T)
    if "jax" in tfmm.available_backends():
        jbk = tfmm.get_backend("jax")
        np.testing.assert_array_equal(np.asarray(jbk.dynamic_slice(x, start, size, axis=0)), expected)


def test_vmap_dynamic_slice_and_in_axes_like_jax(tbk, jbk):
    x = np.arange(20.0).reshape(10, 2)
    starts = np.array([0, 3, 9, -1])

    def f(bk):
        return bk.vmap(lambda s, arr, p: bk.dynamic_slice(arr, s, 4, axis=0) * p["scale"], in_axes=(0, None, None))

    out = f(tbk)(_t(starts), _t(x), {"scale": _t(np.array(2.0))})
    ref = f(jbk)(jbk.asarray(starts, "int64"), jbk.asarray(x), {"scale": jbk.asarray(2.0)})
    assert tuple(out.shape) == (4, 4, 2)
    np.testing.assert_array_equal(_np(out), np.asarray(ref))
    # a dict mapped on axis 0 (the engine's parameter-set axis)
    g = tbk.vmap(lambda p, y: p["a"] * y + p["b"].sum(), in_axes=(0, None))
    res = g({"a": _t(np.array([1.0, 2.0])), "b": _t(np.ones((2, 3)))}, _t(np.array([1.0, 10.0])))
    np.testing.assert_array_equal(_np(res), [[4.0, 13.0], [5.0, 23.0]])


def test_value_and_grad_structure_like_jax(tbk, jbk):
    def f(bk):
        def loss(params, y):
            return bk.xp.sum(params["w"] ** 2 * y) + params["b"][0] * 3.0, {"y2": y * 2}

        return loss

    params = {"w": np.array([1.0, -2.0]), "b": np.array([0.5, 7.0])}
    y = np.array([3.0, 4.0])
    (v, aux), g = tbk.value_and_grad(f(tbk), has_aux=True)({k: _t(v) for k, v in params.items()}, _t(y))
    (jv, jaux), jg = jbk.value_and_grad(f(jbk), has_aux=True)(params, y)
    assert float(v) == pytest.approx(float(jv)) == 3.0 + 16.0 + 1.5
    np.testing.assert_array_equal(_np(aux["y2"]), np.asarray(jaux["y2"]))
    for k in params:
        np.testing.assert_array_equal(_np(g[k]), np.asarray(jg[k]))
    np.testing.assert_array_equal(_np(g["w"]), [6.0, -16.0])  # 2 w y
    np.testing.assert_array_equal(_np(g["b"]), [3.0, 0.0])  # an unused entry gets 0, not None
    # without aux; grad; inputs left untouched
    w = _t(np.array([2.0]))
    v2, g2 = tbk.value_and_grad(lambda p: (p ** 3).sum())(w)
    assert float(v2) == 8.0 and float(g2[0]) == 12.0 and not w.requires_grad
    assert float(tbk.grad(lambda p: (p ** 3).sum())(w)[0]) == 12.0
    with pytest.raises(TypeError, match="scalar"):
        tbk.value_and_grad(lambda p: p * 2)(w)


def test_jit_is_identity(tbk):
    def f(x):
        return x + 1

    assert tbk.jit(f) is f


def test_cummax_like_jax_values_and_gradient(tbk, jbk):
    rng = np.random.default_rng(8)
    x = np.cumsum(rng.normal(size=(50, 3)), axis=0)
    for axis in (0, 1):
        np.testing.assert_array_equal(_np(tbk.cummax(_t(x), axis=axis)), np.asarray(jbk.cummax(x, axis=axis)))
    # gradient of a sum of running maxima: 1 per row at the running arg-max (no ties in continuous draws)
    g_t = tbk.grad(lambda v: tbk.cummax(v, axis=0).sum())(_t(x))
    g_j = jbk.grad(lambda v: jbk.cummax(v, axis=0).sum())(x)
    np.testing.assert_array_equal(_np(g_t), np.asarray(g_j))


def test_compile_option_equals_eager(prices):
    """``tfmm.use("torch", compile=True)``: torch.compile(fullgraph=True) of the bout function (the kernels
    are opaque operators inside), values and gradients equal to eager up to inductor's reordering of sums."""
    strategy = _strategy("momentum")
    kw = dict(start=START, length=DAY // 2, objective="sharpe", mode="smooth", smoothing=SMOOTH)
    with tfmm.use("torch"):
        v_eager, g_eager = tfmm.value_and_grad(prices, strategy, POOL, **kw)
    with tfmm.use("torch", compile=True):
        assert tfmm.get_backend().compile
        value, grads = tfmm.value_and_grad(prices, strategy, POOL, **kw)
    # the same float64 operations, fused and reordered by inductor: a few ulps per op over ~10 ops deep
    assert float(value) == pytest.approx(float(v_eager), rel=1e-12)
    for key in grads:
        np.testing.assert_allclose(_np(grads[key]), _np(g_eager[key]), rtol=1e-10, atol=1e-16, err_msg=key)
    with pytest.raises(TypeError, match="compile"):
        tfmm.get_backend("torch", compile="yes")


def test_core_estimators_associative_equals_sequential_on_torch(tbk):
    from tfmm.core import estimators

    rng = np.random.default_rng(4)
    x = _t(np.exp(np.cumsum(rng.normal(0, 0.02, size=(200, 2)), axis=0)) * [100.0, 3.0])
    lam = _t(np.array([0.9, 0.99]))
    for fn in (estimators.ewma, estimators.ewma_gradient, estimators.return_variance):
        seq = _np(fn(x, lam, tbk, method="sequential"))
        assoc = _np(fn(x, lam, tbk, method="associative"))
        # agreement relative to each asset's scale (docs/math.md allows 1e-12)
        err = np.max(np.abs(assoc - seq) / np.max(np.abs(seq), axis=0))
        assert err < 1e-12, (fn.__name__, err)
