"""The CPU fee-path kernel as one differentiable torch operation.

``fee_path(settings)`` returns ``f(r0, weights, prices, fee, gas, arb_fee) -> (reserves, fees)`` with the
shapes of :func:`tfmm.backends.kernels.fee_path.forward` (r0 (..., n), weights and prices (..., T, n), rates
(..., T); leading axes broadcast), like :mod:`tfmm.backends.jax.fee_kernel`. It calls two custom operators
(``torch.library.custom_op``), opaque to torch:

- ``tfmm::fee_path(r0, weights, prices, fee, gas, arb_fee, *static) -> (reserves, fees, reserves_a, choice)``:
  the Numba forward pass; ``reserves_a`` (Phase A reserves) and ``choice`` (exact mode's choices and gates,
  int32) are the residuals of the reverse pass.
- ``tfmm::fee_path_backward(r0, ..., arb_fee, reserves, reserves_a, choice, g_reserves, g_fees, *static)
  -> (g_r0, g_weights, g_fee, g_gas, g_arb_fee)``: the hand-written reverse pass, *unreduced*: every
  gradient carries the whole broadcast batch shape in front (``kernel.backward(..., reduce=False)``).

``*static`` is the :class:`~tfmm.backends.kernels.fee_path.FeePathSettings` flattened to operator
arguments (``signatures`` as a flat ``list[int]``, ``n``, ``smooth``, ``selection``, the two temperatures
and ``abs_epsilon``); :func:`settings_from_args` maps them back (cached).

Registered for each operator:

- a fake (meta) implementation (``register_fake``): shapes and dtypes only, so ``torch.compile`` (also
  ``fullgraph=True``) traces through the operator without a graph break and keeps it as one opaque call;
- for ``tfmm::fee_path`` the autograd formula (``register_autograd``): ``setup_context`` saves the inputs,
  the reserves and the residuals; the backward calls ``tfmm::fee_path_backward`` and sums each gradient
  over the axes its input was broadcast along (torch ops, so this also works under ``vmap``). Gradients
  for r0, weights, fee, gas and arb_fee; None for prices (data). The cotangent of ``reserves_a`` is
  ignored (it is a residual, not a result of :func:`fee_path`). The backward operator has no autograd
  formula and runs under ``no_grad`` (which ``torch.func.grad`` needs): no second derivatives; with
  ``create_graph=True`` the kernel's part of a gradient carries no graph (a constant for a second pass);
- a batching rule for both (``register_vmap``): ``torch.func.vmap`` (nested or not, any ``in_dims``)
  reaches the kernel as one call with the vmapped axis in front, i.e. one parallel Numba call over the
  whole batch. Batched inputs get their vmapped axis moved to the front and singleton axes after it, up to
  the largest per-example batch rank; unbatched inputs are left as they are (the kernel broadcasts
  leading axes); every output is batched along axis 0. With ``torch.autograd`` outside ``vmap`` (the torch
  backend's ``value_and_grad``) autograd records that one batched call, and its backward is one call of
  the backward operator for the whole batch.

:func:`fee_path` applies the forward operator through a ``torch.autograd.Function`` (``_FeePath``) with the
same ``setup_context`` and backward: torch generates the operator's own autograd wrapper without
``setup_context``, which ``torch.func.grad`` / ``vjp`` / ``jacrev`` refuse; the Function works with them
(also inside ``vmap``, where its backward runs through the backward operator's batching rule), with
``torch.autograd`` and with ``torch.compile``. Calling ``torch.ops.tfmm.fee_path`` directly works with
``torch.autograd``, ``vmap`` and ``torch.compile``, not with ``torch.func``'s autodiff.

Dtypes and devices: the kernel computes in float64; the forward results come back in the promoted dtype of
the six inputs (float32 in, float32 out: float64 results rounded once), the gradients in their inputs'
dtypes, ``choice`` as int32. The Numba kernel runs on the CPU: a tensor on a device without a kernel of its
own is copied to the host, and the results are copied back to the device of ``prices``.

CUDA: both operators have CUDA implementations (``register_kernel("cuda")``) that run the Triton kernels of
:mod:`tfmm.backends.torch.fee_path_triton` on the device, in the inputs' dtype (float32 stays float32 there);
Triton is imported at the first CUDA call, never by importing this module. Their residuals differ: in place
of ``reserves_a`` the forward returns its checkpoints, the reserves every ``K`` minutes
(``(B..., ceil((T - 1) / K), n)``, ``K = fee_path_triton.default_checkpoint_every(T)``), and in place of
``choice`` an empty ``(B..., 0, 2)`` int32 tensor; the backward recomputes everything else from the
checkpoints, so the autograd formula saves a ``(0, n)`` placeholder instead of the ``(T, n)`` reserves (the
fake implementation gives these shapes for CUDA tensors).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch

from tfmm.backends.kernels import fee_path as kernel
from tfmm.backends.torch.kernel_support import (
    batch_shape as _batch_shape, check_ranks as _check_ranks, host_full as _host_full, result_dtype as _result_dtype,
    sum_to_shape, to_front as _to_front, torch_threads_kept,
)

Tensor = torch.Tensor

# core (non-batch) ranks of the operators' tensor arguments, in order
_FORWARD_CORE = (1, 2, 2, 1, 1, 1)  # r0, weights, prices, fee, gas, arb_fee
_BACKWARD_CORE = _FORWARD_CORE + (2, 2, 2, 2, 1)  # + reserves, reserves_a, choice, g_reserves, g_fees


# ----------------------------------------------------------------------------------------------------------
# static settings <-> operator arguments


def settings_args(settings: kernel.FeePathSettings) -> tuple:
    """The operator arguments for ``settings``: (signatures flat list[int], n, smooth, selection,
    gate_temperature, selection_temperature, abs_epsilon)."""
    flat = [int(v) for row in settings.signatures for v in row]
    return (flat, settings.n_assets, settings.smooth, settings.selection, settings.gate_temperature,
            settings.selection_temperature, settings.abs_epsilon)


@lru_cache(maxsize=64)
def _settings(signatures: tuple, n: int, smooth: bool, selection: str, gate_temperature: float,
              selection_temperature: float, abs_epsilon: float) -> kernel.FeePathSettings:
    sig = np.asarray(signatures, dtype=np.int8).reshape(-1, n)
    return kernel.FeePathSettings(sig, smooth, selection, gate_temperature, selection_temperature, abs_epsilon)


def settings_from_args(signatures: Sequence[int], n: int, smooth: bool, selection: str, gate_temperature: float,
                       selection_temperature: float, abs_epsilon: float) -> kernel.FeePathSettings:
    """The inverse of :func:`settings_args` (cached: the candidate table is built once per setting)."""
    return _settings(tuple(int(v) for v in signatures), int(n), bool(smooth), str(selection),
                     float(gate_temperature), float(selection_temperature), float(abs_epsilon))


# ----------------------------------------------------------------------------------------------------------
# the forward operator


@torch.library.custom_op("tfmm::fee_path", mutates_args=())
def fee_path_op(r0: Tensor, weights: Tensor, prices: Tensor, fee: Tensor, gas: Tensor, arb_fee: Tensor,
                signatures: list[int], n: int, smooth: bool, selection: str, gate_temperature: float,
                selection_temperature: float, abs_epsilon: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(reserves (B..., T, n), fees (B..., T), reserves_a (B..., T, n), choice (B..., T, 2) int32)."""
    settings = settings_from_args(signatures, n, smooth, selection, gate_temperature, selection_temperature,
                                  abs_epsilon)
    inputs = (r0, weights, prices, fee, gas, arb_fee)
    dtype, device = _result_dtype(inputs), prices.device
    batch = tuple(_batch_shape(inputs, _FORWARD_CORE))
    with torch_threads_kept():
        reserves, fees, (reserves_a, choice) = kernel.forward(settings, *_host_full(inputs, _FORWARD_CORE, batch))
    out = (torch.from_numpy(reserves), torch.from_numpy(fees), torch.from_numpy(reserves_a))
    return (*(x.to(device=device, dtype=dtype) for x in out), torch.from_numpy(choice).to(device=device))


@fee_path_op.register_fake
def _fee_path_fake(r0, weights, prices, fee, gas, arb_fee, signatures, n, smooth, selection, gate_temperature,
                   selection_temperature, abs_epsilon):
    inputs = (r0, weights, prices, fee, gas, arb_fee)
    _check_ranks("tfmm::fee_path", inputs, _FORWARD_CORE)
    batch = tuple(_batch_shape(inputs, _FORWARD_CORE))
    T, width = weights.shape[-2], weights.shape[-1]
    dtype, device = _result_dtype(inputs), prices.device
    residual_rows, choice_rows = _cuda_residual_rows(T) if _checkpointed(device) else (T, T)
    return (prices.new_empty(batch + (T, width), dtype=dtype, device=device),
            prices.new_empty(batch + (T,), dtype=dtype, device=device),
            prices.new_empty(batch + (residual_rows, width), dtype=dtype, device=device),
            prices.new_empty(batch + (choice_rows, 2), dtype=torch.int32, device=device))


# ----------------------------------------------------------------------------------------------------------
# the backward operator (unreduced gradients)


@torch.library.custom_op("tfmm::fee_path_backward", mutates_args=())
def fee_path_backward_op(r0: Tensor, weights: Tensor, prices: Tensor, fee: Tensor, gas: Tensor, arb_fee: Tensor,
                         reserves: Tensor, reserves_a: Tensor, choice: Tensor, g_reserves: Tensor, g_fees: Tensor,
                         signatures: list[int], n: int, smooth: bool, selection: str, gate_temperature: float,
                         selection_temperature: float, abs_epsilon: float
                         ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(g_r0, g_weights, g_fee, g_gas, g_arb_fee), each with the broadcast batch shape of all eleven
    tensor arguments in front."""
    settings = settings_from_args(signatures, n, smooth, selection, gate_temperature, selection_temperature,
                                  abs_epsilon)
    tensors = (r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice, g_reserves, g_fees)
    # every argument at the whole batch shape: also a batch that only the cotangents or residuals carry
    # (vmap over cotangents), which the kernel, taking its batch from the six primal inputs, would miss
    batch = tuple(_batch_shape(tensors, _BACKWARD_CORE))
    host = _host_full(tensors, _BACKWARD_CORE, batch)
    with torch_threads_kept():
        grads = kernel.backward(settings, *host[:6], host[6], (host[7], host[8]), host[9], host[10],
                                reduce=False)
    device = prices.device
    return tuple(torch.from_numpy(np.ascontiguousarray(g)).to(device=device, dtype=x.dtype)
                 for g, x in zip(grads, (r0, weights, fee, gas, arb_fee)))


@fee_path_backward_op.register_fake
def _fee_path_backward_fake(r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice, g_reserves,
                            g_fees, signatures, n, smooth, selection, gate_temperature, selection_temperature,
                            abs_epsilon):
    tensors = (r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice, g_reserves, g_fees)
    _check_ranks("tfmm::fee_path_backward", tensors, _BACKWARD_CORE)
    batch = tuple(_batch_shape(tensors, _BACKWARD_CORE))
    T, width = weights.shape[-2], weights.shape[-1]
    device = prices.device
    return (r0.new_empty(batch + (width,), device=device), weights.new_empty(batch + (T, width), device=device),
            fee.new_empty(batch + (T,), device=device), gas.new_empty(batch + (T,), device=device),
            arb_fee.new_empty(batch + (T,), device=device))


# ----------------------------------------------------------------------------------------------------------
# CUDA: the Triton kernels (imported at the first CUDA call)


def _checkpointed(device: torch.device) -> bool:
    """Whether the operators' residuals on ``device`` are the Triton kernels' checkpoints (CUDA) rather than
    the Numba kernel's Phase A reserves and choices."""
    return device.type == "cuda"


def _cuda_residual_rows(T: int) -> tuple[int, int]:
    """Rows of the CUDA residuals: (checkpoints, choices: none)."""
    from tfmm.backends.torch.fee_path_triton import default_checkpoint_every, n_checkpoints  # no triton import

    return n_checkpoints(T, default_checkpoint_every(T)), 0


@fee_path_op.register_kernel("cuda")
def _fee_path_cuda(r0, weights, prices, fee, gas, arb_fee, signatures, n, smooth, selection, gate_temperature,
                   selection_temperature, abs_epsilon):
    """The Triton forward: (reserves, fees, checkpoints, an empty (B..., 0, 2) int32 tensor)."""
    from tfmm.backends.torch import fee_path_triton

    settings = settings_from_args(signatures, n, smooth, selection, gate_temperature, selection_temperature,
                                  abs_epsilon)
    inputs = (r0, weights, prices, fee, gas, arb_fee)
    dtype = _result_dtype(inputs)
    reserves, fees, checkpoints = fee_path_triton.forward(settings, *inputs)
    choice = prices.new_empty(tuple(fees.shape[:-1]) + (0, 2), dtype=torch.int32)
    return reserves.to(dtype), fees.to(dtype), checkpoints.reserves.to(dtype), choice


@fee_path_backward_op.register_kernel("cuda")
def _fee_path_backward_cuda(r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice, g_reserves, g_fees,
                            signatures, n, smooth, selection, gate_temperature, selection_temperature, abs_epsilon):
    """The Triton reverse from the checkpoints (``reserves_a``); ``reserves`` and ``choice`` are not read."""
    from tfmm.backends.torch import fee_path_triton

    settings = settings_from_args(signatures, n, smooth, selection, gate_temperature, selection_temperature,
                                  abs_epsilon)
    tensors = (r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice, g_reserves, g_fees)
    batch = tuple(_batch_shape(tensors, _BACKWARD_CORE))
    T = weights.shape[-2]
    residuals = fee_path_triton.Checkpoints(reserves_a, fee_path_triton.default_checkpoint_every(T))
    grads = fee_path_triton.backward(settings, r0, weights, prices, fee, gas, arb_fee, None, residuals, g_reserves,
                                     g_fees, reduce=False)
    out = []
    for g, x, core in zip(grads, (r0, weights, fee, gas, arb_fee), (1, 2, 1, 1, 1)):
        g = g.to(x.dtype)
        full = batch + tuple(g.shape[g.ndim - core:])
        out.append(g if tuple(g.shape) == full else g.expand(full).contiguous())
    return tuple(out)


# ----------------------------------------------------------------------------------------------------------
# autograd


def _setup_context(ctx, inputs, output) -> None:
    r0, weights, prices, fee, gas, arb_fee, *static = inputs
    reserves, _, reserves_a, choice = output
    ctx.static = tuple(static)
    ctx.checkpointed = _checkpointed(prices.device)
    if ctx.checkpointed:  # CUDA: the reverse recomputes the states from the checkpoints (reserves_a)
        ctx.reserves_shape = tuple(reserves.shape)
        reserves = reserves.new_empty((0, reserves.shape[-1]))
    ctx.save_for_backward(r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice)
    # unused outputs (reserves_a always, often fees) get None, not a materialised (T, n) array of zeros
    ctx.set_materialize_grads(False)


def _backward(ctx, g_reserves, g_fees, _g_reserves_a, _g_choice):
    r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice = ctx.saved_tensors
    if g_reserves is None and g_fees is None:
        return (None,) * (6 + len(ctx.static))
    shape = ctx.reserves_shape if ctx.checkpointed else reserves.shape
    if g_reserves is None:
        g_reserves = reserves.new_zeros(shape) if ctx.checkpointed else torch.zeros_like(reserves)
    if g_fees is None:
        g_fees = reserves.new_zeros(shape[:-1])
    with torch.no_grad():
        grads = fee_path_backward_op(r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice,
                                     g_reserves, g_fees, *ctx.static)
    g_r0, g_w, g_fee, g_gas, g_arb = (sum_to_shape(g, x.shape) for g, x in zip(grads, (r0, weights, fee, gas, arb_fee)))
    needs = ctx.needs_input_grad
    out = (g_r0, g_w, None, g_fee, g_gas, g_arb)
    return tuple(g if (g is not None and needs[i]) else None for i, g in enumerate(out)) + (None,) * len(ctx.static)


torch.library.register_autograd("tfmm::fee_path", _backward, setup_context=_setup_context)


# ----------------------------------------------------------------------------------------------------------
# vmap: the batch goes to the kernel as a leading axis


def _fee_path_vmap(info, in_dims, r0, weights, prices, fee, gas, arb_fee, *static):
    tensors = (r0, weights, prices, fee, gas, arb_fee)
    dims = in_dims[:6]
    out = fee_path_op(*_to_front(tensors, dims, _FORWARD_CORE), *static)
    if all(d is None for d in dims):
        return out, (None,) * 4
    return out, (0,) * 4


def _fee_path_backward_vmap(info, in_dims, *args):
    tensors, static = args[:11], args[11:]
    dims = in_dims[:11]
    out = fee_path_backward_op(*_to_front(tensors, dims, _BACKWARD_CORE), *static)
    if all(d is None for d in dims):
        return out, (None,) * 5
    return out, (0,) * 5


torch.library.register_vmap("tfmm::fee_path", _fee_path_vmap)
torch.library.register_vmap("tfmm::fee_path_backward", _fee_path_backward_vmap)


# ----------------------------------------------------------------------------------------------------------
# the public function


class _FeePath(torch.autograd.Function):
    """``tfmm::fee_path`` for the public :func:`fee_path`: the same setup_context and backward as the
    operator's ``register_autograd``, as an ``autograd.Function`` with ``setup_context`` and
    ``generate_vmap_rule``, which torch's function transforms accept (``torch.func.grad`` / ``vjp`` /
    ``jacrev``, also inside ``vmap``); the operator's own autograd formula works with ``torch.autograd``
    only (torch generates it without ``setup_context``, which ``torch.func`` refuses). Under ``vmap`` the
    forward and backward bodies run batched, i.e. through the operators' batching rules."""

    generate_vmap_rule = True

    @staticmethod
    def forward(r0, weights, prices, fee, gas, arb_fee, static):
        return fee_path_op(r0, weights, prices, fee, gas, arb_fee, *static)

    @staticmethod
    def setup_context(ctx, inputs, output):
        *tensors, static = inputs
        _setup_context(ctx, (*tensors, *static), output)
        ctx.mark_non_differentiable(output[3])

    @staticmethod
    def backward(ctx, g_reserves, g_fees, g_reserves_a, g_choice):
        return _backward(ctx, g_reserves, g_fees, g_reserves_a, g_choice)[:6] + (None,)


@lru_cache(maxsize=64)
def fee_path(settings: kernel.FeePathSettings) -> Callable:
    """The differentiable fee path for one static setting (cached: one function per setting):
    ``f(r0, weights, prices, fee, gas, arb_fee) -> (reserves, fees)``."""
    static = settings_args(settings)

    def f(r0: Tensor, weights: Tensor, prices: Tensor, fee: Tensor, gas: Tensor, arb_fee: Tensor):
        reserves, fees, _, _ = _FeePath.apply(r0, weights, prices, fee, gas, arb_fee, static)
        return reserves, fees

    return f


__all__ = ["fee_path", "fee_path_op", "fee_path_backward_op", "settings_args", "settings_from_args", "sum_to_shape"]
