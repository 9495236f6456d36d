"""Fused CPU kernels shared by the array backends, written on plain numpy arrays.

:mod:`tfmm.backends.kernels.fee_path` runs the per-minute arbitrage recurrence of a pool with fees
(math.md 2.3-2.5, the same step as :func:`tfmm.core.g3m.reserves_with_fees`) as one compiled loop over time, with a
hand-written reverse pass. Each backend wraps it in its own autodiff machinery: ``jax.custom_vjp`` around
``jax.pure_callback`` (:mod:`tfmm.backends.jax.fee_kernel`) and ``torch.library.custom_op``
(:mod:`tfmm.backends.torch.fee_kernel`).
"""
