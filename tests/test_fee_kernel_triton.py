"""The fee path's Triton kernels (tfmm.backends.torch.fee_path_triton) in Triton's interpreter, on CPU tensors,
against the Numba kernel (tfmm.backends.kernels.fee_path, held to the core's scan by test_fee_kernel.py).

- forward values (reserves rtol 1e-12, fees 1e-12 of the largest) and vector-Jacobian products (1e-9 of the
  largest entry) in exact mode and smooth mode (softmax, straight-through, hard), 2 and 3 assets, with zero-fee
  minutes, gates that bind and gates that do not; the checkpoints are the reserves every K minutes;
- the checkpoint interval: K = 1, 7 and T give the same gradients, bit for bit (the recomputation is the
  forward's own code);
- float32, computed in float32 (the Numba kernel computes in float64), to tolerances derived below;
- candidate chunks looped statically and at run time, several programs with a partial last block, broadcast
  inputs and gradients summed back to their shapes;
- the torch operators' CUDA implementations, called on CPU tensors, against the operators' CPU results, and the
  CUDA path of the fake implementation and of the autograd formula on fake CUDA tensors (shapes and dtypes);
- ``import tfmm`` and the torch wrapper do not import Triton.

Not covered without a GPU: compiled execution on the device (the kernels are checked to compile for sm_90 by
``test_kernels_compile_for_sm90``, opt-in), dispatch of the operators to their CUDA implementations and
torch's autograd engine on a CUDA device, and the GPU's float32 fast math. The interpreter runs each Triton
operation in Python (~0.1 ms, the reverse pass ~1,500 of them per minute), so the paths are short (4-24
minutes). Input paths come from tests/test_fee_kernel_torch.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

# Triton decides between compiling and interpreting when a kernel is wrapped in triton.jit, which the kernel
# module does at its first launch: the variable is set before anything here can trigger that, and stays set
# (Triton's interpreter also reads it while it runs).
os.environ["TRITON_INTERPRET"] = "1"
TRITON_PRELOADED = "triton" in sys.modules  # by an earlier test module: then the import check runs apart
torch = pytest.importorskip("torch")

from tfmm.backends.kernels import fee_path as kernel  # noqa: E402
from tfmm.backends.torch import fee_path_triton as tkernel  # noqa: E402
from tfmm.backends.torch import fee_kernel  # noqa: E402
from tfmm.core import g3m  # noqa: E402

TRITON_AVAILABLE = tkernel.available()
TRITON_IMPORTED_BY_TFMM = "triton" in sys.modules and not TRITON_PRELOADED
pytest.importorskip("triton", reason="the Triton kernels need triton (pip install 'tfmm[triton]')")

try:
    from test_fee_kernel_torch import assert_close, make_path, settings_for  # noqa: E402
except pytest.skip.Exception as exc:  # that module needs JAX
    pytest.skip(f"the input paths of tests/test_fee_kernel_torch.py are unavailable: {exc}", allow_module_level=True)

if not tkernel.interpreting():
    pytest.skip("the Triton kernels were compiled for a GPU earlier in this process; the interpreter tests need a "
                "fresh process", allow_module_level=True)

RTOL_FORWARD = 1e-12
RTOL_VJP = 1e-9
# float32 (eps = 6e-8), computed in float32 against float64 rounded once. A trade is R expm1(-u) with u a
# difference of log-ratios of size |log(y_i / y_r)| ~ 1e-2: its absolute error is ~eps |log y| R, i.e.
# ~1e-9 of the reserves per minute, but ~1e-5 of the trade itself when u ~ 1e-4 (measured over 10-30
# minutes: reserves 2e-7, fees 4e-6 of the largest, exact-mode gradients 5e-7 of the largest entry). The
# smooth gradients carry the gate's sigmoid' and the softmax, whose arguments (USD / 0.5 USD) have float32
# errors ~1e-5 relative: measured 2e-4 of the largest entry. Tolerances: about 10x the measured errors.
RTOL_F32 = {"reserves": 2e-6, "fees": 1e-4, "exact": 2e-5, "softmax": 2e-3}
NAMES = ("r0", "weights", "fee", "gas", "arb_fee")
KEYS = ("r0", "weights", "prices", "fee", "gas", "arb_fee")
# (gas USD, arb_fee, price volatility) per trajectory: the gate always open (no costs), sometimes binding,
# often binding, and large moves
COSTS = ((0.0, 0.0, 5e-3), (1.0, 5e-4, 5e-3), (25.0, 2e-3, 5e-3), (5.0, 0.0, 2e-2))


def batch_paths(n: int, T: int, seed: int, size: int = 4) -> dict:
    """A batch of ``size`` paths of make_path (about 20% zero-fee minutes) with the gas, arbitrage fee and
    volatility of COSTS: inputs (size, ...)."""
    paths = []
    for k, (gas, arb, vol) in enumerate(COSTS[:size]):
        p = make_path(n, T, seed=seed + k, vol=vol)
        p["gas"], p["arb_fee"] = np.full(T, gas), np.full(T, arb)
        paths.append(p)
    return {key: np.stack([p[key] for p in paths]) for key in KEYS}


def tensors(p: dict, dtype=torch.float64) -> list:
    return [torch.tensor(p[k], dtype=dtype) for k in KEYS]


def cotangents(p: dict, reserves: np.ndarray, fees: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cotangents of a USD-scale loss: reserves weighted by prices, fees in USD."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=reserves.shape) * p["prices"], rng.normal(size=fees.shape)


def check_against_numba(s: kernel.FeePathSettings, p: dict, seed: int = 0, every: int | None = None,
                        **launch) -> dict:
    """Forward and VJP of the Triton kernels (checkpoints every ``every`` minutes, launch sizes ``launch``)
    against the Numba kernel on the batch ``p``; returns what both computed for further checks."""
    args = [p[k] for k in KEYS]
    reserves, fees, residuals = kernel.forward(s, *args)
    t_res, t_fees, ckpt = tkernel.forward(s, *tensors(p), checkpoint_every=every, **launch)
    assert t_res.dtype == torch.float64 and tuple(t_res.shape) == reserves.shape
    np.testing.assert_allclose(t_res.numpy(), reserves, rtol=RTOL_FORWARD, atol=0)
    assert_close(t_fees.numpy(), fees, RTOL_FORWARD, "fees")
    # the checkpoints are the forward's reserves after minutes 0, K, 2K, ... below T - 1
    T = reserves.shape[-2]
    rows = np.arange(tkernel.n_checkpoints(T, ckpt.every)) * ckpt.every
    np.testing.assert_array_equal(ckpt.reserves.numpy(), t_res.numpy()[..., rows, :])
    g_res, g_fees = cotangents(p, reserves, fees, seed)
    expected = kernel.backward(s, *args, reserves, residuals, g_res, g_fees)
    got = tkernel.backward(s, *tensors(p), None, ckpt, torch.tensor(g_res), torch.tensor(g_fees), **launch)
    for name, g, e in zip(NAMES, got, expected):
        assert g.shape == e.shape, name
        assert_close(g.numpy(), e, RTOL_VJP, name)
    assert np.max(np.abs(expected[1])) > 0 and np.max(np.abs(expected[2])) > 0
    return {"reserves": reserves, "fees": fees, "residuals": residuals, "t_reserves": t_res, "ckpt": ckpt,
            "grads": got, "cotangents": (g_res, g_fees)}


# -- the interpreter --------------------------------------------------------------------------------------------
def test_interpreter_is_on():
    from triton.runtime.interpreter import InterpretedFunction

    kernels = tkernel._kernels()
    assert kernels.interpreted
    assert isinstance(kernels.forward, InterpretedFunction) and isinstance(kernels.backward, InterpretedFunction)


def test_import_does_not_import_triton():
    """tfmm, the torch wrapper and the kernel module import Triton only at the first launch (checked at this
    module's import, before it imports Triton; in a fresh interpreter if an earlier module had imported it)."""
    assert TRITON_AVAILABLE
    if not TRITON_PRELOADED:
        assert not TRITON_IMPORTED_BY_TFMM
        return
    code = ("import sys, tfmm, tfmm.backends.torch.fee_kernel, tfmm.backends.torch.fee_path_triton as k; "
            "assert k.available(); assert 'triton' not in sys.modules, 'triton imported'")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# -- values and VJPs against the Numba kernel -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["exact", "softmax", "straight_through"])
@pytest.mark.parametrize("n,T", [(2, 24), (3, 12)])
def test_forward_and_vjp_equal_numba(n, T, mode):
    """A batch with zero-fee minutes and gates that open, bind and stay closed (COSTS). 3 assets: the "all"
    signature set, 12 rows and the zero-fee row in one chunk of 16, pairwise rows with an inactive asset."""
    p = batch_paths(n, T, seed=10 * n, size=4 if n == 2 else 3)
    s = settings_for(n, mode)
    out = check_against_numba(s, p, seed=n)
    fee_free = p["fee"][:, 1:] == 0
    assert fee_free.any() and (~fee_free).any() and np.sum(out["fees"] > 0) > 10
    if mode == "exact":  # the gate both opens and stays closed (Phase A's executed rows, 0 for no trade)
        executed = out["residuals"][1][..., 1:, 0]
        assert (executed > 0).any() and (executed == 0).any()


@pytest.mark.parametrize("mode,rows_per_chunk", [("softmax", 2), ("straight_through", 4)])
def test_candidate_chunks(mode, rows_per_chunk):
    """The 13 candidate rows of 3 assets in chunks of 2 (7 chunks, a runtime loop) and 4 (4 chunks, unrolled):
    first maximum and online softmax across chunks."""
    p = batch_paths(3, 4 if rows_per_chunk == 2 else 6, seed=50, size=2)
    rows = len(g3m.signature_matrix(3, "all")) + 1  # and the zero-fee row
    chunks = -(-rows // rows_per_chunk)
    assert chunks == (7 if rows_per_chunk == 2 else 4)
    check_against_numba(settings_for(3, mode), p, seed=5, rows_per_chunk=rows_per_chunk)


@pytest.mark.parametrize("T", [0, 1, 2])
def test_short_paths(T):
    """No row, the initial row only, one minute: outputs, checkpoints and gradients of the right shapes and
    values (the gradient of r0 is the last row's cotangent when there is no minute)."""
    p = batch_paths(2, max(T, 1), seed=100, size=2)
    p = {k: v[..., :T, :] if k in ("weights", "prices") else v[..., :T] if k != "r0" else v for k, v in p.items()}
    s = settings_for(2, "softmax")
    if T == 2:
        check_against_numba(s, p, seed=10)
        return
    t_res, t_fees, ckpt = tkernel.forward(s, *tensors(p))
    assert tuple(t_res.shape) == (2, T, 2) and tuple(t_fees.shape) == (2, T)
    assert tuple(ckpt.reserves.shape) == (2, tkernel.n_checkpoints(T, ckpt.every), 2)
    g_res = torch.ones(2, T, 2, dtype=torch.float64)
    grads = tkernel.backward(s, *tensors(p), None, ckpt, g_res, torch.ones(2, T, dtype=torch.float64))
    if T == 1:
        np.testing.assert_array_equal(t_res.numpy()[:, 0], p["r0"])
        np.testing.assert_array_equal(t_fees.numpy(), 0.0)
        np.testing.assert_array_equal(grads[0].numpy(), 1.0)
    for g, name in zip(grads[1:], NAMES[1:]):
        assert tuple(g.shape) == p[name].shape and not g.any(), name


# -- checkpointing ----------------------------------------------------------------------------------------------
def test_checkpoint_interval_does_not_matter():
    """K = 1, 7 and T: the same gradients, bit for bit (the reverse recomputes the forward's states exactly);
    K = 7 also against Numba. The checkpoints of K = 1 and T are the Triton forward's reserves at those rows
    (that the forward stores exactly these at its K is checked in check_against_numba). The segment
    bookkeeping does not depend on the mode: exact mode, the cheaper reverse in the interpreter."""
    T = 12
    p = batch_paths(2, T, seed=60, size=3)
    s = settings_for(2, "exact")
    out = check_against_numba(s, p, seed=6, every=7)
    g_res, g_fees = (torch.tensor(g) for g in out["cotangents"])
    for K in (1, T):
        rows = torch.arange(tkernel.n_checkpoints(T, K)) * K
        ckpt = tkernel.Checkpoints(out["t_reserves"][..., rows, :], K)
        grads = tkernel.backward(s, *tensors(p), None, ckpt, g_res, g_fees)
        for name, g, ref in zip(NAMES, grads, out["grads"]):
            assert torch.equal(g, ref), f"{name}: K={K} differs from K=7"
    assert tkernel.default_checkpoint_every(43200) == 208 and tkernel.n_checkpoints(43200, 208) == 208
    assert tkernel.memory_per_trajectory(43200, 2, smooth=False) == 3328 + 8320  # module docstring


def test_broadcast_hard_selection_several_programs():
    """Leading axes broadcast (r0 (3, 1, n), weights (2, T, n), the rest shared: strides 0 or copies);
    gradients summed back to the inputs' shapes (unreduced ones: the CUDA operator's test). Smooth gate with a
    hard choice; four lanes per program, so the six trajectories take two programs, the last half empty."""
    n, T = 2, 8
    paths = [make_path(n, T, seed=70 + k) for k in range(3)]
    p = dict(paths[0])
    p["r0"] = np.stack([q["r0"] for q in paths])[:, None, :]
    p["weights"] = np.stack([q["weights"] for q in paths[:2]])
    soft = settings_for(n, "softmax")
    s = kernel.FeePathSettings(g3m.signature_matrix(n, "all"), True, "hard", soft.gate_temperature,
                               soft.selection_temperature)
    full = [np.ascontiguousarray(np.broadcast_to(p[k], (3, 2) + p[k].shape[p[k].ndim - c:]))
            for k, c in zip(KEYS, (1, 2, 2, 1, 1, 1))]
    reserves, fees, residuals = kernel.forward(s, *full)
    t_res, t_fees, ckpt = tkernel.forward(s, *tensors(p), block=4)
    np.testing.assert_allclose(t_res.numpy(), reserves, rtol=RTOL_FORWARD, atol=0)
    assert_close(t_fees.numpy(), fees, RTOL_FORWARD, "fees")
    g_res, g_fees = (torch.tensor(g) for g in cotangents({"prices": full[2]}, reserves, fees, seed=7))
    expected = kernel.backward(s, *full, reserves, residuals, g_res.numpy(), g_fees.numpy(), reduce=False)
    reduced = tkernel.backward(s, *tensors(p), None, ckpt, g_res, g_fees, block=4)
    for name, e, r in zip(NAMES, expected, reduced):
        assert tuple(r.shape) == p[name].shape, name
        assert_close(r.numpy(), kernel.sum_to_shape(e, p[name].shape), RTOL_VJP, name + " (reduced)")


# -- float32 ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["exact", "softmax"])
def test_float32(mode):
    """float32 in, float32 computed and out (RTOL_F32); the Numba kernel's float64 of the same float32 inputs
    is the reference."""
    p = {k: v.astype(np.float32) for k, v in batch_paths(2, 10, seed=80, size=3).items()}
    s = settings_for(2, mode)
    args = [p[k] for k in KEYS]
    reserves, fees, residuals = kernel.forward(s, *args)
    t_res, t_fees, ckpt = tkernel.forward(s, *tensors(p, torch.float32))
    assert t_res.dtype == torch.float32 and t_fees.dtype == torch.float32
    np.testing.assert_allclose(t_res.numpy(), reserves, rtol=RTOL_F32["reserves"], atol=0)
    assert_close(t_fees.numpy(), fees, RTOL_F32["fees"], "fees")
    g_res, g_fees = (g.astype(np.float32) for g in cotangents(p, reserves, fees, seed=8))
    expected = kernel.backward(s, *args, reserves, residuals, g_res, g_fees)
    got = tkernel.backward(s, *tensors(p, torch.float32), None, ckpt, torch.tensor(g_res), torch.tensor(g_fees))
    for name, g, e in zip(NAMES, got, expected):
        assert g.dtype == torch.float32, name
        assert_close(g.numpy(), e, RTOL_F32[mode], name)


# -- the torch operators' CUDA implementations -------------------------------------------------------------------
def test_cuda_operator_implementations_on_cpu_tensors():
    """The bodies registered for CUDA, called directly on CPU tensors (the interpreter), against the operators'
    CPU results: values, residual layout and unreduced gradients, with a float32 input promoting to float64."""
    n, T = 2, 6
    p = batch_paths(n, T, seed=90, size=2)
    s = settings_for(n, "straight_through")
    static = fee_kernel.settings_args(s)
    xs = tensors(p)
    xs[4] = xs[4].to(torch.float32)  # gas in float32: results in the promoted dtype, its gradient in float32
    cpu = fee_kernel.fee_path_op(*xs, *static)
    cuda = fee_kernel._fee_path_cuda(*xs, *static)
    np.testing.assert_allclose(cuda[0].numpy(), cpu[0].numpy(), rtol=RTOL_FORWARD, atol=0)
    assert_close(cuda[1].numpy(), cpu[1].numpy(), RTOL_FORWARD, "fees")
    K = tkernel.default_checkpoint_every(T)
    assert cuda[0].dtype == torch.float64 and cuda[3].dtype == torch.int32
    assert tuple(cuda[2].shape) == (2, fee_kernel._cuda_residual_rows(T)[0], n) and tuple(cuda[3].shape) == (2, 0, 2)
    np.testing.assert_array_equal(cuda[2].numpy(), cuda[0].numpy()[:, ::K][:, :cuda[2].shape[1]])
    g_res, g_fees = (torch.tensor(g) for g in cotangents(p, cpu[0].numpy(), cpu[1].numpy(), seed=9))
    expected = fee_kernel.fee_path_backward_op(*xs, cpu[0], cpu[2], cpu[3], g_res, g_fees, *static)
    placeholder = cuda[0].new_empty((0, n))  # what the autograd formula saves in place of the reserves
    got = fee_kernel._fee_path_backward_cuda(*xs, placeholder, cuda[2], cuda[3], g_res, g_fees, *static)
    for name, g, e in zip(NAMES, got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape, name
        assert_close(g.numpy(), e.numpy(), RTOL_VJP, name)


class _Context:
    """The part of autograd's context that the operator's formula uses."""

    needs_input_grad = (True, True, False, True, True, True) + (False,) * 7

    def save_for_backward(self, *tensors) -> None:
        self.saved_tensors = tensors

    def set_materialize_grads(self, value: bool) -> None:
        self.materialize_grads = value


def test_cuda_autograd_formula_on_fake_tensors():
    """The operator's CUDA path on fake CUDA tensors (shapes, dtypes, devices; no values): the fake
    implementation's residuals (checkpoints, an empty choice), the autograd formula's setup_context saving a
    (0, n) placeholder for the reserves, and its backward making the reserves' cotangent when only the fees
    are used. (torch's autograd engine itself needs a CUDA device guard, which a CPU-only torch lacks: the
    formula's two functions are called directly.)"""
    from torch._subclasses.fake_tensor import FakeTensorMode

    n, T = 3, 50
    s = settings_for(n, "softmax", "pairwise")
    static = fee_kernel.settings_args(s)
    shapes = (((4, n), torch.float64), ((T, n), torch.float64), ((T, n), torch.float64), ((T,), torch.float64),
              ((T,), torch.float32), ((4, T), torch.float64))
    with FakeTensorMode():
        xs = [torch.empty(shape, dtype=dtype, device="cuda") for shape, dtype in shapes]
        out = fee_kernel.fee_path_op(*xs, *static)
        ctx = _Context()
        fee_kernel._setup_context(ctx, (*xs, *static), out)
        grads = fee_kernel._backward(ctx, None, torch.ones_like(out[1]), None, None)
    K = tkernel.default_checkpoint_every(T)
    assert tuple(out[0].shape) == (4, T, n) and out[0].device.type == "cuda"
    assert tuple(out[2].shape) == (4, tkernel.n_checkpoints(T, K), n) and tuple(out[3].shape) == (4, 0, 2)
    assert ctx.checkpointed and tuple(ctx.saved_tensors[6].shape) == (0, n) and ctx.reserves_shape == (4, T, n)
    assert grads[2] is None and all(g is None for g in grads[6:])
    for i in (0, 1, 3, 4, 5):
        assert tuple(grads[i].shape) == tuple(xs[i].shape) and grads[i].dtype == xs[i].dtype, i
        assert grads[i].device.type == "cuda", i


# -- compilation for the GPU (opt-in) -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TFMM_TRITON_COMPILE") != "1",
                    reason="compiles the kernels for sm_90 in a subprocess (~1 min); set TFMM_TRITON_COMPILE=1")
def test_kernels_compile_for_sm90():
    """Triton's compiler (no GPU needed) takes the forward and reverse kernels down to a cubin for sm_90, exact
    and smooth, float64 and float32, unrolled and runtime candidate loops."""
    code = r"""
import inspect, torch, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from tfmm.backends.torch import fee_path_triton as tk
from tfmm.backends.kernels.fee_path import FeePathSettings
from tfmm.core import g3m
kernels = tk._kernels()
assert not kernels.interpreted
for n, smooth, selection, dtype in ((2, False, "softmax", "fp64"), (2, True, "softmax", "fp64"),
                                    (3, True, "straight_through", "fp32"), (5, True, "hard", "fp64")):
    s = FeePathSettings(g3m.signature_matrix(n, "all"), smooth, selection)
    cfg = tk._launch_config(s, 1024, torch.device("cpu"), None, None, False)
    for fn, extra in ((kernels.forward, {}), (kernels.backward, dict(zip(("NV", "NS"), tk.scratch_slots(smooth))))):
        consts = dict(tk._statics(s, cfg), **extra)
        sig = {a: "constexpr" if a in consts else ("*i8" if a in ("act_ptr", "pls_ptr", "ref_ptr") else
               "*i32" if a == "int_ptr" else "*" + dtype) if a in consts or a.endswith("_ptr") else "i32"
               for a in inspect.signature(fn.fn).parameters}
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=GPUTarget("cuda", 90, 32),
                                  options={"num_warps": cfg.num_warps, "enable_fp_fusion": False})
        assert len(compiled.asm["cubin"]) > 0
print("ok")
"""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
