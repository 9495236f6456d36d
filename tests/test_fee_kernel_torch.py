"""The fee-path kernel as a torch operation (tfmm.backends.torch.fee_kernel) and the torch backend on it.

- values and vector-Jacobian products of the torch operation against the numpy entry points of the kernel
  (tfmm.backends.kernels.fee_path) and against the JAX wrapper (tfmm.backends.jax.fee_kernel with jax.vjp),
  exact and smooth, 2 and 3 assets, with gas, arb fee and some zero-fee minutes;
- torch.autograd.gradcheck in smooth mode;
- torch.func.vmap (nested, some inputs unbatched) against a Python loop, values and gradients, one kernel
  call per batched call; torch.func.grad inside vmap; batched cotangents (the backward under vmap);
- torch.compile(fullgraph=True): one opaque operator, no graph break, values and gradients as in eager;
- end to end: tfmm.simulate / tfmm.value_and_grad on the torch backend (kernel by default) against JAX,
  and the torch backend's scan against its kernel.

Sizes are small (tens to a few hundred minutes) except the end-to-end bouts (two days).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import tfmm
from tfmm.backends.kernels import fee_path as kernel
from tfmm.core import g3m

torch = pytest.importorskip("torch")
pytest.importorskip("jax")
tfmm.get_backend("jax")  # enables float64 in JAX before any JAX array is made
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tfmm.backends.jax.fee_kernel import fee_path as jax_fee_path  # noqa: E402
from tfmm.backends.torch.fee_kernel import (  # noqa: E402
    fee_path as torch_fee_path, settings_args, settings_from_args,
)

DAY = 1440
RTOL_FORWARD = 1e-12
RTOL_VJP = 1e-10
MODES = ("exact", "softmax", "straight_through")
NAMES = ("r0", "weights", "fee", "gas", "arb_fee")  # the differentiated inputs, in the kernel's order


def make_path(n: int, T: int, seed: int, vol: float = 5e-3) -> dict:
    """Prices (GBM), weights inside the simplex moving every minute, equilibrium reserves of a 1e6 USD pool,
    per-minute fee with about 20% exact zeros, gas and arb fee."""
    rng = np.random.default_rng(seed)
    levels = np.exp(rng.uniform(np.log(1e-2), np.log(1e3), n))
    prices = levels * np.exp(np.cumsum(rng.normal(0.0, vol, (T, n)), axis=0))
    logits = np.cumsum(rng.normal(0.0, 2e-2, (T, n)), axis=0) + rng.normal(0.0, 0.5, n)
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    weights = 0.05 + (1 - 0.05 * n) * weights
    fee = rng.uniform(1e-4, 1e-2, T)
    fee[rng.random(T) < 0.2] = 0.0
    return {"r0": 1e6 * weights[0] / prices[0], "weights": weights, "prices": prices, "fee": fee,
            "gas": np.full(T, 1.0), "arb_fee": np.full(T, 5e-4)}


def settings_for(n: int, mode: str, kind: str = "all") -> kernel.FeePathSettings:
    signatures = g3m.signature_matrix(n, kind)
    if mode == "exact":
        return kernel.FeePathSettings(signatures, False)
    return kernel.FeePathSettings(signatures, True, mode, gate_temperature=0.5, selection_temperature=2.0)


def args_of(p: dict) -> tuple:
    return tuple(p[k] for k in ("r0", "weights", "prices", "fee", "gas", "arb_fee"))


def tensors(p: dict, dtype=torch.float64, grad: bool = False) -> list:
    out = [torch.tensor(x, dtype=dtype) for x in args_of(p)]
    if grad:
        for i in (0, 1, 3, 4, 5):
            out[i].requires_grad_(True)
    return out


def assert_close(actual, expected, rtol: float, what: str) -> None:
    """``max |a - e| <= rtol * max |e|`` (scale-aware: adjoint entries can cancel to tiny values)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), np.finfo(np.float64).tiny)
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    assert err <= rtol * scale, f"{what}: max error {err:.3e} > {rtol:.0e} x {scale:.3e}"


def _np(x) -> np.ndarray:
    return x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@pytest.fixture
def count_calls(monkeypatch):
    """Counts the kernel's forward and backward calls (and records the batch shapes they got)."""
    calls = {"forward": [], "backward": []}
    fwd, bwd = kernel.forward, kernel.backward

    def forward(settings, r0, weights, *rest):
        calls["forward"].append(np.broadcast_shapes(np.shape(r0)[:-1], np.shape(weights)[:-2]))
        return fwd(settings, r0, weights, *rest)

    def backward(settings, r0, weights, *rest, **kw):
        calls["backward"].append(np.broadcast_shapes(np.shape(r0)[:-1], np.shape(weights)[:-2]))
        return bwd(settings, r0, weights, *rest, **kw)

    monkeypatch.setattr(kernel, "forward", forward)
    monkeypatch.setattr(kernel, "backward", backward)
    return calls


# -- settings as operator arguments ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_settings_round_trip(mode):
    s = settings_for(3, mode)
    args = settings_args(s)
    assert isinstance(args[0], list) and all(isinstance(v, int) for v in args[0])
    back = settings_from_args(*args)
    assert back == s and settings_from_args(*args) is back  # cached


# -- values and VJPs against the kernel and JAX ----------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [2, 3])
def test_forward_equals_kernel_and_jax(n, mode):
    p = make_path(n, 200, seed=n)
    s = settings_for(n, mode)
    reserves, fees, (reserves_a, choice) = kernel.forward(s, *args_of(p))
    assert np.sum(fees > 0) > 20 and np.sum(p["fee"] == 0) > 0  # trades happen, some minutes without fee
    t_res, t_fees = torch_fee_path(s)(*tensors(p))
    assert t_res.dtype == torch.float64 and tuple(t_res.shape) == reserves.shape
    np.testing.assert_allclose(_np(t_res), reserves, rtol=RTOL_FORWARD, atol=0)
    assert_close(_np(t_fees), fees, RTOL_FORWARD, "fees")
    # the operator itself, with its residuals
    out = torch.ops.tfmm.fee_path(*tensors(p), *settings_args(s))
    assert out[3].dtype == torch.int32
    np.testing.assert_array_equal(_np(out[2]), reserves_a)
    np.testing.assert_array_equal(_np(out[3]), choice)
    j_res, j_fees = jax_fee_path(s)(*(jnp.asarray(x) for x in args_of(p)))
    np.testing.assert_allclose(_np(t_res), np.asarray(j_res), rtol=RTOL_FORWARD, atol=0)
    assert_close(_np(t_fees), np.asarray(j_fees), RTOL_FORWARD, "fees vs jax")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [2, 3])
def test_vjp_equals_kernel_and_jax(n, mode):
    p = make_path(n, 150, seed=10 + n)
    s = settings_for(n, mode)
    reserves, fees, residuals = kernel.forward(s, *args_of(p))
    rng = np.random.default_rng(n)
    g_res = rng.normal(size=reserves.shape) * p["prices"]  # cotangents of a USD-scale loss
    g_fees = rng.normal(size=fees.shape)
    expected = kernel.backward(s, *args_of(p), reserves, residuals, g_res, g_fees)

    xs = tensors(p, grad=True)
    t_res, t_fees = torch_fee_path(s)(*xs)
    got = torch.autograd.grad((t_res, t_fees), [xs[i] for i in (0, 1, 3, 4, 5)],
                              grad_outputs=(torch.tensor(g_res), torch.tensor(g_fees)))

    _, vjp = jax.vjp(jax_fee_path(s), *(jnp.asarray(x) for x in args_of(p)))
    j_grads = vjp((jnp.asarray(g_res), jnp.asarray(g_fees)))
    j_grads = [j_grads[i] for i in (0, 1, 3, 4, 5)]
    for name, g, e, j in zip(NAMES, got, expected, j_grads):
        assert_close(_np(g), e, RTOL_VJP, f"{name} vs kernel")
        assert_close(_np(g), np.asarray(j), RTOL_VJP, f"{name} vs jax")
    assert np.max(np.abs(expected[1])) > 0 and np.max(np.abs(expected[2])) > 0


def test_broadcast_batch_and_grads():
    """Leading axes broadcast; each gradient is summed back to its input's shape (like kernel.backward)."""
    n, T = 2, 60
    s = settings_for(n, "softmax")
    paths = [make_path(n, T, seed=k) for k in range(3)]
    p = dict(paths[0])
    p["r0"] = np.stack([q["r0"] for q in paths])[:, None, :]  # (3, 1, n)
    p["weights"] = np.stack([q["weights"] for q in paths[:2]])  # (2, T, n)
    # the reference: the kernel on inputs materialised at the whole batch shape (the kernel's own
    # broadcasting would compile another Numba specialisation: see _host_full in the torch module), its
    # gradients summed back to the inputs' shapes
    batch = (3, 2)
    full = [np.ascontiguousarray(np.broadcast_to(x, batch + x.shape[x.ndim - c:]))
            for x, c in zip(args_of(p), (1, 2, 2, 1, 1, 1))]
    reserves, fees, residuals = kernel.forward(s, *full)
    assert reserves.shape == (3, 2, T, n)
    rng = np.random.default_rng(0)
    g_res, g_fees = rng.normal(size=reserves.shape), rng.normal(size=fees.shape)
    expected = kernel.backward(s, *full, reserves, residuals, g_res, g_fees, reduce=False)
    expected = [kernel.sum_to_shape(g, p[k].shape) for g, k in zip(expected, NAMES)]
    xs = tensors(p, grad=True)
    t_res, t_fees = torch_fee_path(s)(*xs)
    np.testing.assert_allclose(_np(t_res), reserves, rtol=RTOL_FORWARD, atol=0)
    got = torch.autograd.grad((t_res, t_fees), [xs[i] for i in (0, 1, 3, 4, 5)],
                              grad_outputs=(torch.tensor(g_res), torch.tensor(g_fees)))
    for name, g, e, x in zip(NAMES, got, expected, [xs[i] for i in (0, 1, 3, 4, 5)]):
        assert g.shape == x.shape, name
        assert_close(_np(g), e, RTOL_VJP, name)


def test_float32_in_float32_out():
    p = make_path(2, 100, seed=3)
    s = settings_for(2, "exact")
    ref_res, ref_fees = torch_fee_path(s)(*tensors(p))
    xs = tensors(p, dtype=torch.float32, grad=True)
    res, fees = torch_fee_path(s)(*xs)
    assert res.dtype == torch.float32 and fees.dtype == torch.float32
    np.testing.assert_allclose(_np(res), _np(ref_res), rtol=1e-5)
    (res.sum() + fees.sum()).backward()
    assert all(xs[i].grad.dtype == torch.float32 for i in (0, 1, 3, 4, 5))


def test_only_fees_used_and_no_grad_inputs():
    """A cotangent for one output only (the other is materialised as zeros); inputs without grad get none."""
    p = make_path(2, 80, seed=4)
    s = settings_for(2, "softmax")
    xs = tensors(p)
    xs[1].requires_grad_(True)
    _, fees = torch_fee_path(s)(*xs)
    (g_w,) = torch.autograd.grad(fees.sum(), [xs[1]])
    reserves, f, residuals = kernel.forward(s, *args_of(p))
    expected = kernel.backward(s, *args_of(p), reserves, residuals, np.zeros_like(reserves), np.ones_like(f))
    assert_close(_np(g_w), expected[1], RTOL_VJP, "weights")
    assert xs[0].grad is None


# -- gradcheck ------------------------------------------------------------------------------------------------
def test_gradcheck_smooth():
    """Finite differences in smooth mode (softmax selection, sigmoid gate). Large price moves (2%/minute)
    keep every trade far from the validity boundary, so small perturbations flip no candidate's validity.
    A 100 USD pool so that reserves and fees are O(1)."""
    n, T = 2, 20
    p = make_path(n, T, seed=7, vol=2e-2)
    p["r0"] = p["r0"] * 1e-4
    p["gas"] = np.full(T, 1e-3)
    p["fee"] = np.full(T, 3e-3)  # a zero fee is a boundary (the candidate set changes there)
    s = kernel.FeePathSettings(g3m.signature_matrix(n, "all"), True, "softmax", gate_temperature=0.05,
                               selection_temperature=0.05)
    f = torch_fee_path(s)
    xs = tensors(p, grad=True)
    _, fees = f(*xs)
    assert int((fees > 0).sum()) > 5
    assert torch.autograd.gradcheck(f, tuple(xs), eps=1e-7, atol=1e-6, rtol=1e-5, fast_mode=True)
    assert torch.autograd.gradcheck(f, tuple(xs), eps=1e-7, atol=1e-6, rtol=1e-5, fast_mode=False)


# -- vmap ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["exact", "softmax"])
def test_vmap_nested_equals_loop(mode, count_calls):
    """vmap over r0 sets (outer) and weight paths (inner), prices and rates unbatched: values and gradients
    (autograd through the vmapped call, as the torch backend does) equal a Python loop; one kernel call
    forward and one backward for the whole batch."""
    n, T, B1, B2 = 3, 60, 3, 2
    s = settings_for(n, mode, "pairwise")
    f = torch_fee_path(s)
    paths = [make_path(n, T, seed=20 + k) for k in range(max(B1, B2))]
    base = tensors(paths[0], grad=True)
    r0 = torch.tensor(np.stack([q["r0"] for q in paths[:B1]]), requires_grad=True)
    w = torch.tensor(np.stack([q["weights"] for q in paths[:B2]]), requires_grad=True)
    _, _, prices, fee, gas, arb = base
    t_scale = torch.linspace(0.5, 1.5, T, dtype=torch.float64)

    def g(r0_, w_):
        res, fees = f(r0_, w_, prices, fee, gas, arb)
        return ((res * prices).sum(-1) * t_scale).sum() + fees.sum()

    batched = torch.func.vmap(torch.func.vmap(g, in_dims=(None, 0)), in_dims=(0, None))(r0, w)
    assert len(count_calls["forward"]) == 1 and count_calls["forward"][0] == (B1, B2)
    grads = torch.autograd.grad(batched.sum(), [r0, w, fee, gas, arb])
    assert len(count_calls["backward"]) == 1
    loop = torch.stack([torch.stack([g(r0[i], w[j]) for j in range(B2)]) for i in range(B1)])
    loop_grads = torch.autograd.grad(loop.sum(), [r0, w, fee, gas, arb])
    assert tuple(batched.shape) == (B1, B2)
    np.testing.assert_allclose(_np(batched), _np(loop), rtol=1e-13)
    for name, a, b in zip(("r0", "weights", "fee", "gas", "arb_fee"), grads, loop_grads):
        assert_close(_np(a), _np(b), 1e-12, name)


def test_vmap_in_dims_and_func_grad():
    """Batch axes not in front (in_dims=1), and torch.func.grad inside vmap (the backward runs batched)."""
    n, T, B = 2, 50, 3
    s = settings_for(n, "softmax")
    f = torch_fee_path(s)
    paths = [make_path(n, T, seed=40 + k) for k in range(B)]
    _, _, prices, fee, gas, arb = tensors(paths[0])
    w = torch.tensor(np.stack([q["weights"] for q in paths], axis=1))  # (T, B, n)
    r0 = torch.tensor(paths[0]["r0"])

    def g(w_, gas_):
        res, fees = f(r0, w_, prices, fee, gas_, arb)
        return (res * prices).sum() + fees.sum()

    gas_b = gas.expand(B, T).clone() * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)[:, None]
    values = torch.func.vmap(g, in_dims=(1, 0))(w, gas_b)
    grads_w, grads_gas = torch.func.vmap(torch.func.grad(g, argnums=(0, 1)), in_dims=(1, 0))(w, gas_b)
    for b in range(B):
        wb = w[:, b].clone().requires_grad_(True)
        gb = gas_b[b].clone().requires_grad_(True)
        v = g(wb, gb)
        ew, eg = torch.autograd.grad(v, [wb, gb])
        np.testing.assert_allclose(_np(values[b]), _np(v), rtol=1e-13)
        assert_close(_np(grads_w[b]), _np(ew), 1e-12, "weights")
        assert_close(_np(grads_gas[b]), _np(eg), 1e-12, "gas")


def test_batched_cotangents(count_calls):
    """vmap over the cotangents of torch.func.vjp: the backward operator under vmap, batched over the
    cotangents only (the primals and residuals unbatched); one backward kernel call. Also
    torch.autograd.grad(..., is_grads_batched=True), which runs on torch's legacy vmap (a loop over the
    cotangents here: legacy vmap ignores register_vmap rules), for values only."""
    n, T, K = 2, 40, 4
    s = settings_for(n, "exact")
    f = torch_fee_path(s)
    p = make_path(n, T, seed=50)
    xs = tensors(p, grad=True)
    gen = torch.Generator().manual_seed(0)
    (res, fees), vjp_fn = torch.func.vjp(f, *xs)
    cot_res = torch.randn((K,) + tuple(res.shape), dtype=torch.float64, generator=gen)
    cot_fees = torch.randn((K,) + tuple(fees.shape), dtype=torch.float64, generator=gen)
    batched = torch.func.vmap(vjp_fn)((cot_res, cot_fees))
    assert len(count_calls["backward"]) == 1 and count_calls["backward"][0] == (K,)
    inputs = [xs[i] for i in (0, 1, 3, 4, 5)]
    res, fees = f(*xs)
    legacy = torch.autograd.grad((res, fees), inputs, grad_outputs=(cot_res, cot_fees), is_grads_batched=True,
                                 retain_graph=True)
    for k in range(K):
        single = torch.autograd.grad((res, fees), inputs, grad_outputs=(cot_res[k], cot_fees[k]), retain_graph=True)
        for name, a, b, c in zip(NAMES, [batched[i] for i in (0, 1, 3, 4, 5)], single, legacy):
            assert_close(_np(a[k]), _np(b), 1e-13, name)
            assert_close(_np(c[k]), _np(b), 1e-13, name + " (is_grads_batched)")


# -- torch.compile -----------------------------------------------------------------------------------------------
def _compile_case():
    n, T = 2, 60
    s = settings_for(n, "softmax")
    p = make_path(n, T, seed=60)
    xs = tensors(p, grad=True)
    f = torch_fee_path(s)
    static = settings_args(s)

    def via_function(r0, weights, prices, fee, gas, arb):
        res, fees = f(r0, weights, prices, fee, gas, arb)
        return (res * prices).sum() / 1e6 + fees.sum()

    def via_operator(r0, weights, prices, fee, gas, arb):
        res, fees, _, _ = torch.ops.tfmm.fee_path(r0, weights, prices, fee, gas, arb, *static)
        return (res * prices).sum() / 1e6 + fees.sum()

    return xs, (via_function, via_operator)


def _check_compiled(backend: str) -> float:
    xs, fns = _compile_case()
    inputs = [xs[i] for i in (0, 1, 3, 4, 5)]
    t0 = time.perf_counter()
    for fn in fns:
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend=backend)
        value = compiled(*xs)
        grads = torch.autograd.grad(value, inputs)
        eager = fn(*xs)
        eager_grads = torch.autograd.grad(eager, inputs)
        np.testing.assert_allclose(_np(value), _np(eager), rtol=1e-14)
        for name, a, b in zip(NAMES, grads, eager_grads):
            assert_close(_np(a), _np(b), 1e-14, name)
    return time.perf_counter() - t0


def test_compile_fullgraph_aot_eager():
    """fullgraph=True: the operators are opaque to dynamo (no graph break), fake tensors give the shapes."""
    _check_compiled("aot_eager")
    xs, (fn, _) = _compile_case()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(fn)(*xs)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


@pytest.mark.slow
def test_compile_fullgraph_inductor():
    """The default backend (inductor): ~10-20 s of compilation for the two small functions."""
    elapsed = _check_compiled("inductor")
    print(f"inductor: compile + run + backward of two functions: {elapsed:.1f} s")


# -- the torch backend --------------------------------------------------------------------------------------------
def test_backend_fee_path_option():
    from tfmm.backends.torch.backend import TorchBackend, make_backend

    with pytest.raises(ValueError, match="fee_path"):
        make_backend(fee_path="fused")
    x = torch.zeros(3)
    assert TorchBackend(num_threads=None).uses_fee_kernel(x)  # auto on the CPU
    assert not TorchBackend(num_threads=None, fee_path="scan").uses_fee_kernel(x)
    assert TorchBackend(num_threads=None, fee_path="kernel").uses_fee_kernel(x)
    assert tfmm.get_backend("torch", fee_path="scan").fee_path == "scan"
    assert tfmm.get_backend("torch").fee_path == "auto"
    s = settings_for(2, "exact")
    assert tfmm.get_backend("torch").fee_kernel(s) is torch_fee_path(s)


@pytest.fixture(scope="module")
def bout():
    prices = tfmm.synthetic_prices(n_assets=2, n_minutes=4 * DAY, seed=0)
    pool = tfmm.Pool(fee=0.003, chunk_period=60)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20, chunk_period=60)
    return prices, strategy, pool


def _run(backend: tuple, prices, strategy, pool, **kw):
    name, options = backend
    with tfmm.use(name, **options):
        sim = tfmm.simulate(prices, strategy, pool, **kw).to_numpy()
        value, grads = tfmm.value_and_grad(prices, strategy, pool, **kw)
    return sim, float(value), {k: _np(v) for k, v in grads.items()}


@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_end_to_end_torch_equals_jax(bout, mode, count_calls):
    prices, strategy, pool = bout
    kw = dict(start=DAY, length=2 * DAY + 2, mode=mode)
    sim, value, grads = _run(("torch", {}), prices, strategy, pool, **kw)
    assert count_calls["forward"] and count_calls["backward"]  # the torch backend ran the kernel
    ref_sim, ref_value, ref_grads = _run(("jax", {}), prices, strategy, pool, **kw)
    assert np.sum(sim.fees) > 0
    for field in ("reserves", "weights", "values"):
        np.testing.assert_allclose(getattr(sim, field), getattr(ref_sim, field), rtol=1e-10, err_msg=field)
    assert_close(sim.fees, ref_sim.fees, 1e-9, "fees")
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)
    for k in ref_grads:
        assert_close(grads[k], ref_grads[k], 1e-8, k)


@pytest.mark.parametrize("mode", ["exact", "smooth"])
def test_end_to_end_torch_scan_equals_kernel(bout, mode):
    prices, strategy, pool = bout
    kw = dict(start=DAY, length=300, mode=mode, objective="returns")
    sim_kw = dict(start=DAY, length=300, mode=mode)
    with tfmm.use("torch", fee_path="scan"):
        scan_sim = tfmm.simulate(prices, strategy, pool, **sim_kw).to_numpy()
        scan_value, scan_grads = tfmm.value_and_grad(prices, strategy, pool, **kw)
    with tfmm.use("torch", fee_path="kernel"):
        sim = tfmm.simulate(prices, strategy, pool, **sim_kw).to_numpy()
        value, grads = tfmm.value_and_grad(prices, strategy, pool, **kw)
    assert np.sum(sim.fees) > 0
    np.testing.assert_allclose(sim.reserves, scan_sim.reserves, rtol=1e-12)
    np.testing.assert_allclose(sim.values, scan_sim.values, rtol=1e-12)
    assert_close(sim.fees, scan_sim.fees, 1e-10, "fees")
    np.testing.assert_allclose(float(value), float(scan_value), rtol=1e-11)
    for k in scan_grads:
        assert_close(_np(grads[k]), _np(scan_grads[k]), 1e-8, k)


def test_end_to_end_batched_starts_and_sets(bout, count_calls):
    """Two parameter sets x two bout starts: vmap over both, one kernel call for the whole batch, equal to
    single runs (which test_end_to_end_torch_equals_jax holds to JAX; JAX's own batched kernel call would
    compile another Numba specialisation here)."""
    prices, strategy, pool = bout
    rng = np.random.default_rng(1)
    params = {k: np.stack([v, v + rng.normal(0, 0.2, v.shape)]) for k, v in strategy.params.items()}
    starts = [DAY, DAY + 500]
    kw = dict(length=DAY, mode="smooth")
    with tfmm.use("torch"):
        sim = tfmm.simulate(prices, strategy.with_params(params), pool, start=np.array(starts), **kw).to_numpy()
        value, grads = tfmm.value_and_grad(prices, strategy.with_params(params), pool, start=np.array(starts),
                                           objective="returns", **kw)
        assert count_calls["forward"] == [(2, 2), (2, 2)]  # simulate, value_and_grad
        assert count_calls["backward"] == [(2, 2)]
        assert sim.reserves.shape == (2, 2, DAY - 1, 2)
        for i in range(2):
            single = strategy.with_params({k: v[i] for k, v in params.items()})
            v, g = tfmm.value_and_grad(prices, single, pool, start=np.array(starts), objective="returns", **kw)
            np.testing.assert_allclose(_np(value)[i], _np(v), rtol=1e-13)
            for k in g:
                assert_close(_np(grads[k][i]), _np(g[k]), 1e-12, k)
            for j, start in enumerate(starts):
                one = tfmm.simulate(prices, single, pool, start=start, **kw).to_numpy()
                np.testing.assert_allclose(sim.reserves[i, j], one.reserves, rtol=1e-13)
                np.testing.assert_allclose(sim.values[i, j], one.values, rtol=1e-13)


# -- torch backend primitives changed for speed -------------------------------------------------------------------
def test_vmap_single_element_shortcut_equals_func_vmap():
    """A mapped axis of size 1 skips torch.func.vmap: same values, shapes and gradients, with dict
    arguments, None axes and a non-zero axis."""
    tbk = tfmm.get_backend("torch")

    def fn(p, x, y):
        return {"a": p["w"] * x.sum() + y, "b": (x * p["w"]).sum(0)}

    p = {"w": torch.tensor([[1.0, 2.0]], dtype=torch.float64, requires_grad=True)}
    x = torch.arange(6.0, dtype=torch.float64).reshape(3, 1, 2)
    y = torch.tensor([0.5, -1.0], dtype=torch.float64)
    in_axes = (0, 1, None)
    fast = tbk.vmap(fn, in_axes=in_axes)(p, x, y)
    ref = torch.func.vmap(fn, in_dims=in_axes)(p, x, y)
    for k in ref:
        assert fast[k].shape == ref[k].shape
        np.testing.assert_array_equal(_np(fast[k]), _np(ref[k]))
    (g_fast,) = torch.autograd.grad(sum(v.sum() for v in fast.values()), [p["w"]])
    (g_ref,) = torch.autograd.grad(sum(v.sum() for v in ref.values()), [p["w"]])
    np.testing.assert_array_equal(_np(g_fast), _np(g_ref))
    # size 2 still goes through torch.func.vmap
    p2 = {"w": torch.ones((2, 2), dtype=torch.float64)}
    x2 = torch.ones((3, 2, 2), dtype=torch.float64)
    out = tbk.vmap(fn, in_axes=in_axes)(p2, x2, y)
    assert tuple(out["a"].shape) == (2, 2) and tuple(out["b"].shape) == (2, 2)


def test_dynamic_slice_tensor_start_is_a_view_outside_vmap():
    tbk = tfmm.get_backend("torch")
    x = torch.arange(20.0, dtype=torch.float64).reshape(10, 2)
    out = tbk.dynamic_slice(x, torch.tensor(3), 4, axis=0)
    assert out.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # narrow, not a gather
    np.testing.assert_array_equal(_np(out), _np(x[3:7]))
    np.testing.assert_array_equal(_np(tbk.dynamic_slice(x, torch.tensor(-2), 4, axis=0)), _np(x[6:10]))
    # batched starts still gather
    starts = torch.tensor([0, 9, -1])
    batched = torch.func.vmap(lambda s: tbk.dynamic_slice(x, s, 4, axis=0))(starts)
    np.testing.assert_array_equal(_np(batched), np.stack([_np(x[0:4]), _np(x[6:10]), _np(x[6:10])]))
