"""Torch primitives for :mod:`tfmm.core` (the contract of :mod:`tfmm.backend`), eager mode, with JAX's semantics.

Every primitive behaves like its counterpart in :mod:`tfmm.backends.jax.backend`, so the core runs
unchanged and the two backends agree to rounding. Decisions:

- ``scan`` is a Python loop over the leading axis of ``xs`` (a pytree of tensors). Each leaf is unbound
  once (``unbind(0)``): indexing ``x[t]`` inside the loop would make the backward pass O(T^2), because each
  index op's gradient is a full-size scatter. ``checkpoint_every`` is accepted and ignored (eager autograd
  keeps every step's intermediates: memory O(T)); rematerialisation belongs with the compiled path.
- ``associative_scan`` is the Hillis-Steele doubling scan: ``ceil(log2 n)`` rounds of tensor ops, each
  combining element ``i`` with element ``i - 2^k``. It does O(n log n) work, but in eager torch the number
  of op launches, not the work, is the cost. The association order differs from ``lax.associative_scan``,
  so results agree to rounding, not bit for bit.
- ``argmax`` returns the first maximum, like ``jnp.argmax``. ``torch.argmax`` documents the same rule;
  the tests check it, as they check that NaN counts as the maximum in both.
- ``one_hot`` is ``index[..., None] == arange(n)``, as in ``jax.nn.one_hot``: an index outside
  ``[0, n)`` gives a row of zeros (``torch.nn.functional.one_hot`` raises instead, and returns int64).
- ``dynamic_slice`` wraps a negative ``start`` once and clamps it to ``[0, dim - size]``, like
  ``lax.dynamic_slice_in_dim``, and gathers
  ``start + arange(size)`` with ``index_select``, so a tensor ``start`` works under ``torch.func.vmap``
  (``torch.narrow`` would need ``int(start)``, which a batched tensor cannot give).
- ``where`` with two Python scalars gives float64 (torch would give its default dtype, float32, while
  JAX with x64 gives float64); otherwise torch's type promotion applies, which keeps a float32 tensor
  float32 against a Python float, as JAX's weak types do.
- ``jit`` returns the function unchanged: this backend is eager. ``torch.compile`` is a later step.
- ``vmap`` is ``torch.func.vmap`` with ``in_dims=in_axes``; ``scan``'s Python loop, ``where``,
  ``argmax``, ``one_hot`` and ``dynamic_slice`` all run under it (the tests check batched against looped).
  A mapped axis of size 1 (one parameter set, one bout start) skips ``torch.func.vmap``: ``fn`` runs on
  the single element and the outputs get the axis back. Same values; functorch's batching adds
  overhead to each of the thousands of small ops of the weight recursion and its backward pass.
- ``dynamic_slice`` with an unbatched tensor ``start`` (outside ``vmap`` or not mapped by it) reads the
  number and narrows (a view) instead of gathering: on a one-year bout the gather and its scatter-add
  backward cost tens of milliseconds per sliced array.
- ``value_and_grad`` differentiates with respect to the first argument (a pytree of float tensors) with
  ``torch.autograd.grad`` on detached leaf copies, and returns JAX's structure: ``(value, grads)`` or
  ``((value, aux), grads)``; value and aux come back detached. A leaf the value does not depend on gets a
  zero gradient (JAX's behaviour), not None.
- CPU only: the core creates constant arrays with ``xp.asarray`` and no device, so tensors live on the CPU.
- The fee path (``fee_path`` option, :class:`tfmm.engine.EngineBackend`): "auto" (default) runs the fused
  CPU kernel (:mod:`tfmm.backends.torch.fee_kernel`: custom operators ``tfmm::fee_path`` and
  ``tfmm::fee_path_backward`` with fake, autograd and vmap registrations) when the prices are on the CPU,
  the operators' CUDA implementations (the Triton kernels of :mod:`tfmm.backends.torch.fee_path_triton`)
  when they are on a CUDA device and Triton is installed, else the core's per-minute scan; "kernel" always
  the operators (on a device without an implementation of its own, a tensor is copied to the host and
  back), "scan" always the scan (a Python loop, about 1 ms per minute in eager torch, with autograd
  keeping every step). Under ``vmap`` over parameter sets and bout starts the kernel is called once, with
  the batch as leading axes (one parallel Numba call). The kernel's threads are Numba's, not torch's.
- Making the backend calls ``torch.set_num_threads(1)``: the simulation is a long chain of small ops, and
  on a 2-core machine shared with other work two threads turned a 1 s run into 39 s. This is a
  process-wide torch setting; pass ``num_threads=None`` to :class:`TorchBackend` to leave it alone.
"""

from __future__ import annotations

from typing import Any, Callable

import array_api_compat
import numpy as np
import torch
import torch.utils._pytree as pytree

_DTYPES = {
    "float64": torch.float64, "float32": torch.float32, "int64": torch.int64, "int32": torch.int32,
    "bool": torch.bool,
}


def torch_dtype(dtype: Any) -> torch.dtype:
    """A torch dtype from a torch dtype, a numpy dtype or a name such as ``"float64"``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = np.dtype(dtype).name
    if name not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported: allowed one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def _is_float_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _is_batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is a tensor batched by an enclosing ``torch.func.vmap``."""
    return bool(torch._C._functorch.is_batchedtensor(x))


def _select_single(args: tuple, in_axes: Any) -> list | None:
    """``args`` with element 0 taken along each mapped axis when the mapped size is 1; None when it is not
    (or for ``in_axes`` other than an int or a flat sequence of ints and None: left to ``torch.func.vmap``)."""
    axes = [in_axes] * len(args) if isinstance(in_axes, int) else in_axes
    if not isinstance(axes, (tuple, list)) or len(axes) != len(args):
        return None
    if any(a is not None and not isinstance(a, int) for a in axes):
        return None
    out, size = [], None
    for arg, axis in zip(args, axes):
        if axis is None:
            out.append(arg)
            continue
        leaves, spec = pytree.tree_flatten(arg)
        if not leaves or not all(isinstance(leaf, torch.Tensor) and leaf.ndim > 0 for leaf in leaves):
            return None
        for leaf in leaves:
            n = leaf.shape[axis]
            if n != 1 or (size is not None and n != size):
                return None
            size = n
        out.append(pytree.tree_unflatten([leaf.select(axis, 0) for leaf in leaves], spec))
    return out if size == 1 else None


from tfmm.engine import EngineBackend, check_fee_path  # noqa: E402


class TorchNamespace:
    """The Array API namespace of ``array_api_compat`` for torch, with two functions replaced:

    - ``asarray`` of a tensor converts it with ``Tensor.to`` (``clone`` for ``copy=True``), keeping it in the
      autograd graph, as JAX's ``asarray`` does with a tracer; ``torch.asarray`` would warn on every such call
      that its ``requires_grad`` default changed;
    - ``sign`` is ``where(isnan(x), x, sign(x))`` (array_api_compat writes NaN into its result in place, which
      ``torch.func.vmap`` refuses for a batched input)."""

    def __init__(self, base: Any) -> None:
        self._base = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def asarray(self, obj: Any, /, *, dtype: Any = None, device: Any = None, copy: bool | None = None,
                **kwargs: Any) -> torch.Tensor:
        if isinstance(obj, torch.Tensor) and not kwargs:
            out = obj.to(dtype=dtype if dtype is not None else obj.dtype, device=device if device is not None else obj.device)
            return out.clone() if copy and out is obj else out
        return self._base.asarray(obj, dtype=dtype, device=device, copy=copy, **kwargs)

    def sign(self, x: torch.Tensor, /) -> torch.Tensor:
        if x.dtype.is_floating_point:
            return torch.where(torch.isnan(x), x, torch.sign(x))
        return self._base.sign(x)


class TorchBackend(EngineBackend):
    """Machinery only: namespace, control flow, autodiff and conversion; no simulation math.

    ``fee_path``: "auto" (the fused kernel when the prices are on the CPU, or on CUDA with Triton installed;
    else the scan), "kernel" or "scan" (see :class:`tfmm.engine.EngineBackend`). ``num_threads``: see the
    module docstring.
    """

    name = "torch"
    xp = TorchNamespace(array_api_compat.array_namespace(torch.empty(0)))

    # the estimators' affine recurrences as log2(M) rounds of tensor ops instead of an M-step Python loop
    affine_scan_method = "associative"

    def __init__(self, num_threads: int | None = 1, fee_path: str = "auto", weight_path: str = "auto",
                 compile: bool = False) -> None:
        self.fee_path = check_fee_path(fee_path)
        self.weight_path = check_fee_path(weight_path, "weight_path")
        if not isinstance(compile, bool):
            raise TypeError(f"compile={compile!r} is invalid: allowed True or False")
        self.compile = compile
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))

    def fee_kernel(self, settings: Any) -> Callable:
        from tfmm.backends.torch.fee_kernel import fee_path

        return fee_path(settings)

    def uses_fee_kernel(self, prices: Any) -> bool:
        if self.fee_path == "auto":
            if prices.device.type == "cuda":
                from tfmm.backends.torch.fee_path_triton import available  # does not import triton

                return available()
            return prices.device.type == "cpu"
        return self.fee_path == "kernel"

    def weight_kernel(self, settings: Any) -> Callable:
        from tfmm.backends.torch.weight_kernel import weight_path

        return weight_path(settings)

    def uses_weight_kernel(self, outputs: Any) -> bool:
        if self.weight_path == "auto":
            return outputs.device.type == "cpu"
        return self.weight_path == "kernel"

    # -- conversion ------------------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = "float64") -> torch.Tensor:
        """A CPU tensor of ``dtype`` (a copy: later changes to a numpy ``x`` do not reach it)."""
        dt = torch_dtype(dtype)
        if isinstance(x, torch.Tensor):
            return x.to(dtype=dt)
        return torch.as_tensor(np.array(x, dtype=np.dtype(str(dt).removeprefix("torch."))))

    def to_numpy(self, x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    # -- control flow ----------------------------------------------------------------------------------
    def scan(self, step: Callable, carry: Any, xs: Any, checkpoint_every: int | None = None) -> tuple[Any, Any]:
        """``lax.scan`` in eager torch: ``carry, y_t = step(carry, x_t)`` for t along the leading axis of
        ``xs``; returns ``(carry, ys)`` with the ``y_t`` stacked on a new leading axis.
        ``checkpoint_every`` is ignored (no rematerialisation in eager mode)."""
        leaves, spec = pytree.tree_flatten(xs)
        if not leaves:
            raise ValueError("scan needs xs with at least one array (the length comes from its leading axis)")
        length = leaves[0].shape[0]
        if any(leaf.shape[0] != length for leaf in leaves):
            raise ValueError(f"scan: xs leaves differ in length: {[tuple(leaf.shape) for leaf in leaves]}")
        if length == 0:
            return self._empty_scan(step, carry, leaves, spec)
        columns = [leaf.unbind(0) for leaf in leaves]
        ys: list[Any] = []
        for t in range(length):
            carry, y = step(carry, pytree.tree_unflatten([c[t] for c in columns], spec))
            ys.append(y)
        y_leaves = [pytree.tree_flatten(y)[0] for y in ys]
        y_spec = pytree.tree_flatten(ys[0])[1]
        stacked = [torch.stack([row[i] for row in y_leaves], dim=0) for i in range(len(y_leaves[0]))]
        return carry, pytree.tree_unflatten(stacked, y_spec)

    @staticmethod
    def _empty_scan(step: Callable, carry: Any, leaves: list, spec: Any) -> tuple[Any, Any]:
        """Zero steps: the carry unchanged and empty ys of the shapes one step would give."""
        probe = pytree.tree_unflatten([leaf.new_zeros(leaf.shape[1:]) for leaf in leaves], spec)
        with torch.no_grad():
            _, y = step(carry, probe)
        y_leaves, y_spec = pytree.tree_flatten(y)
        return carry, pytree.tree_unflatten([leaf.new_empty((0,) + tuple(leaf.shape)) for leaf in y_leaves], y_spec)

    def associative_scan(self, fn: Callable, elems: Any, axis: int = 0) -> Any:
        """Inclusive scan of the associative ``fn`` (earlier element first) along ``axis`` (Hillis-Steele)."""
        leaves, spec = pytree.tree_flatten(elems)
        length = leaves[0].shape[axis]
        offset = 1
        while offset < length:
            early = pytree.tree_unflatten([leaf.narrow(axis, 0, length - offset) for leaf in leaves], spec)
            late = pytree.tree_unflatten([leaf.narrow(axis, offset, length - offset) for leaf in leaves], spec)
            combined = pytree.tree_flatten(fn(early, late))[0]
            leaves = [torch.cat([leaf.narrow(axis, 0, offset), c], dim=axis) for leaf, c in zip(leaves, combined)]
            offset *= 2
        return pytree.tree_unflatten(leaves, spec)

    # -- element-wise primitives ---------------------------------------------------------------------------
    def stop_gradient(self, x: Any) -> Any:
        return pytree.tree_map(lambda a: a.detach() if isinstance(a, torch.Tensor) else a, x)

    def where(self, cond: Any, x: Any, y: Any) -> Any:
        """Element-wise select. Callers keep both branches finite (the double-where idiom), so the
        gradient of the unselected branch is an exact zero, never NaN."""
        if not isinstance(cond, torch.Tensor):
            cond = torch.as_tensor(np.asarray(cond, dtype=bool))
        if not isinstance(x, torch.Tensor) and not isinstance(y, torch.Tensor):
            dt = torch.float64 if isinstance(x, float) or isinstance(y, float) else None
            x, y = torch.as_tensor(x, dtype=dt), torch.as_tensor(y, dtype=dt)
        return torch.where(cond, x, y)

    def one_hot(self, index: Any, n: int, dtype: Any) -> torch.Tensor:
        """``(..., n)``: 1 at ``index``, 0 elsewhere; a row of zeros for an index outside ``[0, n)``."""
        index = torch.as_tensor(index)
        classes = torch.arange(n, device=index.device)
        return (index[..., None] == classes).to(torch_dtype(dtype))

    def softmax(self, x: Any, axis: int = -1) -> torch.Tensor:
        return torch.softmax(x, dim=axis)

    def sigmoid(self, x: Any) -> torch.Tensor:
        return torch.sigmoid(x)

    def logsumexp(self, x: Any, axis: int = -1) -> torch.Tensor:
        return torch.logsumexp(x, dim=axis)

    def cumsum(self, x: Any, axis: int = 0) -> torch.Tensor:
        return torch.cumsum(x, dim=axis)

    def cummax(self, x: Any, axis: int = 0) -> torch.Tensor:
        """Running maximum along ``axis`` (``torch.cummax``: one op; its gradient goes to the running arg-max,
        the latest index at a tie, where JAX's ``maximum`` splits a tie in half)."""
        return torch.cummax(x, dim=axis).values

    def argmax(self, x: Any, axis: int = -1) -> torch.Tensor:
        """Index of the first maximum (ties go to the lowest index; NaN counts as the maximum)."""
        return torch.argmax(x, dim=axis)

    def dynamic_slice(self, x: Any, start: Any, size: int, axis: int = 0) -> torch.Tensor:
        """``x`` restricted to ``start .. start + size - 1`` along ``axis``. As in ``lax.dynamic_slice_in_dim``,
        a negative ``start`` (int or integer 0-d tensor) counts once from the end (``start + dim``), then
        ``start`` is clamped to ``[0, dim - size]``."""
        dim = x.shape[axis]
        if size > dim:
            raise ValueError(f"dynamic_slice: size={size} exceeds the axis length {dim}")
        if isinstance(start, (int, np.integer)):
            start = int(start) + dim if start < 0 else int(start)
            return x.narrow(axis, min(max(start, 0), dim - size), size)
        start = torch.as_tensor(start)
        if start.ndim == 0 and not _is_batched(start) and not torch.compiler.is_compiling():
            try:
                value = int(start)  # an unbatched tensor start: a view (narrow), no gather / scatter
            except RuntimeError:  # a functorch wrapper that cannot give a Python number
                pass
            else:
                return self.dynamic_slice(x, value, size, axis)
        start = start.to(torch.int64)
        start = torch.where(start < 0, start + dim, start).clamp(0, dim - size)
        return torch.index_select(x, axis, start + torch.arange(size, device=x.device))

    # -- transformations -------------------------------------------------------------------------------------
    def jit(self, fn: Callable, **kwargs: Any) -> Callable:
        """``torch.compile(fn, fullgraph=True, dynamic=False)`` with the ``compile`` option, else ``fn``
        unchanged (eager). Compiled once per shape; the kernels are opaque custom operators inside."""
        if not self.compile:
            return fn
        return torch.compile(fn, fullgraph=True, dynamic=False)

    def jit_value_and_grad(self, fn: Callable, has_aux: bool = False) -> Callable:
        """``value_and_grad(jit(fn))``: torch.compile traces the forward function (AOTAutograd compiles its
        backward too); ``torch.autograd.grad`` runs outside the compiled region."""
        return self.value_and_grad(self.jit(fn), has_aux=has_aux)

    def vmap(self, fn: Callable, in_axes: Any = 0) -> Callable:
        """``torch.func.vmap(fn, in_dims=in_axes)``, outputs batched along axis 0. A batch of size 1 (one
        parameter set, one bout start: the common case) calls ``fn`` on the single element and adds the
        axis to the outputs instead: the same result without functorch's per-op batching overhead."""
        batched = torch.func.vmap(fn, in_dims=in_axes)

        def wrapped(*args: Any) -> Any:
            single = _select_single(args, in_axes)
            if single is None:
                return batched(*args)
            return pytree.tree_map(lambda y: y.unsqueeze(0) if isinstance(y, torch.Tensor) else y, fn(*single))

        return wrapped

    def value_and_grad(self, fn: Callable, has_aux: bool = False) -> Callable:
        """Like ``jax.value_and_grad(fn, has_aux)``: the gradient of the scalar ``fn(params, *args)`` with
        respect to ``params`` (a pytree of float tensors), in ``params``' structure."""

        def wrapped(params: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            leaves, spec = pytree.tree_flatten(params)
            for leaf in leaves:
                if not _is_float_tensor(leaf):
                    raise TypeError(f"value_and_grad: params leaves must be float tensors, got {leaf!r}")
            leaves = [leaf.detach().clone().requires_grad_(True) for leaf in leaves]
            with torch.enable_grad():
                out = fn(pytree.tree_unflatten(leaves, spec), *args, **kwargs)
                value, aux = out if has_aux else (out, None)
                if not isinstance(value, torch.Tensor) or value.ndim != 0 or not value.is_floating_point():
                    raise TypeError(f"value_and_grad needs a real scalar output, got {value!r}")
                grads = torch.autograd.grad(value, leaves, allow_unused=True) if value.requires_grad \
                    else [None] * len(leaves)
            grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves)]
            grads = [g.detach() for g in grads]
            value = value.detach()
            tree = pytree.tree_unflatten(grads, spec)
            if has_aux:
                return (value, self.stop_gradient(aux)), tree
            return value, tree

        return wrapped

    def grad(self, fn: Callable, has_aux: bool = False) -> Callable:
        """Like ``jax.grad``: grads, or ``(grads, aux)`` with ``has_aux``."""
        vg = self.value_and_grad(fn, has_aux=has_aux)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out, grads = vg(*args, **kwargs)
            return (grads, out[1]) if has_aux else grads

        return wrapped

    def make_trainer(self, request: Any, config: Any) -> Any:
        """The torch training adapter (:mod:`tfmm.backends.torch.optim`) for ``tfmm.train``."""
        from tfmm.backends.torch.optim import make_trainer

        return make_trainer(self.engine, request, config)

    def __repr__(self) -> str:
        return (f"TorchBackend(torch={torch.__version__}, threads={torch.get_num_threads()}, "
                f"fee_path={self.fee_path!r}, weight_path={self.weight_path!r}, compile={self.compile})")


def make_backend(num_threads: int | None = 1, fee_path: str = "auto", weight_path: str = "auto",
                 compile: bool = False) -> TorchBackend:
    """The torch backend (by default sets ``torch.set_num_threads(1)``, see the module docstring);
    ``fee_path``, ``weight_path`` and ``compile`` as in :class:`TorchBackend`."""
    return TorchBackend(num_threads=num_threads, fee_path=fee_path, weight_path=weight_path, compile=compile)


__all__ = ["TorchBackend", "make_backend", "torch_dtype"]
