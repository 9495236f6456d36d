"""The JAX backend: the primitives of :mod:`tfmm.core` on ``jax.numpy``, ``lax.scan``, jit, vmap, grad.

Side effect: float64 is the default dtype of tfmm, so loading this backend enables ``jax_enable_x64``
(before any JAX array of tfmm's exists). A float32 run does not need it: arrays are created with an
explicit dtype, so float32 runs stay float32 end to end. It also appends an XLA:CPU option to
``XLA_FLAGS`` that makes ``lax.scan`` loops 4-15x faster on CPU; like x64, it takes effect only if this
backend is loaded (``tfmm.use("jax")``) before the process runs its first JAX computation.
"""

from tfmm.backends.jax.backend import JaxBackend, make_backend

__all__ = ["JaxBackend", "make_backend"]
