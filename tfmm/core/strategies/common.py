"""Helpers shared by the strategies (docs/math.md section 5), written once against the Array API.

- ``lambda = sigmoid(logit_lambda)``, capped (hard minimum) at ``lambda(max_memory_days)``, a Python float:
  :func:`tfmm.core.memory.lambda_from_memory_days` refined by Newton steps (:func:`lambda_cap`).
- ``m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3)`` days, computed in the log domain.
- ``k = 2^log_k m(lambda)`` as ``exp(log_k ln 2 + log m)``.
- A centred rule ``r = k (s - sum(k s) / sum(k))``: zero-sum over assets; an asset with ``k_i = 0`` gets 0.

Every function takes the backend ``bk`` and uses only ``bk.xp`` (Array API) and ``bk``'s primitives, so it is
jit-, vmap- and grad-traceable (no Python branching on array values).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from tfmm.core.memory import MINUTES_PER_DAY

LN2 = math.log(2.0)


def lambda_cap(chunk_period: int, max_memory_days: float) -> float:
    """The largest decay allowed: lambda(max_memory_days) for chunks of ``chunk_period`` minutes.

    Cardano's root (tfmm.core.memory) refined by Newton steps on ``y u^3 + u - 1 = 0``, ``u = 1 - lambda``,
    ``y = (m 1440 / (2c))^3 / 6``: the two cube roots of Cardano's formula cancel for long memories in
    short chunks (``1 - lambda`` off by 2e-6 relative at 365 days, c = 1); after refinement it is exact to
    a few ulp. A Python float, shared with the parameter checks of the specs (``tfmm.specs.lambda_cap``).

    Computed with ``math`` on Python floats, not numpy: inside ``torch.compile`` dynamo traces numpy calls
    through ``torch._numpy``, whose ``cbrt`` of a negative number is NaN (every decay became NaN, silently).
    """
    y = (float(max_memory_days) * MINUTES_PER_DAY / (2.0 * chunk_period)) ** 3 / 6.0
    p, q = 1.0 / y, -1.0 / y
    root = math.sqrt(q * q / 4.0 + p ** 3 / 27.0)
    u = math.cbrt(-q / 2.0 + root) + math.cbrt(-q / 2.0 - root)  # Cardano, as lambda_from_memory_days
    for _ in range(3):
        u -= (y * u ** 3 + u - 1.0) / (3.0 * y * u * u + 1.0)
    return 1.0 - u


def lambdas(logit_lambda: Any, chunk_period: int, max_memory_days: float, bk: Any) -> Any:
    """lambda = min(sigmoid(logit_lambda), lambda(max_memory_days)): EWMA decay per chunk, (n,)."""
    xp = bk.xp
    lam = bk.sigmoid(logit_lambda)
    return xp.minimum(lam, xp.full_like(lam, lambda_cap(chunk_period, max_memory_days)))


def log_memory_days(lam: Any, chunk_period: int, bk: Any) -> Any:
    """log m(lambda) = log(2c/1440) + (log 6 + log lambda - 3 log(1 - lambda)) / 3, m in days."""
    xp = bk.xp
    return math.log(2.0 * chunk_period / MINUTES_PER_DAY) + (math.log(6.0) + xp.log(lam) - 3.0 * xp.log1p(-lam)) / 3.0


def memory_days(lam: Any, chunk_period: int, bk: Any) -> Any:
    """m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3): memory length in days."""
    return bk.xp.exp(log_memory_days(lam, chunk_period, bk))


def k_from_log_k(log_k: Any, lam: Any, chunk_period: int, bk: Any) -> Any:
    """k = 2^log_k m(lambda) = exp(log_k ln 2 + log m(lambda)) (weight per unit gradient)."""
    return bk.xp.exp(log_k * LN2 + log_memory_days(lam, chunk_period, bk))


def squareplus(x: Any, bk: Any) -> Any:
    """sp(x) = (x + sqrt(x^2 + 4)) / 2 > 0, sp(0) = 1."""
    return (x + bk.xp.sqrt(x * x + 4.0)) / 2.0


def exponent(raw_exponent: Any, bk: Any) -> Any:
    """q = max(sp(raw_exponent), 1) (power-law exponent of the channel rules)."""
    xp = bk.xp
    q = squareplus(raw_exponent, bk)
    return xp.maximum(q, xp.ones_like(q))


def signed_power(x: Any, q: Any, bk: Any) -> Any:
    """sign(x) |x|^q = sign(x) exp(q log|x|), 0 at x = 0 with finite gradients (double where).

    The sign is a ``where`` on ``x > 0``, not ``xp.sign``: array-api-compat's torch ``sign`` writes NaNs
    through a boolean-mask index, which ``torch.func.vmap`` cannot batch.
    """
    xp = bk.xp
    nonzero = x != 0
    safe = bk.where(nonzero, xp.abs(x), xp.ones_like(x))
    magnitude = xp.exp(q * xp.log(safe))
    signed = bk.where(x > 0, magnitude, -magnitude)
    return bk.where(nonzero, signed, xp.zeros_like(x))


def centred(k: Any, s: Any, bk: Any) -> Any:
    """r = k (s - sum(k s) / sum(k)) over the last (asset) axis; sum(r) = 0. k (n,), s (..., n)."""
    xp = bk.xp
    total = xp.sum(k)
    safe_total = bk.where(total != 0, total, xp.ones_like(total))
    mean = xp.sum(k * s, axis=-1, keepdims=True) / safe_total
    return k * (s - mean)


def param(params: Mapping[str, Any], name: str, like: Any, bk: Any) -> Any:
    """params[name] as an array of ``like``'s dtype (one dtype end to end); an array already of that dtype
    is returned as it is (no copy, and no detach question for a torch tensor that requires grad)."""
    value = params[name]
    if getattr(value, "dtype", None) == like.dtype:
        return value
    return bk.xp.asarray(value, dtype=like.dtype)


__all__ = [
    "lambda_cap", "lambdas", "log_memory_days", "memory_days", "k_from_log_k", "squareplus", "exponent",
    "signed_power", "centred", "param",
]
