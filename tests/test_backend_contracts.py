"""Every backend against the contracts of :mod:`tfmm.backend`, by calling, not by attribute names.

:class:`~tfmm.backend.Executor` (jax, torch, reference): ``simulate``, ``simulator_for``, ``metrics`` and
``value_and_grad_objective`` on one small request, checked against each other and against closed forms
(the objective of ``value_and_grad_objective`` is the metric of the same simulation; ``simulator_for`` with
the request's own parameters is ``simulate``). :class:`~tfmm.backend.ArrayOps` (jax, torch): each primitive
on small inputs against numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.api import make_request
from tfmm.backend import ArrayOps, Executor
from tfmm.data import synthetic_prices

BACKENDS = [b for b in ("jax", "torch", "reference") if b in tfmm.available_backends()]
ARRAY_BACKENDS = [b for b in ("jax", "torch") if b in tfmm.available_backends()]
POOL = tfmm.Pool(fee=0.003, chunk_period=60, max_change=2e-3)
LENGTH = 3 * 1440 + 2


@pytest.fixture(scope="module")
def request_smooth():
    prices = synthetic_prices(n_assets=2, n_minutes=4 * 1440, seed=3, vol=0.8)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=0.5, k_per_day=10.0,
                                              chunk_period=60)
    return make_request(prices, strategy, POOL, start=60, length=LENGTH, mode="smooth")


@pytest.mark.parametrize("name", BACKENDS)
def test_executor_contract(name, request_smooth):
    bk = tfmm.get_backend(name)
    assert isinstance(bk, Executor) and bk.name == name
    sim = bk.simulate(request_smooth).to_numpy()
    n_out = LENGTH - 1
    assert sim.reserves.shape == (n_out, 2) and sim.weights.shape == (n_out, 2) and sim.values.shape == (n_out,)
    assert sim.backend == name and sim.mode == "smooth" and np.isfinite(sim.values).all()
    np.testing.assert_allclose(sim.weights.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sim.values, (sim.reserves * sim.prices).sum(axis=-1), rtol=1e-12)

    again = bk.simulator_for(request_smooth)(request_smooth.strategy.params).to_numpy()
    np.testing.assert_array_equal(again.values, sim.values)
    moved = {k: v + 0.1 for k, v in request_smooth.strategy.params.items()}
    other = bk.simulator_for(request_smooth)(moved).to_numpy()
    assert not np.allclose(other.weights, sim.weights)  # the parameters passed are the ones simulated

    metrics = bk.metrics(bk.simulate(request_smooth))
    value, grads = bk.value_and_grad_objective(request_smooth, "daily_log_sharpe")
    np.testing.assert_allclose(float(np.asarray(value)), metrics["daily_log_sharpe"], rtol=1e-9)
    assert set(grads) == set(request_smooth.strategy.params)
    for k, g in grads.items():
        g = np.asarray(g.detach() if hasattr(g, "detach") else g)
        assert g.shape == request_smooth.strategy.params[k].shape and np.isfinite(g).all()


def test_reference_is_an_executor_only():
    bk = tfmm.get_backend("reference")
    assert isinstance(bk, Executor) and not isinstance(bk, ArrayOps)


def _np(bk, x) -> np.ndarray:
    return np.asarray(bk.to_numpy(x))


@pytest.mark.parametrize("name", ARRAY_BACKENDS)
def test_array_ops_contract(name):
    bk = tfmm.get_backend(name)
    assert isinstance(bk, ArrayOps) and bk.affine_scan_method in ("sequential", "associative")
    x = np.array([[0.5, -1.0, 2.0], [3.0, 0.25, -2.0]])
    a = bk.asarray(x)
    np.testing.assert_array_equal(_np(bk, a), x)
    assert _np(bk, bk.asarray(x, "float32")).dtype == np.float32
    carry, ys = bk.scan(lambda c, v: (c + v, c * v), bk.asarray(np.zeros(3)), a)
    np.testing.assert_allclose(_np(bk, carry), x.sum(axis=0))
    np.testing.assert_allclose(_np(bk, ys), np.stack([np.zeros(3), x[0] * x[1]]))  # y_t = c_{t-1} v_t
    np.testing.assert_allclose(_np(bk, bk.associative_scan(lambda p, q: p + q, a, axis=0)), np.cumsum(x, axis=0))
    np.testing.assert_allclose(_np(bk, bk.cumsum(a, axis=1)), np.cumsum(x, axis=1))
    np.testing.assert_allclose(_np(bk, bk.cummax(a, axis=0)), np.maximum.accumulate(x, axis=0))
    np.testing.assert_array_equal(_np(bk, bk.argmax(a, axis=-1)), np.argmax(x, axis=-1))
    np.testing.assert_array_equal(_np(bk, bk.dynamic_slice(a, bk.asarray(np.array(1), "int64"), 2, axis=1)),
                                  x[:, 1:3])
    np.testing.assert_array_equal(_np(bk, bk.where(a > 0, a, bk.xp.zeros_like(a))), np.where(x > 0, x, 0))
    np.testing.assert_array_equal(_np(bk, bk.one_hot(bk.asarray(np.array([2, 0]), "int64"), 3, a.dtype)),
                                  np.eye(3)[[2, 0]])
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(_np(bk, bk.softmax(a, axis=-1)), e / e.sum(axis=-1, keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(_np(bk, bk.sigmoid(a)), 1 / (1 + np.exp(-x)), rtol=1e-14)
    np.testing.assert_allclose(_np(bk, bk.logsumexp(a, axis=-1)), np.log(np.exp(x).sum(axis=-1)), rtol=1e-14)

    def f(p):
        return bk.xp.sum(bk.stop_gradient(p["v"]) * p["v"] ** 2)

    value, grads = bk.jit(bk.value_and_grad(f))({"v": a})
    np.testing.assert_allclose(float(_np(bk, value)), float(np.sum(x ** 3)))
    np.testing.assert_allclose(_np(bk, grads["v"]), 2 * x * x)  # d/dv of sg(v) v^2, the stopped factor held
    row_sums = bk.vmap(lambda row: bk.xp.sum(row))(a)
    np.testing.assert_allclose(_np(bk, row_sums), x.sum(axis=1))


@pytest.mark.parametrize("name", ARRAY_BACKENDS)
def test_array_ops_time_loops_match_the_core(name, request_smooth):
    """``reserves_with_fees`` and ``coarse_weights`` (kernel or scan, whichever the backend picks) equal the
    core's scans on the same inputs."""
    from tfmm.core import g3m, weights as core_weights

    bk = tfmm.get_backend(name)
    rng = np.random.default_rng(0)
    t, n = 50, 2
    prices = bk.asarray(np.exp(np.cumsum(rng.normal(0, 0.01, (t, n)), axis=0)) * [30000.0, 2000.0])
    w = bk.asarray(np.full((t, n), 0.5) + np.linspace(-0.1, 0.1, t)[:, None] * [1, -1])
    r0 = bk.asarray(np.array([10.0, 150.0]))
    rates = [bk.asarray(np.full(t, v)) for v in (0.003, 0.5, 0.0)]
    sig = g3m.signature_matrix(n, POOL.signature_set(n))
    smoothing = tfmm.Smoothing()
    got = bk.reserves_with_fees(r0, w, prices, *rates, sig, smooth=True, smoothing=smoothing)
    want = g3m.reserves_with_fees(r0, w, prices, *rates, sig, smooth=True, smoothing=smoothing, bk=bk)
    for g, ref in zip(got, want):
        np.testing.assert_allclose(_np(bk, g), _np(bk, ref), rtol=1e-10, atol=1e-10)
    outputs = bk.asarray(rng.normal(0, 0.01, (6, n)) * [1, -1])
    kwargs = dict(kind="delta", alpha=None, w_min=0.05, w_max=0.95, max_change=2e-3 * 60, interpolation_period=60,
                  smooth=False, temperature=1e-3)
    got = bk.coarse_weights(outputs, bk.asarray(np.array([0.5, 0.5])), **kwargs)
    want = core_weights.coarse_weights(outputs, bk.asarray(np.array([0.5, 0.5])), bk=bk, **kwargs)
    for g, ref in zip(got, want):
        np.testing.assert_allclose(_np(bk, g), _np(bk, ref), rtol=1e-12, atol=1e-15)
