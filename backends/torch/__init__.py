"""The torch backend: the primitives of :mod:`tfmm.core` on eager torch, ``torch.func.vmap`` and autograd.

Side effect: making the backend calls ``torch.set_num_threads(1)`` (the simulation is a long chain of small
ops, for which extra threads only add contention; see :mod:`tfmm.backends.torch.backend`). Torch's global
default dtype is left alone: every array tfmm creates has an explicit dtype.
"""

from tfmm.backends.torch.backend import TorchBackend, make_backend

__all__ = ["TorchBackend", "make_backend"]
