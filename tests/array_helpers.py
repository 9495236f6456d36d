"""Helpers for the core unit tests that run on every array backend (the ``bk`` fixture of the root
conftest.py): conversions and JAX-style transformations written against the backend protocol only."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

F64_TINY = float(np.finfo(np.float64).tiny)  # smallest normal float64: the floor for outputs that may be subnormal


def to_np(bk: Any, x: Any) -> np.ndarray:
    """``x`` (a backend array, or anything numpy takes) as a numpy array."""
    return np.asarray(bk.to_numpy(x))


def np_dtype(x: Any) -> np.dtype:
    """The numpy dtype of a JAX array or a torch tensor (``torch.float32`` -> ``float32``)."""
    return np.dtype(str(x.dtype).removeprefix("torch."))


def grad(bk: Any, fn: Callable, argnums: int | tuple[int, ...] = 0) -> Callable:
    """``jax.grad(fn, argnums)`` on any backend (``bk.grad`` differentiates w.r.t. its first argument, a pytree).
    The differentiated arguments must be float arrays of the backend."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)

    def wrapped(*args: Any) -> Any:
        def of(diff: tuple) -> Any:
            full = list(args)
            for i, a in zip(nums, diff):
                full[i] = a
            return fn(*full)

        g = bk.grad(of)(tuple(args[i] for i in nums))
        return g[0] if isinstance(argnums, int) else tuple(g)

    return wrapped


__all__ = ["F64_TINY", "to_np", "np_dtype", "grad"]
