"""The CPU weight-path kernel as one differentiable JAX operation.

``weight_path(settings)`` returns ``f(w_init, outputs, alpha) -> (a, delta)`` (unbatched: w_init, alpha (n,),
outputs (Nc, n)), the contract of :func:`tfmm.core.weights.coarse_weights`: a ``jax.custom_vjp`` around
``jax.pure_callback`` calls of :mod:`tfmm.backends.kernels.weight_path`, like the fee path's wrapper
(:mod:`tfmm.backends.jax.fee_kernel`): it works under ``jit``, ``vmap`` (one kernel call for the batch) and
``grad``; results in the inputs' dtype.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import jax
import numpy as np

from tfmm.backends.kernels import weight_path as kernel


@lru_cache(maxsize=64)
def weight_path(settings: kernel.WeightPathSettings) -> Callable:
    """The differentiable coarse weight recursion for one static setting (cached)."""

    def forward_callback(w_init, outputs, alpha):
        dtype = np.asarray(outputs).dtype
        return tuple(x.astype(dtype) for x in kernel.forward(settings, w_init, outputs, alpha))

    def call_forward(w_init, outputs, alpha):
        out = jax.ShapeDtypeStruct(outputs.shape, outputs.dtype)
        return jax.pure_callback(forward_callback, (out, out), w_init, outputs, alpha, vmap_method="expand_dims")

    @jax.custom_vjp
    def f(w_init, outputs, alpha):
        return call_forward(w_init, outputs, alpha)

    def f_fwd(w_init, outputs, alpha):
        a, delta = call_forward(w_init, outputs, alpha)
        return (a, delta), (w_init, outputs, alpha, a)

    def backward_callback(w_init, outputs, alpha, a, g_a, g_delta):
        # unreduced (pure_callback's expand_dims contract); custom_vjp's batching rule sums the batch
        grads = kernel.backward(settings, w_init, outputs, alpha, a, g_a, g_delta, reduce=False)
        return tuple(g.astype(np.asarray(x).dtype) for g, x in zip(grads, (w_init, outputs, alpha)))

    def f_bwd(res, cotangents):
        w_init, outputs, alpha, a = res
        g_a, g_delta = cotangents
        out_types = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (w_init, outputs, alpha))
        return jax.pure_callback(backward_callback, out_types, w_init, outputs, alpha, a, g_a, g_delta,
                                 vmap_method="expand_dims")

    f.defvjp(f_fwd, f_bwd)
    return f


__all__ = ["weight_path"]
