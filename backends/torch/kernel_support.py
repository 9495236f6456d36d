"""Shared pieces of the torch wrappers of the CPU kernels (:mod:`tfmm.backends.torch.fee_kernel`,
:mod:`tfmm.backends.torch.weight_kernel`): host conversion, broadcasting and the batching rule's layout."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
import torch

Tensor = torch.Tensor


def host(x: Tensor) -> np.ndarray:
    """A numpy view (CPU) or copy (any other device) of ``x``."""
    return x.detach().cpu().numpy()


def host_full(tensors: Sequence[Tensor], cores: Sequence[int], batch: tuple) -> list[np.ndarray]:
    """Each tensor as a C-contiguous numpy array of the whole batch shape (float64, or int32 for ``choice``):
    a copy only where a tensor was broadcast (the kernel would copy it anyway).

    Why materialise: the kernel's ``_flat`` hands Numba a read-only view of an argument that already has the
    whole batch shape and a writable copy of one that was broadcast; Numba's array type includes the
    read-only flag, so each pattern of broadcast arguments would compile its own specialisation of the
    kernel (~20-60 s each, then cached on disk). With every argument at the whole shape, the kernel always
    receives read-only views: one specialisation."""
    out = []
    for x, c in zip(tensors, cores):
        a = host(x)
        if a.dtype != np.int32:
            a = a.astype(np.float64, copy=False)
        out.append(np.ascontiguousarray(np.broadcast_to(a, batch + a.shape[a.ndim - c:])))
    return out


def batch_shape(tensors: Sequence[Tensor], cores: Sequence[int]) -> torch.Size:
    return torch.broadcast_shapes(*(tuple(x.shape[: x.ndim - c]) for x, c in zip(tensors, cores)))


def result_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    dtype = tensors[0].dtype
    for x in tensors[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return dtype


def check_ranks(name: str, tensors: Sequence[Tensor], cores: Sequence[int]) -> None:
    for i, (x, c) in enumerate(zip(tensors, cores)):
        if x.ndim < c:
            raise ValueError(f"{name}: argument {i} needs at least {c} dimensions, got shape {tuple(x.shape)}")


def sum_to_shape(g: Tensor, shape: Sequence[int]) -> Tensor:
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast (the VJP of broadcasting)."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(dim=tuple(range(extra)))
    dims = [i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1]
    return g.sum(dim=dims, keepdim=True) if dims else g


def to_front(args: Sequence, in_dims: Sequence, cores: Sequence[int]) -> list:
    """Batched tensors: vmapped axis to the front, then singleton axes up to the largest per-example batch
    rank, so that every argument's leading axes broadcast against the others'. Unbatched ones unchanged."""
    ranks = [(x.ndim - (d is not None)) - c for x, d, c in zip(args, in_dims, cores)]
    top = max(ranks)
    out = []
    for x, d, r in zip(args, in_dims, ranks):
        if d is not None:
            x = x.movedim(d, 0)
            x = x.reshape(x.shape[:1] + (1,) * (top - r) + x.shape[1:])
        out.append(x)
    return out


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run a kernel without changing torch's intra-op thread count: Numba's OpenMP threading layer sets
    OpenMP's thread count, which torch shares, when it launches a parallel batch (so a backend made with
    ``torch.set_num_threads(1)`` would silently run its own ops on every core afterwards)."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
