"""Reference weight schedule (docs/math.md sections 3.2-3.4, docs/smooth_mode.md): plain Numba loops, float64.

Coarse recursion, per chunk ``k`` with carry ``a`` (the weights actually reached, starting at ``w_init``):
1. delta rule ``u = a + r_k``; weight rule ``u = alpha a + (1 - alpha) r_k``;
2. ``u = u / sum(u)`` (a zero or non-finite sum is a ``ValueError``);
3. guardrail to ``[w_min, w_max]`` (below);
4. speed limit ``delta = (target - a) / I`` scaled so that ``max|delta| <= max_change`` (below);
5. emit ``(a, delta)``; ``a <- a + I delta``.

Guardrail, exact: passes of { ``x = clip(u, lo, hi)``; ``m_i = 1[x_i <= lo]``;
``x_i = m_i lo + (1 - m_i) x_i (1 - lo sum_j m_j) / sum_j (1 - m_j) x_j``; ``u = x`` }, the first pass
always, then until no entry lies outside ``[lo, hi]``, at most ``n`` passes.
Smooth (temperature ``tau``, weight units): exactly ``n`` passes with ``clip`` replaced by
``lo + softplus_tau(u - lo) - softplus_tau(u - hi)``, ``softplus_tau(z) = tau log(1 + exp(z / tau))``,
and ``m_i = 1 - (1 - m'_i)(1 - sigmoid((lo - u_i) / tau))`` on the pass input, ``m'`` the previous pass's
``m`` (0 before the first pass): a soft OR that keeps a pinned entry pinned (see the notes).

Speed limit, exact: ``M = max(1, max_i |delta_i| / max_change)``; smooth: ``z_i = sqrt((delta_i /
max_change)^2 + tau^2)``, ``M = tau logsumexp(z_1/tau, .., z_n/tau, 1/tau)``; both return ``delta / M``.

Fine weights (per minute): one virtual chunk of ``c`` rows of ``w_init`` first, then block ``k`` of
``c`` rows: linear ``a + j delta`` for ``j < I`` and ``e = a + I delta`` for ``j >= I``; approximately
optimal ``normalise((a + j delta) + a (e/a)^{j/(I+1)})`` for ``j < I`` and ``e`` after; truncated to
``n_rows`` rows (more rows than the blocks provide is a ``ValueError``).

Notes:
- Stopping the exact passes early (rather than always running ``n``) changes results only by rounding:
  a pass on weights inside the bounds that sum to 1 is the identity up to an ulp.
- Smooth guardrail membership: docs/smooth_mode.md recomputes ``m_i = sigmoid((lo - u_i) / tau)`` in
  every pass. An entry pinned by one pass sits exactly at ``lo`` in the next, where that gives
  ``m_i = 1/2`` at every temperature, so wherever the exact map needs a second pass the smooth map does
  not converge to it as ``tau -> 0``, against docs/math.md 3.4 (e.g. ``(.59, .59, .11, -.30)`` with
  ``lo = .09375`` keeps a gap of 2.6e-6 for every ``tau <= 1e-6``). The reference therefore uses the
  soft OR above, as tfmm.core does: it equals the recomputed indicator in exact mode (a pinned entry is
  exactly ``lo``, so ``x <= lo`` holds again) and makes the smooth map converge.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


# --- scalar helpers ------------------------------------------------------------------------------

@njit(cache=True)
def _sigmoid(z: float) -> float:
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def _softplus(z: float, tau: float) -> float:
    """softplus_tau(z) = tau log(1 + exp(z / tau)) = tau logaddexp(0, z / tau)."""
    y = z / tau
    return tau * (max(y, 0.0) + math.log1p(math.exp(-abs(y))))


# --- guardrail and speed limit -------------------------------------------------------------------

@njit(cache=True)
def _guardrail(u_in: np.ndarray, lo: float, hi: float, smooth: bool, tau: float) -> np.ndarray:
    n = u_in.shape[0]
    u = u_in.copy()
    x = np.empty(n)
    m = np.empty(n)
    pinned = np.zeros(n)  # smooth membership of the previous pass
    for p in range(n):
        if not smooth and p > 0:
            inside = True
            for i in range(n):
                if u[i] < lo or u[i] > hi:
                    inside = False
            if inside:
                break
        for i in range(n):
            if smooth:
                x[i] = lo + _softplus(u[i] - lo, tau) - _softplus(u[i] - hi, tau)
                m[i] = 1.0 - (1.0 - pinned[i]) * (1.0 - _sigmoid((lo - u[i]) / tau))
                pinned[i] = m[i]
            else:
                x[i] = min(max(u[i], lo), hi)
                m[i] = 1.0 if x[i] <= lo else 0.0
        n_low = 0.0
        rest = 0.0
        for i in range(n):
            n_low += m[i]
            rest += (1.0 - m[i]) * x[i]
        scale = (1.0 - lo * n_low) / rest
        for i in range(n):
            u[i] = m[i] * lo + (1.0 - m[i]) * x[i] * scale
    return u


@njit(cache=True)
def _speed_limit(delta: np.ndarray, max_change: float, smooth: bool, tau: float) -> np.ndarray:
    n = delta.shape[0]
    if smooth:
        z = np.empty(n + 1)
        for i in range(n):
            z[i] = math.sqrt((delta[i] / max_change) ** 2 + tau * tau) / tau
        z[n] = 1.0 / tau
        z_max = z.max()
        total = 0.0
        for i in range(n + 1):
            total += math.exp(z[i] - z_max)
        big_m = tau * (z_max + math.log(total))
    else:
        big_m = 1.0
        for i in range(n):
            big_m = max(big_m, abs(delta[i]) / max_change)
    return delta / big_m


@njit(cache=True)
def _coarse(outputs: np.ndarray, w_init: np.ndarray, weight_rule: bool, alpha: np.ndarray, lo: float,
            hi: float, max_change: float, period: float, smooth: bool, tau: float):
    n_chunks, n = outputs.shape
    a_out = np.empty((n_chunks, n))
    d_out = np.empty((n_chunks, n))
    a = w_init.copy()
    u = np.empty(n)
    for k in range(n_chunks):
        for i in range(n):
            if weight_rule:
                u[i] = alpha[i] * a[i] + (1.0 - alpha[i]) * outputs[k, i]
            else:
                u[i] = a[i] + outputs[k, i]
        total = u.sum()
        if not (math.isfinite(total) and total != 0.0):
            raise ValueError("coarse weights: the unnormalised weights sum to zero or are not finite")
        target = _guardrail(u / total, lo, hi, smooth, tau)
        delta = _speed_limit((target - a) / period, max_change, smooth, tau)
        a_out[k] = a
        d_out[k] = delta
        a = a + period * delta
    return a_out, d_out


@njit(cache=True)
def _fine(w_init: np.ndarray, a: np.ndarray, delta: np.ndarray, chunk: int, period: int, optimal: bool,
          n_rows: int) -> np.ndarray:
    n = w_init.shape[0]
    out = np.empty((n_rows, n))
    for t in range(min(chunk, n_rows)):
        out[t] = w_init
    for k in range(a.shape[0]):
        end = a[k] + period * delta[k]
        for j in range(chunk):
            t = (k + 1) * chunk + j
            if t >= n_rows:
                return out
            if j >= period:
                out[t] = end
            elif optimal:
                total = 0.0
                for i in range(n):
                    geometric = a[k, i] * math.exp((j / (period + 1.0)) * (math.log(end[i]) - math.log(a[k, i])))
                    out[t, i] = a[k, i] + j * delta[k, i] + geometric
                    total += out[t, i]
                out[t] = out[t] / total
            else:
                out[t] = a[k] + j * delta[k]
    return out


# --- public wrappers -----------------------------------------------------------------------------

def _vector(v, name: str) -> np.ndarray:
    v = np.ascontiguousarray(v, dtype=np.float64)
    if v.ndim != 1 or v.size < 1:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {v.shape}")
    return v


def _check_bounds(w_min: float, w_max: float) -> None:
    if not 0.0 <= w_min < w_max:
        raise ValueError(f"need 0 <= w_min < w_max, got w_min={w_min!r}, w_max={w_max!r}")


def _check_temperature(smooth: bool, temperature: float) -> None:
    if smooth and not temperature > 0:
        raise ValueError(f"temperature must be > 0 in smooth mode, got {temperature!r}")


def guardrail(u, w_min: float, w_max: float, smooth: bool = False, temperature: float = 1e-4) -> np.ndarray:
    """Weights (n,) summing to 1 within ``[w_min, w_max]`` (exact) or the smooth map (math.md 3.2 step 3)."""
    u = _vector(u, "u")
    _check_bounds(w_min, w_max)
    _check_temperature(smooth, temperature)
    return _guardrail(u, float(w_min), float(w_max), bool(smooth), float(temperature))


def speed_limit(delta, max_change: float, smooth: bool = False, temperature: float = 1e-4) -> np.ndarray:
    """Per-minute weight change (n,) with ``max|delta| <= max_change`` (math.md 3.2 step 4)."""
    delta = _vector(delta, "delta")
    if not max_change > 0:
        raise ValueError(f"max_change must be > 0, got {max_change!r}")
    _check_temperature(smooth, temperature)
    return _speed_limit(delta, float(max_change), bool(smooth), float(temperature))


def coarse_weights(
    outputs,
    w_init,
    kind: str,
    alpha,
    w_min: float,
    w_max: float,
    max_change: float,
    interpolation_period: int,
    smooth: bool = False,
    temperature: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Coarse recursion over ``Nc`` rule outputs (math.md 3.2): ``(a, delta)``, both (Nc, n).

    ``a[k]`` is the weight vector at the start of block ``k`` and ``delta[k]`` its per-minute change;
    ``kind`` is ``"delta"`` (u = a + r) or ``"weight"`` (u = alpha a + (1 - alpha) r, alpha (n,)).
    """
    w_init = _vector(w_init, "w_init")
    n = w_init.size
    outputs = np.ascontiguousarray(outputs, dtype=np.float64).reshape(-1, n)
    if kind not in ("delta", "weight"):
        raise ValueError(f"kind must be 'delta' or 'weight', got {kind!r}")
    if kind == "weight":
        if alpha is None:
            raise ValueError("a weight rule needs alpha (n,)")
        alpha = np.ascontiguousarray(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n,)))
    else:
        alpha = np.zeros(n)
    _check_bounds(w_min, w_max)
    if not max_change > 0:
        raise ValueError(f"max_change must be > 0, got {max_change!r}")
    if not interpolation_period >= 1:
        raise ValueError(f"interpolation_period must be >= 1, got {interpolation_period!r}")
    _check_temperature(smooth, temperature)
    return _coarse(outputs, w_init, kind == "weight", alpha, float(w_min), float(w_max), float(max_change),
                   float(interpolation_period), bool(smooth), float(temperature))


def fine_weights(
    w_init,
    a,
    delta,
    chunk_period: int,
    interpolation_period: int,
    interpolation: str,
    n_rows: int,
) -> np.ndarray:
    """Per-minute weights (n_rows, n): ``c`` rows of ``w_init``, then one interpolated block per chunk."""
    w_init = _vector(w_init, "w_init")
    n = w_init.size
    a = np.ascontiguousarray(a, dtype=np.float64).reshape(-1, n)
    delta = np.ascontiguousarray(delta, dtype=np.float64).reshape(-1, n)
    if a.shape != delta.shape:
        raise ValueError(f"a and delta must have one shape, got {a.shape} and {delta.shape}")
    if interpolation not in ("linear", "approx_optimal"):
        raise ValueError(f"interpolation must be 'linear' or 'approx_optimal', got {interpolation!r}")
    chunk, period, n_rows = int(chunk_period), int(interpolation_period), int(n_rows)
    if not 1 <= period <= chunk:
        raise ValueError(f"need 1 <= interpolation_period <= chunk_period, got {period} and {chunk}")
    available = chunk * (a.shape[0] + 1)
    if not 0 <= n_rows <= available:
        raise ValueError(f"n_rows={n_rows} needs rows beyond the {a.shape[0]} blocks (at most {available})")
    return _fine(w_init, a, delta, chunk, period, interpolation == "approx_optimal", n_rows)


__all__ = ["guardrail", "speed_limit", "coarse_weights", "fine_weights"]
