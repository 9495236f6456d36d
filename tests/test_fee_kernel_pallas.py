"""The Pallas fee-path kernels (tfmm.backends.kernels.fee_path_pallas) against the Numba kernel
(tfmm.backends.kernels.fee_path), interpreted on the CPU.

Both implement math.md 2.3-2.5 with the same operation order, so float64 reserves and fees agree to rounding
(rtol 1e-12) and the hand-written reverse passes agree to RTOL_VJP (1e-9 of the largest entry), in exact mode and
in smooth mode with softmax and straight-through selection, for any checkpoint interval. float32 is checked
against the float64 Numba kernel with the tolerances justified at FLOAT32_*. The JAX wrapper's gradients equal
those of the Numba kernel's wrapper, and a batch sharded over four (virtual CPU) devices gives the
single-device result. Sizes are small (T = 40, batch 4): every distinct kernel is compiled by XLA, which
dominates the run time, so the compiled functions are shared between tests and compiled at a low
optimisation level (FAST_COMPILE; it changes code speed, not results).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from test_fee_kernel import RTOL_FORWARD, RTOL_VJP, assert_close, smoothing_for

jax = pytest.importorskip("jax")
from tfmm.backends.jax import backend as jax_backend  # noqa: E402  (enables float64)
from tfmm.backends.jax.fee_kernel import fee_path  # noqa: E402
from tfmm.backends.jax.fee_kernel_pallas import fee_path_pallas  # noqa: E402
from tfmm.backends.kernels import fee_path as numba_kernel  # noqa: E402
from tfmm.backends.kernels import fee_path_pallas as kernel  # noqa: E402
from tfmm.core import g3m  # noqa: E402

jnp = jax.numpy


def _accepted_options(candidates: dict) -> dict:
    """The XLA:CPU compile options this jaxlib knows (each tried on a trivial function)."""
    accepted = {}
    for key, value in candidates.items():
        try:
            jax.jit(lambda x: x + 1.0).lower(1.0).compile({key: value})
        except Exception:  # an unknown option: compile without it
            continue
        accepted[key] = value
    return accepted


FAST_COMPILE = _accepted_options({"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True,
                                  "xla_cpu_use_fusion_emitters": False})
T = 40
K = 7  # the checkpoint interval of the main comparisons (40 rows: 6 segments, the last padded)
# name: (n_assets, smooth, selection)
CONFIGS = {"exact-n2": (2, False, "hard"), "softmax-n3": (3, True, "softmax"),
           "straight_through-n2": (2, True, "straight_through")}
# float32 (computed in float32) against the float64 CPU kernel on the same, float32-representable inputs.
# Reserves: each minute rounds the log-ratios and the trade at ~6e-8 (float32 epsilon) of the reserves; over 39
# minutes that accumulates to ~1e-6 (measured 3e-7): 1e-5. Fees: a trade is ``R expm1(-u)``, with ``u ~ 1e-3`` from
# log-ratios of order 1 known to ~6e-8 absolute, so trades and fees carry ~6e-5 relative error (measured 1.4e-5
# per trajectory): 3e-4 of the largest fee. Cotangents: smooth mode's gate slope ``1 / tau_gate`` (2 per USD)
# multiplies the float32 error of the profit, whose closed form ``-em/(1+em) - u`` cancels to ~2 eps / |u| ~ 1e-4
# relative for |u| just above SERIES_LIMIT (1e-3 USD on a profit of ~10 USD); the gate's derivative then moves by
# ~1e-3 of itself (measured 3e-4 of the largest entry): 5e-3.
FLOAT32_CONFIG = "straight_through-n2"
FLOAT32_RESERVES = 1e-5
FLOAT32_FEES = 3e-4
FLOAT32_VJP = 5e-3


def batch_inputs(n: int, B: int = 4, seed: int = 0) -> dict:
    """A batch of pool paths: GBM prices, weights moving every minute, equilibrium initial reserves; the fee
    is 0 every ninth minute and per-minute random in trajectory 1; gas 0, 1, 50 and 5 USD across the batch (the
    gate binds often at 50, never at 0), arb_fee 0 where gas is 0 (a fee-free margin would be 0 up to rounding
    there, see test_fee_kernel), else 1e-3."""
    rng = np.random.default_rng(seed)
    levels = np.array([1.0, 20.0, 300.0, 5.0, 0.1][:n])
    prices = levels * np.exp(np.cumsum(rng.normal(0.0, 4e-3, (B, T, n)), axis=1))
    logits = np.cumsum(rng.normal(0.0, 2e-2, (B, T, n)), axis=1) + rng.normal(0.0, 0.3, (B, 1, n))
    weights = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    weights = 0.05 + (1.0 - 0.05 * n) * weights
    fee = np.full((B, T), 3e-3)
    fee[1] = rng.uniform(1e-3, 2e-2, T)
    fee[:, 4::9] = 0.0
    gas = np.resize(np.array([0.0, 1.0, 50.0, 5.0]), B)[:, None] * np.ones((B, T))
    arb = np.where(gas > 0.0, 1e-3, 0.0)
    r0 = 1e6 * weights[:, 0] / prices[:, 0]
    return {"r0": r0, "weights": weights, "prices": prices, "fee": fee, "gas": gas, "arb_fee": arb}


def settings_for(name: str) -> numba_kernel.FeePathSettings:
    n, smooth, selection = CONFIGS[name]
    return numba_kernel.FeePathSettings.from_smoothing(g3m.signature_matrix(n, "all"), smooth,
                                                       smoothing_for(selection))


def rates(p: dict) -> np.ndarray:
    return np.stack([p["fee"], p["gas"], p["arb_fee"]], axis=-1)


@lru_cache(maxsize=None)
def pallas_forward(settings, k: int | None):
    return jax.jit(lambda *a: kernel.forward(settings, *a, checkpoint_every=k), compiler_options=FAST_COMPILE)


@lru_cache(maxsize=None)
def pallas_backward(settings, k: int | None):
    return jax.jit(lambda *a: kernel.backward(settings, *a, checkpoint_every=k), compiler_options=FAST_COMPILE)


def cotangents(p: dict, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Random cotangents of a USD-scale loss: reserves (B, T, n) per token value, fees (B, T)."""
    rng = np.random.default_rng(seed)
    B, T_, n = p["weights"].shape
    return rng.normal(size=(B, T_, n)) / np.abs(p["r0"])[:, None, :], rng.normal(size=(B, T_))


@lru_cache(maxsize=None)
def case(name: str, dtype: str = "float64") -> dict:
    """Inputs (representable in ``dtype``), the Numba kernel's forward and VJP (float64), and the Pallas kernels'
    (``dtype``, K = 7)."""
    p = {k: v.astype(dtype).astype(np.float64) for k, v in batch_inputs(CONFIGS[name][0]).items()}
    s = settings_for(name)
    args = [p[k] for k in ("r0", "weights", "prices", "fee", "gas", "arb_fee")]
    reserves, fees, residuals = numba_kernel.forward(s, *args)
    g_res, g_fees = cotangents(p)
    grads = numba_kernel.backward(s, *args, reserves, residuals, g_res, g_fees, reduce=False)
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    out = pallas_forward(s, K)(cast(p["r0"]), cast(p["weights"]), cast(p["prices"]), cast(rates(p)))
    pallas_grads = pallas_backward(s, K)(cast(p["weights"]), cast(p["prices"]), cast(rates(p)), out[2],
                                         cast(g_res), cast(g_fees))
    return {"inputs": p, "settings": s, "numba": (reserves, fees, residuals), "numba_grads": grads,
            "pallas": tuple(map(np.asarray, out)), "pallas_grads": tuple(map(np.asarray, pallas_grads)),
            "cotangents": (g_res, g_fees)}


def assert_grads_close(pallas_grads, numba_grads, rtol: float) -> None:
    """(g_r0, g_weights, g_rates (B, T, 3)) against the Numba kernel's (g_r0, g_w, g_fee, g_gas, g_arb)."""
    g_r0, g_w, g_rates = pallas_grads
    expected = dict(zip(("r0", "weights", "fee", "gas", "arb_fee"), numba_grads))
    got = {"r0": g_r0, "weights": g_w, "fee": g_rates[..., 0], "gas": g_rates[..., 1], "arb_fee": g_rates[..., 2]}
    for name, want in expected.items():
        assert_close(got[name], want, rtol, name)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_forward_equals_numba(name):
    c = case(name)
    reserves, fees, (_, choice) = c["numba"]
    if name == "exact-n2":  # the inputs exercise open and closed gates and zero-fee minutes
        assert np.any(choice[:, 1:] == 0) and np.any(choice[:, 1:] > 0)
        assert np.any(c["inputs"]["fee"] == 0.0)
    got_reserves, got_fees, ckpt = c["pallas"]
    np.testing.assert_allclose(got_reserves, reserves, rtol=RTOL_FORWARD, atol=0)
    assert_close(got_fees, fees, RTOL_FORWARD * 10, "fees")  # USD; scale-aware as in test_fee_kernel
    # the checkpoints are the reserves after minutes 0, K, 2K, ...
    np.testing.assert_array_equal(ckpt, got_reserves[:, : T - 1 : K])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_vjp_equals_numba(name):
    c = case(name)
    assert_grads_close(c["pallas_grads"], c["numba_grads"], RTOL_VJP)


@pytest.mark.parametrize("k", [1, T])
def test_vjp_independent_of_checkpoint_interval(k):
    """The reverse pass recomputes segments of k minutes from checkpoints (here every minute, and one segment
    for the whole path): the same cotangents as with K = 7 up to rounding."""
    c = case("exact-n2")
    p = c["inputs"]
    reserves = c["pallas"][0]
    ckpt = reserves[:, : T - 1 : min(k, T - 1)]  # what the forward kernel stores for this interval
    grads = pallas_backward(c["settings"], k)(p["weights"], p["prices"], rates(p), ckpt, *c["cotangents"])
    for got, want in zip(grads, c["pallas_grads"]):
        assert_close(got, want, 1e-13, f"K={k}")
    assert_grads_close(tuple(map(np.asarray, grads)), c["numba_grads"], RTOL_VJP)


def test_float32_against_float64_cpu_kernel():
    c = case(FLOAT32_CONFIG, "float32")
    reserves, fees, _ = c["numba"]
    got_reserves, got_fees, _ = c["pallas"]
    assert got_reserves.dtype == np.float32
    np.testing.assert_allclose(got_reserves, reserves, rtol=FLOAT32_RESERVES, atol=0)
    assert_close(got_fees, fees, FLOAT32_FEES, "fees (float32)")
    assert_grads_close(c["pallas_grads"], c["numba_grads"], FLOAT32_VJP)


# ----------------------------------------------------------------------------------------------------------
# the JAX wrapper: jit, vmap, grad, several devices

WRAPPER_CONFIG = "exact-n2"
WRAPPER_BATCH = 4  # divisible by the 4 devices of the sharded run (NamedSharding needs even shards)


def wrapper_loss(fn, batch: int):
    """``value_and_grad`` of the summed objective over a vmapped batch (weights, prices and gas batched; fee
    shared, so its cotangent is summed over the batch by custom_vjp's batching rule)."""

    def objective(w, p, fee, gas):
        r0 = 1e6 * w[0] / p[0]
        reserves, fees = fn(r0, w, p, fee, gas, jnp.full(w.shape[0], 1e-3))
        return jnp.sum(jnp.log(jnp.sum(reserves * p, axis=-1))) + 1e-3 * jnp.sum(fees)

    def total(w, p, fee, gas):
        return jnp.sum(jax.vmap(objective, in_axes=(0, 0, None, 0))(w, p, fee, gas))

    return jax.value_and_grad(total, argnums=(0, 2, 3))


def wrapper_args(batch: int = WRAPPER_BATCH) -> tuple[np.ndarray, ...]:
    p = batch_inputs(CONFIGS[WRAPPER_CONFIG][0], B=batch, seed=2)
    return p["weights"], p["prices"], p["fee"][1], p["gas"] + 0.5  # fee row 1: random, with zero minutes


@lru_cache(maxsize=None)
def wrapper_results(which: str) -> tuple:
    s = settings_for(WRAPPER_CONFIG)
    fn = fee_path_pallas(s) if which == "pallas" else fee_path(s)
    loss = jax.jit(wrapper_loss(fn, WRAPPER_BATCH), compiler_options=FAST_COMPILE)
    value, grads = loss(*map(jnp.asarray, wrapper_args()))
    return float(value), tuple(map(np.asarray, grads))


def test_wrapper_grad_equals_numba_wrapper():
    value, grads = wrapper_results("pallas")
    want_value, want_grads = wrapper_results("numba")
    np.testing.assert_allclose(value, want_value, rtol=RTOL_FORWARD)
    assert grads[1].shape == (T,)  # the shared fee's cotangent, summed over the batch
    for name, got, want in zip(("weights", "fee", "gas"), grads, want_grads):
        assert_close(got, want, RTOL_VJP, name)


SHARDED_RUN = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_fee_kernel_pallas as t
jax, jnp = t.jax, t.jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
devices = jax.devices()
assert len(devices) == 4, devices
mesh = Mesh(np.array(devices), ("batch",))
fn = t.fee_path_pallas(t.settings_for(t.WRAPPER_CONFIG), mesh=mesh)
w, p, fee, gas = t.wrapper_args()
batch, shared = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
args = (jax.device_put(w, batch), jax.device_put(p, batch), jax.device_put(fee, shared), jax.device_put(gas, batch))
value, grads = jax.jit(t.wrapper_loss(fn, t.WRAPPER_BATCH), compiler_options=t.FAST_COMPILE)(*args)
assert len(grads[0].sharding.device_set) == 4, grads[0].sharding
with jax.set_mesh(mesh):  # a mesh set by the caller is used when none is given
    ambient = t.fee_path_pallas(t.settings_for(t.WRAPPER_CONFIG))
    assert "shard_map" in str(jax.make_jaxpr(jax.vmap(ambient))(w[:, 0] * 1e6, w, p, p[..., 0], p[..., 0], p[..., 0]))
np.savez(sys.argv[2], value=np.asarray(value), *[np.asarray(g) for g in grads])
"""


def test_sharded_batch_equals_single_device(tmp_path):
    """A batch of 4 sharded over 4 devices (one kernel launch per device) under jit with NamedSharding inputs,
    in a fresh process with 4 virtual CPU devices (XLA reads the flag at start-up)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    out = tmp_path / "sharded.npz"
    done = subprocess.run([sys.executable, "-c", SHARDED_RUN, str(Path(__file__).parent), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    value, grads = wrapper_results("pallas")
    with np.load(out) as got:
        np.testing.assert_allclose(got["value"], value, rtol=1e-13)
        for k, want in enumerate(grads):
            assert_close(got[f"arr_{k}"], want, 1e-13, f"grad {k}")


# ----------------------------------------------------------------------------------------------------------
# GPU lowering (no GPU needed: the Triton IR is generated, not compiled), backend choice, validation


@pytest.mark.parametrize("name, dtype", [("softmax-n3", "float64"), ("exact-n2", "float32")])
def test_kernels_lower_to_triton(name, dtype):
    """Both kernels lower through Pallas' Triton lowering (power-of-two loads and stores, supported primitives
    and dtypes, no scratch buffers): the mixed selection's sweeps in float64, the chosen row's adjoint in
    float32."""
    s = settings_for(name)
    n = CONFIGS[name][0]
    p = {k: jnp.asarray(v, dtype) for k, v in batch_inputs(n, B=64).items()}
    r = jnp.asarray(rates(p), dtype)
    try:
        fwd = jax.jit(lambda *a: kernel.forward(s, *a, interpret=False))
        fwd.trace(p["r0"], p["weights"], p["prices"], r).lower(lowering_platforms=("cuda",))
        C = kernel.kernel_config(s, T, None, 32, False).n_segments
        bwd = jax.jit(lambda *a: kernel.backward(s, *a, interpret=False))
        text = bwd.trace(p["weights"], p["prices"], r, jnp.zeros((64, C, n), dtype), p["weights"],
                         p["fee"]).lower(lowering_platforms=("cuda",)).as_text()
    except RuntimeError as exc:  # newer jaxlibs compile the Triton IR while lowering: that needs a GPU
        if "compilation handler" in str(exc):
            pytest.skip(f"Triton lowering needs a GPU with this jaxlib: {exc}")
        raise
    assert "triton" in text


def test_backend_auto_picks_pallas_on_gpu(monkeypatch):
    s = settings_for("exact-n2")
    bk = jax_backend.JaxBackend(fee_path="auto")
    assert bk.uses_fee_kernel(None) and bk.fee_kernel(s) is fee_path(s)  # CPU: the Numba kernel
    monkeypatch.setattr(jax_backend.jax, "default_backend", lambda: "gpu")
    assert bk.uses_fee_kernel(None) and bk.fee_kernel(s) is fee_path_pallas(s)
    assert jax_backend.JaxBackend(fee_path="kernel").fee_kernel(s) is fee_path(s)  # explicit: the CPU kernel
    assert not jax_backend.JaxBackend(fee_path="scan").uses_fee_kernel(None)


def test_config_validation():
    s = settings_for("exact-n2")
    with pytest.raises(ValueError, match="block"):
        kernel.kernel_config(s, T, None, 24, True)
    with pytest.raises(ValueError, match="checkpoint_every"):
        kernel.kernel_config(s, T, 0, 32, True)
    big = numba_kernel.FeePathSettings(g3m.signature_matrix(9, "pairwise"), False)
    with pytest.raises(ValueError, match="n_assets"):
        kernel.kernel_config(big, T, None, 32, True)
    cfg = kernel.kernel_config(s, 43_200, None, 32, False)
    assert (cfg.checkpoint_every, cfg.n_segments) == (208, 208)  # the docstring's example
    with pytest.raises(ValueError, match="prices"):
        kernel.forward(s, jnp.ones((2, 2)), jnp.ones((2, T, 2)), jnp.ones((2, T - 1, 2)), jnp.ones((2, T, 3)))


def test_short_paths_need_no_kernel():
    """T = 1: the initial state only; its cotangent passes straight to r0."""
    s = settings_for("exact-n2")
    r0 = jnp.array([[1.0, 2.0]])
    reserves, fees, ckpt = kernel.forward(s, r0, jnp.full((1, 1, 2), 0.5), jnp.ones((1, 1, 2)), jnp.zeros((1, 1, 3)))
    assert reserves.shape == (1, 1, 2) and ckpt.shape == (1, 0, 2) and float(fees[0, 0]) == 0.0
    g_r0, g_w, g_rates = kernel.backward(s, jnp.full((1, 1, 2), 0.5), jnp.ones((1, 1, 2)), jnp.zeros((1, 1, 3)), ckpt,
                                         jnp.ones((1, 1, 2)), jnp.ones((1, 1)))
    np.testing.assert_array_equal(g_r0, [[1.0, 1.0]])
    assert not np.any(np.asarray(g_w)) and not np.any(np.asarray(g_rates))
