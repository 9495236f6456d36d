"""Memory length <-> EWMA decay conversions (docs/math.md section 5).

An EWMA with decay ``lambda`` per chunk of ``c`` minutes has a memory length, in days,

    m(lambda) = (2 c / 1440) * cbrt(6 lambda / (1 - lambda)^3)

and the inverse is the single real root of a cubic (Cardano). ``k`` in the momentum family is
``k = 2^log_k * m(lambda)``, so ``log_k = log2(k_per_day)`` makes ``k`` equal ``k_per_day`` per day of
memory. These helpers work on Python floats and numpy arrays (specs, conversions, tests).
"""

from __future__ import annotations

import numpy as np

MINUTES_PER_DAY = 1440
DAYS_PER_YEAR = 365
MINUTES_PER_YEAR = MINUTES_PER_DAY * DAYS_PER_YEAR


def memory_days_from_lambda(lam, chunk_period: int = MINUTES_PER_DAY):
    """m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3), in days."""
    lam = np.asarray(lam, dtype=np.float64)
    return (2.0 * chunk_period / MINUTES_PER_DAY) * np.cbrt(6.0 * lam / (1.0 - lam) ** 3)


def lambda_from_memory_days(memory_days, chunk_period: int = MINUTES_PER_DAY):
    """Inverse of :func:`memory_days_from_lambda` by Cardano's formula.

    With ``y = (m 1440 / (2c))^3 / 6 = lambda / (1 - lambda)^3`` and ``u = 1 - lambda``:
    ``u^3 + u/y - 1/y = 0``, a depressed cubic with one real root.
    """
    m = np.asarray(memory_days, dtype=np.float64)
    if np.any(~np.isfinite(m)) or np.any(m <= 0):
        raise ValueError(f"memory_days must be finite and > 0, got {memory_days!r}")
    y = (m * MINUTES_PER_DAY / (2.0 * chunk_period)) ** 3 / 6.0
    p = 1.0 / y
    q = -1.0 / y
    root = np.sqrt(q * q / 4.0 + p**3 / 27.0)
    u = np.cbrt(-q / 2.0 + root) + np.cbrt(-q / 2.0 - root)
    lam = 1.0 - u
    return lam if lam.ndim else float(lam)


def logit(x):
    """log(x / (1 - x))."""
    x = np.asarray(x, dtype=np.float64)
    out = np.log(x) - np.log1p(-x)
    return out if out.ndim else float(out)


def logit_lambda_from_memory_days(memory_days, chunk_period: int = MINUTES_PER_DAY):
    """logit(lambda(m)): the unconstrained parameter the optimizer sees."""
    return logit(lambda_from_memory_days(memory_days, chunk_period))


def log_k_from_k_per_day(k_per_day):
    """log_k = log2(k_per_day), so that k = k_per_day * m(lambda)."""
    k = np.asarray(k_per_day, dtype=np.float64)
    if np.any(~np.isfinite(k)) or np.any(k <= 0):
        raise ValueError(f"k_per_day must be finite and > 0, got {k_per_day!r}")
    out = np.log2(k)
    return out if out.ndim else float(out)


def squareplus(x):
    """sp(x) = (x + sqrt(x^2 + 4)) / 2, a smooth positive map with sp(0) = 1."""
    return (x + np.sqrt(x * x + 4.0)) / 2.0


def inverse_squareplus(y):
    """x with sp(x) = y, for y > 0: x = y - 1/y."""
    y = np.asarray(y, dtype=np.float64)
    out = y - 1.0 / y
    return out if out.ndim else float(out)


def minutes_to_days(minutes: float) -> float:
    return minutes / MINUTES_PER_DAY


__all__ = [
    "MINUTES_PER_DAY", "DAYS_PER_YEAR", "MINUTES_PER_YEAR", "memory_days_from_lambda",
    "lambda_from_memory_days", "logit", "logit_lambda_from_memory_days", "log_k_from_k_per_day",
    "squareplus", "inverse_squareplus", "minutes_to_days",
]
