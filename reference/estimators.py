"""Reference estimators on chunk prices (docs/math.md section 4): plain Numba loops, float64.

``x`` is an array of chunk prices ``pbar_0..pbar_{M-1}`` of shape (M, n) (USD); ``lam`` holds one
decay per asset, per chunk step, shape (n,). Every recurrence is initialised on row 0.

- EWMA: ``e_t = lam e_{t-1} + (1 - lam) x_t``, ``e_0 = x_0``.
- Gradient: ``a_t = lam a_{t-1} + (x_t - e_t) / (1 - lam)`` with the new EWMA ``e_t``, ``a_0 = 0``;
  ``g_t = a_t / (b e_t)``, ``b = lam / (1 - lam)^3`` (relative slope per chunk; the new EWMA again).
- Return variance: returns ``rho_m = pbar_{m+1} / pbar_m - 1``; state ``(e, v) = (rho_0, 0)``; for each
  return ``d = rho - e; e += (1 - lam) d; v = lam v + d (lam d)``; output ``sigma2 = (1 - lam) v``.
  Output row ``m`` has seen returns ``0..m`` (prices ``0..m+1``), so row 0 is 0.

The optional alternative gradient denominator of docs/math.md section 4 is not part of the reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _prices(x) -> np.ndarray:
    """Chunk prices as a C-contiguous (M, n) float64 array with M >= 1."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"chunk prices must have shape (M, n) with M >= 1, got {x.shape}")
    return x


def _decays(lam, n: int) -> np.ndarray:
    """Per-asset decays as a C-contiguous (n,) float64 array, each in (0, 1)."""
    lam = np.ascontiguousarray(np.broadcast_to(np.asarray(lam, dtype=np.float64), (n,)))
    if not np.all((lam > 0.0) & (lam < 1.0)):
        raise ValueError(f"lam must lie in (0, 1), got {lam.tolist()}")
    return lam


@njit(cache=True)
def ewma_step(e_prev: np.ndarray, x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """One EWMA update ``e = lam e_prev + (1 - lam) x`` (per asset)."""
    n = x.shape[0]
    e = np.empty(n)
    for i in range(n):
        e[i] = lam[i] * e_prev[i] + (1.0 - lam[i]) * x[i]
    return e


@njit(cache=True)
def gradient_step(a_prev: np.ndarray, e_prev: np.ndarray, x: np.ndarray, lam: np.ndarray):
    """One gradient-estimator update; returns ``(a, e, g)``.

    ``e = lam e_prev + (1 - lam) x``; ``a = lam a_prev + (x - e) / (1 - lam)``;
    ``g = a / (b e)`` with ``b = lam / (1 - lam)^3`` (relative price change per chunk).
    """
    n = x.shape[0]
    e = ewma_step(e_prev, x, lam)
    a = np.empty(n)
    g = np.empty(n)
    for i in range(n):
        a[i] = lam[i] * a_prev[i] + (x[i] - e[i]) / (1.0 - lam[i])
        b = lam[i] / (1.0 - lam[i]) ** 3
        g[i] = a[i] / (b * e[i])
    return a, e, g


@njit(cache=True)
def _ewma(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    m_rows, n = x.shape
    out = np.empty((m_rows, n))
    out[0] = x[0]
    for t in range(1, m_rows):
        out[t] = ewma_step(out[t - 1], x[t], lam)
    return out


@njit(cache=True)
def _ewma_gradient(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    m_rows, n = x.shape
    out = np.zeros((m_rows, n))  # g_0 = 0 because a_0 = 0
    a = np.zeros(n)
    e = x[0].copy()
    for t in range(1, m_rows):
        a, e, g = gradient_step(a, e, x[t], lam)
        out[t] = g
    return out


@njit(cache=True)
def _return_variance(x: np.ndarray, lam: np.ndarray) -> np.ndarray:
    m_rows, n = x.shape
    out = np.empty((m_rows - 1, n))
    for i in range(n):
        e = x[1, i] / x[0, i] - 1.0 if m_rows > 1 else 0.0
        v = 0.0
        for m in range(m_rows - 1):
            rho = x[m + 1, i] / x[m, i] - 1.0
            d = rho - e
            e += (1.0 - lam[i]) * d
            v = lam[i] * v + d * (lam[i] * d)
            out[m, i] = (1.0 - lam[i]) * v
    return out


def ewma(x, lam) -> np.ndarray:
    """EWMA of chunk prices, shape (M, n): ``e_t = lam e_{t-1} + (1 - lam) x_t``, ``e_0 = x_0`` (USD)."""
    x = _prices(x)
    return _ewma(x, _decays(lam, x.shape[1]))


def ewma_gradient(x, lam) -> np.ndarray:
    """Relative price gradient per chunk, shape (M, n): ``g_t = a_t / (b e_t)``, ``g_0 = 0``."""
    x = _prices(x)
    return _ewma_gradient(x, _decays(lam, x.shape[1]))


def return_variance(x, lam) -> np.ndarray:
    """EWMA variance of chunk returns, shape (M - 1, n); row ``m`` uses prices ``0..m+1``."""
    x = _prices(x)
    return _return_variance(x, _decays(lam, x.shape[1]))


__all__ = ["ewma", "ewma_gradient", "return_variance", "ewma_step", "gradient_step"]
