"""The CPU weight-path kernel as one differentiable torch operation.

``weight_path(settings)`` returns ``f(w_init, outputs, alpha) -> (a, delta)`` with the shapes of
:func:`tfmm.backends.kernels.weight_path.forward` (w_init (..., n), outputs (..., Nc, n), alpha (..., n);
leading axes broadcast), the contract of :func:`tfmm.core.weights.coarse_weights`. Built as the fee path's
wrapper (:mod:`tfmm.backends.torch.fee_kernel`, whose docstring gives the reasons): two custom operators,

- ``tfmm::weight_path(w_init, outputs, alpha, *static) -> (a, delta)``, the Numba forward pass;
- ``tfmm::weight_path_backward(w_init, outputs, alpha, a, g_a, g_delta, *static) -> (g_w_init, g_outputs,
  g_alpha)``, the hand-written reverse pass, unreduced (the whole broadcast batch shape in front);

each with a fake implementation (``torch.compile`` keeps it as one opaque call, no graph break) and a
batching rule (``vmap`` reaches the kernel as one call with the batch in front); the forward operator's
autograd formula calls the backward operator. :func:`weight_path` applies it through an
``autograd.Function`` so that ``torch.func`` transforms work too. ``*static`` is the
:class:`~tfmm.backends.kernels.weight_path.WeightPathSettings` as operator arguments (kind, w_min, w_max,
max_change, interpolation_period, smooth, temperature).

The kernel computes in float64; results come back in the promoted dtype of the inputs and on the device of
``outputs`` (another device than the CPU is copied to the host and back).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import torch

from tfmm.backends.kernels import weight_path as kernel
from tfmm.backends.torch.kernel_support import (
    batch_shape, check_ranks, host_full, result_dtype, sum_to_shape, to_front, torch_threads_kept,
)

Tensor = torch.Tensor

_FORWARD_CORE = (1, 2, 1)  # w_init, outputs, alpha
_BACKWARD_CORE = _FORWARD_CORE + (2, 2, 2)  # + a, g_a, g_delta


def settings_args(settings: kernel.WeightPathSettings) -> tuple:
    """The operator arguments for ``settings``."""
    return (settings.kind, settings.w_min, settings.w_max, settings.max_change, settings.interpolation_period,
            settings.smooth, settings.temperature)


@lru_cache(maxsize=64)
def settings_from_args(kind: str, w_min: float, w_max: float, max_change: float, interpolation_period: int,
                       smooth: bool, temperature: float) -> kernel.WeightPathSettings:
    """The inverse of :func:`settings_args` (cached)."""
    return kernel.WeightPathSettings(kind, w_min, w_max, max_change, interpolation_period, smooth, temperature)


@torch.library.custom_op("tfmm::weight_path", mutates_args=())
def weight_path_op(w_init: Tensor, outputs: Tensor, alpha: Tensor, kind: str, w_min: float, w_max: float,
                   max_change: float, interpolation_period: int, smooth: bool, temperature: float
                   ) -> tuple[Tensor, Tensor]:
    """(a (B..., Nc, n), delta (B..., Nc, n))."""
    settings = settings_from_args(kind, w_min, w_max, max_change, interpolation_period, smooth, temperature)
    inputs = (w_init, outputs, alpha)
    dtype, device = result_dtype(inputs), outputs.device
    batch = tuple(batch_shape(inputs, _FORWARD_CORE))
    with torch_threads_kept():
        a, delta = kernel.forward(settings, *host_full(inputs, _FORWARD_CORE, batch))
    return tuple(torch.from_numpy(x).to(device=device, dtype=dtype) for x in (a, delta))


@weight_path_op.register_fake
def _weight_path_fake(w_init, outputs, alpha, *static):
    inputs = (w_init, outputs, alpha)
    check_ranks("tfmm::weight_path", inputs, _FORWARD_CORE)
    shape = tuple(batch_shape(inputs, _FORWARD_CORE)) + tuple(outputs.shape[-2:])
    dtype = result_dtype(inputs)
    return outputs.new_empty(shape, dtype=dtype), outputs.new_empty(shape, dtype=dtype)


@torch.library.custom_op("tfmm::weight_path_backward", mutates_args=())
def weight_path_backward_op(w_init: Tensor, outputs: Tensor, alpha: Tensor, a: Tensor, g_a: Tensor,
                            g_delta: Tensor, kind: str, w_min: float, w_max: float, max_change: float,
                            interpolation_period: int, smooth: bool, temperature: float
                            ) -> tuple[Tensor, Tensor, Tensor]:
    """(g_w_init, g_outputs, g_alpha), each with the broadcast batch shape of all six tensors in front."""
    settings = settings_from_args(kind, w_min, w_max, max_change, interpolation_period, smooth, temperature)
    tensors = (w_init, outputs, alpha, a, g_a, g_delta)
    batch = tuple(batch_shape(tensors, _BACKWARD_CORE))
    host = host_full(tensors, _BACKWARD_CORE, batch)
    with torch_threads_kept():
        grads = kernel.backward(settings, *host, reduce=False)
    return tuple(torch.from_numpy(g).to(device=outputs.device, dtype=x.dtype)
                 for g, x in zip(grads, (w_init, outputs, alpha)))


@weight_path_backward_op.register_fake
def _weight_path_backward_fake(w_init, outputs, alpha, a, g_a, g_delta, *static):
    tensors = (w_init, outputs, alpha, a, g_a, g_delta)
    check_ranks("tfmm::weight_path_backward", tensors, _BACKWARD_CORE)
    batch = tuple(batch_shape(tensors, _BACKWARD_CORE))
    n = outputs.shape[-1]
    return (w_init.new_empty(batch + (n,)), outputs.new_empty(batch + tuple(outputs.shape[-2:])),
            alpha.new_empty(batch + (n,)))


def _setup_context(ctx, inputs, output) -> None:
    w_init, outputs, alpha, *static = inputs
    ctx.static = tuple(static)
    ctx.save_for_backward(w_init, outputs, alpha, output[0])
    ctx.set_materialize_grads(False)


def _backward(ctx, g_a, g_delta):
    w_init, outputs, alpha, a = ctx.saved_tensors
    if g_a is None and g_delta is None:
        return (None,) * (3 + len(ctx.static))
    g_a = torch.zeros_like(a) if g_a is None else g_a
    g_delta = torch.zeros_like(a) if g_delta is None else g_delta
    with torch.no_grad():
        grads = weight_path_backward_op(w_init, outputs, alpha, a, g_a, g_delta, *ctx.static)
    grads = [sum_to_shape(g, x.shape) if need else None
             for g, x, need in zip(grads, (w_init, outputs, alpha), ctx.needs_input_grad)]
    return (*grads, *(None,) * len(ctx.static))


torch.library.register_autograd("tfmm::weight_path", _backward, setup_context=_setup_context)


def _weight_path_vmap(info, in_dims, w_init, outputs, alpha, *static):
    dims = in_dims[:3]
    out = weight_path_op(*to_front((w_init, outputs, alpha), dims, _FORWARD_CORE), *static)
    return out, ((None,) * 2 if all(d is None for d in dims) else (0,) * 2)


def _weight_path_backward_vmap(info, in_dims, *args):
    tensors, static = args[:6], args[6:]
    dims = in_dims[:6]
    out = weight_path_backward_op(*to_front(tensors, dims, _BACKWARD_CORE), *static)
    return out, ((None,) * 3 if all(d is None for d in dims) else (0,) * 3)


torch.library.register_vmap("tfmm::weight_path", _weight_path_vmap)
torch.library.register_vmap("tfmm::weight_path_backward", _weight_path_backward_vmap)


class _WeightPath(torch.autograd.Function):
    """``tfmm::weight_path`` with ``setup_context`` and ``generate_vmap_rule`` (what ``torch.func`` needs)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(w_init, outputs, alpha, static):
        return weight_path_op(w_init, outputs, alpha, *static)

    @staticmethod
    def setup_context(ctx, inputs, output):
        *tensors, static = inputs
        _setup_context(ctx, (*tensors, *static), output)

    @staticmethod
    def backward(ctx, g_a, g_delta):
        return _backward(ctx, g_a, g_delta)[:3] + (None,)


@lru_cache(maxsize=64)
def weight_path(settings: kernel.WeightPathSettings) -> Callable:
    """The differentiable coarse weight recursion for one static setting (cached):
    ``f(w_init, outputs, alpha) -> (a, delta)``."""
    static = settings_args(settings)

    def f(w_init: Tensor, outputs: Tensor, alpha: Tensor):
        return _WeightPath.apply(w_init, outputs, alpha, static)

    return f


__all__ = ["weight_path", "weight_path_op", "weight_path_backward_op", "settings_args", "settings_from_args"]
