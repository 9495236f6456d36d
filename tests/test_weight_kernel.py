"""The weight-path kernel (tfmm.backends.kernels.weight_path) and its JAX and torch wrappers.

- values and vector-Jacobian products against the core's scan (:func:`tfmm.core.weights.coarse_weights`
  differentiated by JAX's autodiff): delta and weight rules, exact and smooth, 2..5 assets, guardrail and
  speed limit binding and not;
- the torch operation against the numpy entry points, ``torch.autograd.gradcheck`` (finite differences) in
  smooth mode, ``torch.func.vmap`` against a loop, ``torch.compile(fullgraph=True)`` against eager;
- end to end: the torch backend (kernel by default) against JAX's scan, and JAX with ``weight_path="kernel"``.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.backends.kernels import weight_path as kernel
from tfmm.core import weights as W

torch = pytest.importorskip("torch")
pytest.importorskip("jax")
tfmm.get_backend("jax")  # float64 in JAX before any JAX array is made
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from tfmm.backends.jax.weight_kernel import weight_path as jax_weight_path  # noqa: E402
from tfmm.backends.torch.weight_kernel import weight_path as torch_weight_path  # noqa: E402

# the kernel and the scan evaluate the same float64 formulas in the same order up to the order of n-term
# sums: values agree to a few ulps of the weights (O(1))
ATOL_VALUES = 1e-14
# reverse passes: the same derivative, accumulated in a different order over up to 60 chunks; smooth mode's
# sigmoid and logsumexp derivatives of arguments ~1/tau lose a few more digits
RTOL_VJP = 1e-9
CASES = [(kind, smooth, n, seed) for kind in ("delta", "weight") for smooth in (False, True)
         for n, seed in ((2, 0), (3, 1), (5, 2))]


def make_case(kind: str, smooth: bool, n: int, seed: int, n_chunks: int = 60) -> tuple[dict, dict]:
    """Rule outputs of mixed scale (so that the guardrail and the speed limit bind on some chunks and not on
    others), a start inside the bounds, alpha, settings."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1e-3, 3e-2, 0.3], size=(n_chunks, 1))
    r = rng.normal(size=(n_chunks, n)) * scale
    if kind == "delta":
        r = r - r.mean(axis=1, keepdims=True)
    else:
        r = np.abs(r) + 0.02
        r = r / r.sum(axis=1, keepdims=True)
    lo = 0.4 / n
    hi = 1.0 - (n - 1) * lo
    w0 = np.clip(rng.dirichlet(np.ones(n) * 3), lo, hi)
    w0 = w0 / w0.sum()
    settings = dict(kind=kind, w_min=lo, w_max=hi, max_change=float(rng.choice([1e-4, 1e-3])),
                    interpolation_period=int(rng.integers(1, 120)), smooth=smooth,
                    temperature=1e-2 if smooth else 1e-4)
    return {"w_init": w0, "outputs": r, "alpha": rng.uniform(0.1, 0.9, n)}, settings


def kernel_settings(s: dict) -> kernel.WeightPathSettings:
    return kernel.WeightPathSettings(s["kind"], s["w_min"], s["w_max"], s["max_change"], s["interpolation_period"],
                                     s["smooth"], s["temperature"])


def scan_fn(s: dict):
    bk = tfmm.get_backend("jax")

    def f(w_init, outputs, alpha):
        return W.coarse_weights(outputs, w_init, alpha=alpha if s["kind"] == "weight" else None, bk=bk, **s)

    return f


def cotangents(x: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 100)
    return rng.normal(size=x["outputs"].shape), rng.normal(size=x["outputs"].shape)


def jax_vjp(f, x: dict, ct) -> tuple:
    out, vjp = jax.vjp(f, *(jnp.asarray(x[k]) for k in ("w_init", "outputs", "alpha")))
    return out, vjp(tuple(jnp.asarray(c) for c in ct))


def tangent(g: np.ndarray) -> np.ndarray:
    """``g`` without its component along (1, ..., 1): the part that acts on perturbations inside the simplex."""
    return g - g.mean(axis=-1, keepdims=True)


def assert_vjp_close(got, want, kind: str) -> None:
    """The cotangents of w_init are compared on the simplex's tangent space: with two assets the speed
    limit's max |ratio| is a tie (the changes sum to 0), split in half by JAX's rule only when the two
    rounded ratios are bit-equal, so the scan's w_init cotangent along (1, 1), a direction that leaves the
    simplex (no strategy moves w_init there), depends on the last bit; the kernel always splits."""
    names = ("w_init", "outputs", "alpha") if kind == "weight" else ("w_init", "outputs")  # alpha unused
    for name, g, w in zip(names, got, want):
        g, w = np.asarray(g), np.asarray(w)
        if name == "w_init":
            g, w = tangent(g), tangent(w)
        np.testing.assert_allclose(g, w, rtol=RTOL_VJP, atol=RTOL_VJP * np.max(np.abs(w)), err_msg=name)


@pytest.mark.parametrize("kind,smooth,n,seed", CASES)
def test_kernel_equals_the_core_scan(kind, smooth, n, seed):
    x, s = make_case(kind, smooth, n, seed)
    ct = cotangents(x, seed)
    want, want_vjp = jax_vjp(scan_fn(s), x, ct)
    got, got_vjp = jax_vjp(jax_weight_path(kernel_settings(s)), x, ct)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=0, atol=ATOL_VALUES)
    assert_vjp_close(got_vjp, want_vjp, kind)
    # the case exercises both regimes of the speed limit and of the guardrail
    a, delta = (np.asarray(v) for v in want)
    ratio = np.max(np.abs(delta), axis=1) / s["max_change"]
    if not smooth:
        assert (ratio > 1 - 1e-12).any() or s["interpolation_period"] * s["max_change"] > 0.1
        assert np.all(ratio <= 1 + 1e-12)
    assert np.all(a >= s["w_min"] - 1e-9) and np.all(a <= s["w_max"] + 1e-9)


@pytest.mark.parametrize("kind,smooth,n,seed", CASES[::3])
def test_torch_operation_equals_numpy_kernel_and_jax_scan(kind, smooth, n, seed):
    x, s = make_case(kind, smooth, n, seed)
    ct = cotangents(x, seed)
    settings = kernel_settings(s)
    inputs = [torch.tensor(x[k], requires_grad=True) for k in ("w_init", "outputs", "alpha")]
    a, delta = torch_weight_path(settings)(*inputs)
    want_a, want_delta = kernel.forward(settings, x["w_init"], x["outputs"], x["alpha"])
    np.testing.assert_array_equal(a.detach().numpy(), want_a)
    np.testing.assert_array_equal(delta.detach().numpy(), want_delta)
    grads = torch.autograd.grad((a * torch.tensor(ct[0])).sum() + (delta * torch.tensor(ct[1])).sum(), inputs)
    _, want_vjp = jax_vjp(scan_fn(s), x, ct)
    assert_vjp_close(grads, want_vjp, kind)


@pytest.mark.parametrize("kind", ["delta", "weight"])
def test_torch_gradcheck_smooth(kind):
    """Finite differences of the kernel itself: an independent check of the hand-written reverse pass."""
    x, s = make_case(kind, True, 3, 7, n_chunks=6)
    s["interpolation_period"] = 5
    f = torch_weight_path(kernel_settings(s))
    inputs = tuple(torch.tensor(x[k], requires_grad=True) for k in ("w_init", "outputs", "alpha"))
    # central differences with eps 1e-6 on O(1) inputs: truncation ~ eps^2 * f''' ~ 1e-9 relative here
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_torch_vmap_and_compile_match_a_loop():
    x, s = make_case("delta", False, 3, 3, n_chunks=20)
    settings = kernel_settings(s)
    f = torch_weight_path(settings)
    rng = np.random.default_rng(5)
    outputs = torch.tensor(x["outputs"][None] * rng.uniform(0.5, 2.0, (4, 1, 1)))
    w0, alpha = torch.tensor(x["w_init"]), torch.tensor(x["alpha"])
    batched = torch.func.vmap(f, in_dims=(None, 0, None))(w0, outputs, alpha)
    for b in range(4):
        single = f(w0, outputs[b], alpha)
        for got, want in zip(batched, single):
            torch.testing.assert_close(got[b], want, rtol=0, atol=0)

    def loss(o):
        a, delta = f(w0, o, alpha)
        return (a.sum(dim=-1) * delta[..., 0]).sum()

    compiled = torch.compile(loss, fullgraph=True)  # fullgraph: the operator is traced, no graph break
    o1 = outputs.clone().requires_grad_(True)
    o2 = outputs.clone().requires_grad_(True)
    eager_value, compiled_value = loss(o1), compiled(o2)
    # the kernel's results are identical; inductor may reorder the final sum (a few ulps)
    torch.testing.assert_close(compiled_value, eager_value, rtol=1e-14, atol=0)
    eager_value.backward()
    compiled_value.backward()
    torch.testing.assert_close(o2.grad, o1.grad, rtol=1e-14, atol=1e-300)


def test_kernel_float32_is_float64_rounded_once():
    x, s = make_case("delta", True, 2, 4)
    f = jax_weight_path(kernel_settings(s))
    a32, d32 = f(*(jnp.asarray(x[k], dtype=jnp.float32) for k in ("w_init", "outputs", "alpha")))
    a64, d64 = kernel.forward(kernel_settings(s), *(np.asarray(x[k], np.float32) for k in ("w_init", "outputs", "alpha")))
    assert a32.dtype == jnp.float32 and d32.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a32), a64.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(d32), d64.astype(np.float32))


def test_settings_are_validated():
    with pytest.raises(ValueError, match="kind"):
        kernel.WeightPathSettings("momentum", 0.1, 0.9, 1e-3, 10, False)
    with pytest.raises(ValueError, match="w_min"):
        kernel.WeightPathSettings("delta", 0.6, 0.5, 1e-3, 10, False)
    with pytest.raises(ValueError, match="max_change"):
        kernel.WeightPathSettings("delta", 0.1, 0.9, 0.0, 10, False)
    with pytest.raises(ValueError, match="weight_path"):
        tfmm.get_backend("torch", weight_path="fused")


@pytest.mark.parametrize("mode", ["exact", "smooth"])
@pytest.mark.parametrize("name", ["momentum", "min_variance"])
def test_end_to_end_kernel_equals_scan(name, mode):
    """Hourly chunks over five days: the torch backend (weight kernel by default) and JAX with the kernel,
    against JAX's scan; values rtol 1e-10 (the fee path amplifies 1e-15 weight differences by at most the
    bout's sensitivity), gradients rtol 1e-7 (the objective's gradient sums over 5 days of minutes)."""
    from tfmm.data import synthetic_prices

    prices = synthetic_prices(n_assets=2, n_minutes=8 * 1440, seed=3, vol=0.8)
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=1e-3)
    strategy = tfmm.Strategy.from_memory_days(name, n_assets=2, memory_days=2.0, k_per_day=30.0, chunk_period=60)
    kw = dict(start=1440, length=5 * 1440, mode=mode)
    results = {}
    for label, backend, options in (("scan", "jax", {"weight_path": "scan"}), ("jax kernel", "jax", {"weight_path": "kernel"}),
                                    ("torch", "torch", {})):
        with tfmm.use(backend, **options):
            sim = tfmm.simulate(prices, strategy, pool, **kw).to_numpy()
            value, grads = tfmm.value_and_grad(prices, strategy, pool, **kw)
        results[label] = (sim, float(value), {k: np.asarray(tfmm.get_backend(backend).to_numpy(v)) for k, v in grads.items()})
    sim0, v0, g0 = results["scan"]
    for label in ("jax kernel", "torch"):
        sim, v, g = results[label]
        np.testing.assert_allclose(sim.weights, sim0.weights, rtol=0, atol=1e-13, err_msg=label)
        np.testing.assert_allclose(sim.values, sim0.values, rtol=1e-10, err_msg=label)
        np.testing.assert_allclose(v, v0, rtol=1e-10, err_msg=label)
        for k in g0:
            np.testing.assert_allclose(g[k], g0[k], rtol=1e-7, atol=1e-7 * np.max(np.abs(g0[k])), err_msg=f"{label} {k}")
