"""The JAX backend: the primitives of :mod:`tfmm.core` on ``jax.numpy``, ``lax.scan``, jit, vmap, grad.

Side effect: float64 is the default dtype of tfmm, so loading this backend enables ``jax_enable_x64``
(before any JAX array of tfmm's exists). A float32 run does not need it: arrays are created with an
explicit dtype, so float32 runs stay float32 end to end.
"""

from tfmm.backends.jax.backend import JaxBackend, make_backend

__all__ = ["JaxBackend", "make_backend"]
