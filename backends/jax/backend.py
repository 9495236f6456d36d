"""JAX primitives for :mod:`tfmm.core` (the contract of :mod:`tfmm.backend`)."""

from __future__ import annotations

import os
from typing import Any, Callable

# XLA:CPU runs small while-loops (every lax.scan) through a slow generic path unless told otherwise; the
# per-minute arbitrage scan is 4-15x faster with this threshold raised (bench/bench_pool_step.py). XLA reads
# the flag when its CPU client starts, so it only applies if this backend is loaded before any JAX
# computation in the process (documented side effect, like jax_enable_x64 below).
_SCAN_FLAG = "--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000000"
if _SCAN_FLAG.split("=", 1)[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _SCAN_FLAG).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402


from tfmm.engine import EngineBackend, check_fee_path  # noqa: E402


class JaxBackend(EngineBackend):
    """Machinery only: namespace, control flow, autodiff and conversion; no simulation math.

    ``fee_path``: "auto" (the fused CPU kernel when JAX's default device is the CPU, the Pallas kernel of
    :mod:`tfmm.backends.jax.fee_kernel_pallas` when it is a GPU, else ``lax.scan``), "kernel" (the CPU kernel)
    or "scan" (see :class:`tfmm.engine.EngineBackend`).
    """

    name = "jax"
    xp = jnp

    def __init__(self, fee_path: str = "auto", weight_path: str = "auto") -> None:
        self.fee_path = check_fee_path(fee_path)
        self.weight_path = check_fee_path(weight_path, "weight_path")

    def weight_kernel(self, settings: Any) -> Callable:
        from tfmm.backends.jax.weight_kernel import weight_path

        return weight_path(settings)

    def uses_weight_kernel(self, outputs: Any) -> bool:
        # "auto": lax.scan (XLA compiles the recursion as a whole; see docs/decisions.md)
        return self.weight_path == "kernel"

    def fee_kernel(self, settings: Any) -> Callable:
        if self.fee_path == "auto" and jax.default_backend() == "gpu":
            from tfmm.backends.jax.fee_kernel_pallas import fee_path_pallas

            return fee_path_pallas(settings)
        from tfmm.backends.jax.fee_kernel import fee_path

        return fee_path(settings)

    def uses_fee_kernel(self, prices: Any) -> bool:
        if self.fee_path == "auto":
            return jax.default_backend() in ("cpu", "gpu")
        return self.fee_path == "kernel"

    def asarray(self, x: Any, dtype: str = "float64") -> jax.Array:
        return jnp.asarray(x, dtype=jnp.dtype(dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def scan(self, step: Callable, carry: Any, xs: Any, checkpoint_every: int | None = None) -> tuple[Any, Any]:
        """lax.scan(step, carry, xs); with ``checkpoint_every`` the scan is split into segments whose
        inner steps are rematerialised on the backward pass (memory O(T / k + k) instead of O(T))."""
        if not checkpoint_every:
            return lax.scan(step, carry, xs)
        leaves = jax.tree_util.tree_leaves(xs)
        length = leaves[0].shape[0]
        k = int(checkpoint_every)
        if length <= k:
            return lax.scan(step, carry, xs)
        n_full = length // k
        head = jax.tree_util.tree_map(lambda a: a[: n_full * k].reshape((n_full, k) + a.shape[1:]), xs)
        tail = jax.tree_util.tree_map(lambda a: a[n_full * k :], xs)

        @jax.checkpoint
        def segment(c, seg_xs):
            return lax.scan(step, c, seg_xs)

        carry, ys_head = lax.scan(segment, carry, head)
        ys_head = jax.tree_util.tree_map(lambda a: a.reshape((n_full * k,) + a.shape[2:]), ys_head)
        if length == n_full * k:
            return carry, ys_head
        carry, ys_tail = lax.scan(step, carry, tail)
        return carry, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b], axis=0), ys_head, ys_tail)

    def associative_scan(self, fn: Callable, elems: Any, axis: int = 0) -> Any:
        return lax.associative_scan(fn, elems, axis=axis)

    def stop_gradient(self, x: Any) -> Any:
        return lax.stop_gradient(x)

    def where(self, cond: Any, x: Any, y: Any) -> Any:
        """Element-wise select. Callers keep both branches finite (the double-where idiom), so the
        gradient of the unselected branch is an exact zero, never NaN."""
        return jnp.where(cond, x, y)

    def one_hot(self, index: Any, n: int, dtype: Any) -> Any:
        return jax.nn.one_hot(index, n, dtype=dtype)

    def softmax(self, x: Any, axis: int = -1) -> Any:
        return jax.nn.softmax(x, axis=axis)

    def sigmoid(self, x: Any) -> Any:
        return jax.nn.sigmoid(x)

    def logsumexp(self, x: Any, axis: int = -1) -> Any:
        return jax.scipy.special.logsumexp(x, axis=axis)

    def cumsum(self, x: Any, axis: int = 0) -> Any:
        return jnp.cumsum(x, axis=axis)

    def cummax(self, x: Any, axis: int = 0) -> Any:
        """Running maximum along ``axis`` as a sequential ``lax.scan``: on XLA:CPU at T = 525,600 it took 4 ms
        (24 ms with gradient) against 16 ms (60 ms) for ``lax.cummax`` (an associative scan there)."""
        x = jnp.moveaxis(x, axis, 0)

        def step(peak, v):
            peak = jnp.maximum(peak, v)
            return peak, peak

        _, peak = lax.scan(step, x[0], x)
        return jnp.moveaxis(peak, 0, axis)

    def argmax(self, x: Any, axis: int = -1) -> Any:
        """Index of the first maximum (ties go to the lowest index)."""
        return jnp.argmax(x, axis=axis)

    def dynamic_slice(self, x: Any, start: Any, size: int, axis: int = 0) -> Any:
        return lax.dynamic_slice_in_dim(x, start, size, axis=axis)

    def jit(self, fn: Callable, **kwargs: Any) -> Callable:
        return jax.jit(fn, **kwargs)

    def vmap(self, fn: Callable, in_axes: Any = 0) -> Callable:
        return jax.vmap(fn, in_axes=in_axes)

    def value_and_grad(self, fn: Callable, has_aux: bool = False) -> Callable:
        return jax.value_and_grad(fn, has_aux=has_aux)

    def grad(self, fn: Callable, has_aux: bool = False) -> Callable:
        return jax.grad(fn, has_aux=has_aux)

    def make_trainer(self, request, config):
        from tfmm.backends.jax.optim import make_trainer

        return make_trainer(self.engine, request, config)

    def __repr__(self) -> str:
        return f"JaxBackend(devices={jax.devices()}, fee_path={self.fee_path!r}, weight_path={self.weight_path!r})"


def _register_pytrees() -> None:
    """``tfmm.Strategy`` and ``tfmm.Simulation`` as JAX pytrees (Equinox-style): a strategy's parameters are
    its leaves, everything else static; a simulation's arrays are its leaves. Unflattening skips validation
    (leaves may be tracers)."""
    import dataclasses

    from tfmm.records import Simulation
    from tfmm.specs import Strategy

    def strategy_flatten(s: Strategy):
        keys = tuple(s.params)
        static = (s.name, keys, tuple(np.asarray(s.initial_weights).tolist()), s.beta, s.max_memory_days,
                  s.chunk_period)
        return tuple(s.params[k] for k in keys), static

    def strategy_unflatten(static, leaves) -> Strategy:
        name, keys, w, beta, max_memory_days, chunk_period = static
        s = object.__new__(Strategy)
        values = dict(name=name, params=dict(zip(keys, leaves)), initial_weights=np.asarray(w), beta=beta,
                      max_memory_days=max_memory_days, chunk_period=chunk_period)
        for f in dataclasses.fields(Strategy):
            object.__setattr__(s, f.name, values[f.name])
        return s

    arrays = ("reserves", "weights", "values", "trades", "fees", "prices")

    def simulation_flatten(sim: Simulation):
        rest = tuple((f.name, getattr(sim, f.name)) for f in dataclasses.fields(Simulation) if f.name not in arrays)
        return tuple(getattr(sim, a) for a in arrays), rest

    def simulation_unflatten(rest, leaves) -> Simulation:
        return Simulation(**dict(zip(arrays, leaves)), **dict(rest))

    for cls, flatten, unflatten in ((Strategy, strategy_flatten, strategy_unflatten),
                                    (Simulation, simulation_flatten, simulation_unflatten)):
        try:
            jax.tree_util.register_pytree_node(cls, flatten, unflatten)
        except ValueError:  # already registered (the module was reloaded)
            pass


_register_pytrees()


def make_backend(fee_path: str = "auto", weight_path: str = "auto") -> JaxBackend:
    return JaxBackend(fee_path=fee_path, weight_path=weight_path)
