"""The Pallas fee-path kernels (:mod:`tfmm.backends.kernels.fee_path_pallas`) as one differentiable JAX operation.

``fee_path_pallas(settings)`` returns ``f(r0, weights, prices, fee, gas, arb_fee) -> (reserves, fees)`` with the
contract of :func:`tfmm.backends.jax.fee_kernel.fee_path` (unbatched: r0 (n,) tokens, weights and prices (T, n),
fee, gas (USD) and arb_fee (T,); reserves (T, n), fees (T,) USD, row 0 the initial state), so the JAX backend
can hand either to the engine. It is a ``jax.custom_vjp``: the forward kernel returns the reserves, the fees
and checkpoints every ``K`` minutes, and the backward pass runs the checkpointed reverse kernel on the inputs
and the checkpoints (memory ``O(T / K + K)`` per trajectory beyond inputs and outputs). Exact mode is the
pathwise derivative; prices are data (their cotangent is zero), as in the CPU kernel.

Batching: the kernel calls are ``jax.custom_batching.custom_vmap`` operations whose rule folds every vmapped
axis into the kernel's trajectory axis, so ``vmap`` (nested or not) runs one kernel launch for the whole
batch, with unbatched inputs broadcast; ``custom_vjp``'s batching sums the cotangents of unbatched inputs.

Several devices: with a ``mesh`` (or, when none is given, the mesh set by ``jax.set_mesh``, if any), each
kernel call runs under ``jax.shard_map`` with the trajectory axis split over all of the mesh's axes (padded to
a multiple of the mesh size), so a batch sharded along its leading axis (``NamedSharding(mesh, P(axis))``) is
computed where it lives, one kernel launch per device. Without a mesh the call is a single-device program.

The computation is in the inputs' (common) dtype, float32 in float32 (the CPU kernel computes in float64; see
the kernel module's docstring); results come back in the dtypes of weights (reserves) and fee (fees),
cotangents in those of their inputs. ``interpret`` None runs the kernels interpreted unless JAX's default
backend is a GPU.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from tfmm.backends.kernels import fee_path_pallas as kernel
from tfmm.backends.kernels.fee_path import FeePathSettings


def _merge(x: jax.Array, batched: bool, size: int) -> jax.Array:
    """A vmapped axis (leading, of ``size``) folded into the trajectory axis that follows it."""
    if not batched:
        x = jnp.broadcast_to(x[None], (size,) + x.shape)
    return x.reshape((size * x.shape[1],) + x.shape[2:])


def _split(x: jax.Array, size: int) -> jax.Array:
    return x.reshape((size, x.shape[0] // size) + x.shape[1:])


def batched(op: Callable[..., tuple]) -> Callable[..., tuple]:
    """``op`` on arrays with one leading trajectory axis, whose ``vmap`` folds the vmapped axis into it (one
    call for the batch; nested vmaps fold one by one)."""
    fn = jax.custom_batching.custom_vmap(op)

    @fn.def_vmap
    def rule(axis_size: int, in_batched: list, *args: jax.Array):
        outs = fn(*(_merge(x, b, axis_size) for x, b in zip(args, in_batched)))
        return tuple(_split(o, axis_size) for o in outs), tuple(True for _ in outs)

    return fn


def _pad_batch(x: jax.Array, size: int) -> jax.Array:
    """Trajectory axis padded to ``size`` by repeating the last trajectory (values stay finite)."""
    extra = size - x.shape[0]
    return x if extra == 0 else jnp.pad(x, [(0, extra)] + [(0, 0)] * (x.ndim - 1), mode="edge")


def _mesh(mesh: Mesh | None):
    """The explicit mesh, else the one set by ``jax.set_mesh`` (if any, and unless the call is already per
    shard: inside a ``shard_map``, whose axes are manual), else None."""
    if mesh is not None:
        return mesh
    ambient = jax.sharding.get_abstract_mesh()
    return None if ambient.empty or ambient.manual_axes else ambient


def sharded(fn: Callable[..., tuple], mesh: Mesh | None) -> Callable[..., tuple]:
    """``fn`` (arrays with a leading trajectory axis) run per shard of that axis over every axis of the mesh
    (explicit or ambient; unsharded without one)."""

    def call(*args: jax.Array) -> tuple:
        m = _mesh(mesh)
        if m is None or m.size == 1:
            return fn(*args)
        B = args[0].shape[0]
        Bp = -(-B // m.size) * m.size
        spec = PartitionSpec(tuple(m.axis_names))
        outs = jax.shard_map(fn, mesh=m, in_specs=spec, out_specs=spec, check_vma=False)(
            *(_pad_batch(x, Bp) for x in args))
        return tuple(o[:B] for o in outs)

    return call


def _common_dtype(*xs: jax.Array) -> jnp.dtype:
    return jnp.result_type(*xs)


def _reduce_to(g: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A per-row cotangent (T,) summed to a rate given with ``shape`` (() or (T,))."""
    return g if g.shape == shape else jnp.sum(g).reshape(shape)


@lru_cache(maxsize=64)
def fee_path_pallas(settings: FeePathSettings, *, checkpoint_every: int | None = None, block: int | None = None,
                    mesh: Mesh | None = None, interpret: bool | None = None) -> Callable:
    """The differentiable fee path on the Pallas kernels for one static setting (cached per arguments).

    ``checkpoint_every`` K minutes (default ``round(sqrt(T - 1))``), ``block`` trajectories per program (a power
    of two, default 32), ``mesh`` to split a batch over devices, ``interpret`` (module docstring)."""
    options = dict(checkpoint_every=checkpoint_every, block=block, interpret=interpret)
    forward_op = batched(sharded(partial(kernel.forward, settings, **options), mesh))
    backward_op = batched(sharded(partial(kernel.backward, settings, **options), mesh))

    def rates_of(weights, fee, gas, arb_fee, dt) -> jax.Array:
        T = weights.shape[0]
        return jnp.stack([jnp.broadcast_to(jnp.asarray(x, dt), (T,)) for x in (fee, gas, arb_fee)], axis=-1)

    def run_forward(r0, weights, prices, fee, gas, arb_fee):
        dt = _common_dtype(r0, weights, prices, fee, gas, arb_fee)
        reserves, fees, ckpt = forward_op(r0.astype(dt)[None], weights.astype(dt)[None], prices.astype(dt)[None],
                                          rates_of(weights, fee, gas, arb_fee, dt)[None])
        return (reserves[0].astype(weights.dtype), fees[0].astype(jnp.result_type(fee))), ckpt[0]

    @jax.custom_vjp
    def f(r0, weights, prices, fee, gas, arb_fee):
        return run_forward(r0, weights, prices, fee, gas, arb_fee)[0]

    def f_fwd(r0, weights, prices, fee, gas, arb_fee):
        out, ckpt = run_forward(r0, weights, prices, fee, gas, arb_fee)
        return out, (r0, weights, prices, fee, gas, arb_fee, ckpt)

    def f_bwd(res, cotangents):
        r0, weights, prices, fee, gas, arb_fee, ckpt = res
        g_res, g_fees = cotangents
        dt = ckpt.dtype
        g_r0, g_w, g_rates = backward_op(weights.astype(dt)[None], prices.astype(dt)[None],
                                         rates_of(weights, fee, gas, arb_fee, dt)[None], ckpt[None],
                                         g_res.astype(dt)[None], g_fees.astype(dt)[None])
        g_rate = tuple(_reduce_to(g_rates[0, :, k], jnp.shape(x)).astype(jnp.result_type(x))
                       for k, x in enumerate((fee, gas, arb_fee)))
        return (g_r0[0].astype(r0.dtype), g_w[0].astype(weights.dtype), jnp.zeros_like(prices)) + g_rate

    f.defvjp(f_fwd, f_bwd)
    return f


__all__ = ["fee_path_pallas", "batched", "sharded"]
