"""The CPU fee-path kernel as one differentiable JAX operation.

``fee_path(settings)`` returns ``f(r0, weights, prices, fee, gas, arb_fee) -> (reserves, fees)`` with the
shapes of :func:`tfmm.backends.kernels.fee_path.forward` (unbatched: r0 (n,), weights and prices (T, n),
rates (T,)). It is a ``jax.custom_vjp`` whose forward and reverse passes are ``jax.pure_callback`` calls
into the Numba kernels, so it works under ``jit``, ``vmap`` (``vmap_method="expand_dims"``: a batch reaches
the kernel as leading axes, unbatched inputs with axes of size 1, and runs as one parallel call) and
``grad``. The results are in the inputs' dtype (the kernel computes in float64).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from tfmm.backends.kernels import fee_path as kernel


def _shape_dtype(x, shape=None) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(x.shape if shape is None else shape, x.dtype)


@lru_cache(maxsize=64)
def fee_path(settings: kernel.FeePathSettings) -> Callable:
    """The differentiable fee path for one static setting (cached: one function per setting)."""

    def forward_callback(r0, weights, prices, fee, gas, arb_fee):
        reserves, fees, (reserves_a, choice) = kernel.forward(settings, r0, weights, prices, fee, gas, arb_fee)
        dtype = np.asarray(prices).dtype
        return reserves.astype(dtype), fees.astype(dtype), reserves_a.astype(dtype), choice

    def call_forward(r0, weights, prices, fee, gas, arb_fee):
        T, n = weights.shape
        out_types = (_shape_dtype(weights), _shape_dtype(fee), _shape_dtype(weights),
                     jax.ShapeDtypeStruct((T, 2), jnp.int32))
        return jax.pure_callback(forward_callback, out_types, r0, weights, prices, fee, gas, arb_fee,
                                 vmap_method="expand_dims")

    @jax.custom_vjp
    def f(r0, weights, prices, fee, gas, arb_fee):
        reserves, fees, _, _ = call_forward(r0, weights, prices, fee, gas, arb_fee)
        return reserves, fees

    def f_fwd(r0, weights, prices, fee, gas, arb_fee):
        reserves, fees, reserves_a, choice = call_forward(r0, weights, prices, fee, gas, arb_fee)
        return (reserves, fees), (r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice)

    def backward_callback(r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice, g_res, g_fees):
        # every output carries the whole batch (pure_callback's expand_dims contract); custom_vjp's
        # batching rule sums it over the axes along which an input was not batched
        grads = kernel.backward(settings, r0, weights, prices, fee, gas, arb_fee, reserves, (reserves_a, choice),
                                g_res, g_fees, reduce=False)
        return tuple(g.astype(np.asarray(x).dtype) for g, x in zip(grads, (r0, weights, fee, gas, arb_fee)))

    def f_bwd(res, cotangents):
        r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice = res
        g_res, g_fees = cotangents
        out_types = tuple(_shape_dtype(x) for x in (r0, weights, fee, gas, arb_fee))
        g_r0, g_w, g_fee, g_gas, g_arb = jax.pure_callback(
            backward_callback, out_types, r0, weights, prices, fee, gas, arb_fee, reserves, reserves_a, choice,
            g_res, g_fees, vmap_method="expand_dims")
        return g_r0, g_w, jnp.zeros_like(prices), g_fee, g_gas, g_arb

    f.defvjp(f_fwd, f_bwd)
    return f


__all__ = ["fee_path"]
