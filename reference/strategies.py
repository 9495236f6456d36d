"""Reference strategy rules (docs/math.md section 5): chunk prices -> rule outputs, plain Numba loops, float64.

A rule maps chunk prices ``pbar_0..pbar_{M-1}`` (shape (M, n), USD) to ``M - 1`` outputs; output
``r_m`` uses ``pbar_0..pbar_{m+1}`` only (the estimators start on ``pbar_0``), so row ``m`` of every
estimator below is taken at chunk ``m + 1``.

Parametrisation (per asset, shape (n,)): ``lambda = sigmoid(logit_lambda)``, capped at
``lambda(max_memory_days)``; memory in days ``m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3)``
with ``c`` the chunk period in minutes; ``k = 2^log_k m(lambda)``; ``sp(x) = (x + sqrt(x^2 + 4)) / 2``.

- momentum: ``r = k (g - sum(k g) / sum(k))`` with ``g`` the relative gradient (estimators.py);
- anti_momentum: the same with ``-k``;
- power_channel: ``s = sign(g) |g / (2 beta)|^q``, ``q = max(sp(raw_exponent), 1)``; ``r = k (s - sum(k s)/sum(k))``;
- mean_reversion_channel: ``E = exp(-g^2 / (2 W^2))``, ``z = pi g / (3 W)``,
  ``s = -A E (z - z^3/6) / 0.5415 + (1 - E) sign(g) |g / (2 beta)|^q``, ``A = sp(sp_amplitude) m(lambda)``,
  ``W = sp(sp_width)``; ``r`` as for the power channel;
- difference_momentum: EWMAs ``e1, e2`` with ``lambda_1 = lambda(logit_lambda)``,
  ``lambda_2 = lambda(logit_lambda_2)``; ``s = 1 - e2 / e1``; ``k = 2^log_k max(m1, m2)``; ``r`` as above;
- min_variance (a weight rule): ``r = softmax(-log(max(sigma2, 1e-30)))``, which is
  ``(1/sigma2_i) / sum_j (1/sigma2_j)`` whenever every ``sigma2 > 1e-30`` and uniform when all are 0
  (docs/smooth_mode.md). Its mixing ``alpha = sigmoid(logit_lambda_2)`` belongs to the coarse recursion.

Decisions where docs/math.md is silent:
- when ``sum(k) == 0`` (every ``k_i`` underflowed to 0) a delta rule outputs zeros instead of 0/0;
- ``lambda(m)`` uses Cardano's formula in the form ``u = C - p / (3 C)``,
  ``C = cbrt(-q/2 + sqrt(q^2/4 + p^3/27))`` (no cancellation between two cube roots for long memories),
  then two Newton steps on ``lambda - y (1 - lambda)^3 = 0`` (``1 - u`` cancels for memories of hours);
  the result is accurate to a few ulp from minutes to years of memory;
- ``balancer`` and ``hodl`` have no rule outputs: asking for them is a ``ValueError``; so is any other
  name (a user strategy registered with ``tfmm.register_strategy``: the reference implements only the
  built-ins);
- a decay that rounds to exactly 0 (``logit_lambda`` below about -745) is a ``ValueError`` (b = 0 in the
  gradient's denominator).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .estimators import _decays, _ewma, _ewma_gradient, _prices, _return_variance

MINUTES_PER_DAY = 1440.0
RULES = ("momentum", "anti_momentum", "power_channel", "mean_reversion_channel", "difference_momentum",
         "min_variance")
RULE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "momentum": ("log_k", "logit_lambda"),
    "anti_momentum": ("log_k", "logit_lambda"),
    "power_channel": ("log_k", "logit_lambda", "raw_exponent"),
    "mean_reversion_channel": ("log_k", "logit_lambda", "raw_exponent", "sp_amplitude", "sp_width"),
    "difference_momentum": ("log_k", "logit_lambda", "logit_lambda_2"),
    "min_variance": ("logit_lambda", "logit_lambda_2"),
}
MEAN_REVERSION_SCALE = 0.5415  # the deployed rule's scaling of the cubic bump
MIN_VARIANCE_FLOOR = 1e-30


# --- scalar maps ---------------------------------------------------------------------------------

@njit(cache=True)
def sigmoid(z: float) -> float:
    """1 / (1 + exp(-z)), evaluated without overflow."""
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    ez = math.exp(z)
    return ez / (1.0 + ez)


@njit(cache=True)
def squareplus(x: float) -> float:
    """sp(x) = (x + sqrt(x^2 + 4)) / 2, positive with sp(0) = 1."""
    return (x + math.sqrt(x * x + 4.0)) / 2.0


@njit(cache=True)
def _memory_days(lam: float, chunk_period: float) -> float:
    """m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3), days."""
    return (2.0 * chunk_period / MINUTES_PER_DAY) * np.cbrt(6.0 * lam / (1.0 - lam) ** 3)


@njit(cache=True)
def _lambda_from_memory_days(memory_days: float, chunk_period: float) -> float:
    """Inverse of m(lambda): with y = (m 1440 / (2c))^3 / 6 = lambda / (1 - lambda)^3 and u = 1 - lambda,
    u solves the depressed cubic u^3 + p u + q = 0 with p = 1/y, q = -1/y (one real root, Cardano)."""
    y = (memory_days * MINUTES_PER_DAY / (2.0 * chunk_period)) ** 3 / 6.0
    p = 1.0 / y
    q = -1.0 / y
    c = np.cbrt(-q / 2.0 + math.sqrt(q * q / 4.0 + p * p * p / 27.0))
    lam = 1.0 - (c - p / (3.0 * c))
    # Two Newton steps on h(lam) = lam - y (1 - lam)^3 restore full relative precision for short
    # memories, where 1 - u cancels (h' = 1 + 3 y (1 - lam)^2 >= 1: well conditioned).
    for _ in range(2):
        lam -= (lam - y * (1.0 - lam) ** 3) / (1.0 + 3.0 * y * (1.0 - lam) ** 2)
    return lam


@njit(cache=True)
def _lambdas(logit_lambda: np.ndarray, chunk_period: float, max_memory_days: float) -> np.ndarray:
    cap = _lambda_from_memory_days(max_memory_days, chunk_period)
    n = logit_lambda.shape[0]
    lam = np.empty(n)
    for i in range(n):
        lam[i] = min(sigmoid(logit_lambda[i]), cap)
    return lam


def lambda_from_memory_days(memory_days: float, chunk_period: float = 1440) -> float:
    """lambda whose memory is ``memory_days`` days with chunks of ``chunk_period`` minutes (Cardano)."""
    if not (math.isfinite(memory_days) and memory_days > 0):
        raise ValueError(f"memory_days must be finite and > 0, got {memory_days!r}")
    return float(_lambda_from_memory_days(float(memory_days), float(chunk_period)))


def lambdas(logit_lambda, chunk_period: float = 1440, max_memory_days: float = 365.0) -> np.ndarray:
    """Decays per chunk, shape (n,): ``min(sigmoid(logit_lambda), lambda(max_memory_days))``."""
    logit_lambda = np.ascontiguousarray(np.atleast_1d(np.asarray(logit_lambda, dtype=np.float64)))
    if max_memory_days <= 0:
        raise ValueError(f"max_memory_days must be > 0, got {max_memory_days!r}")
    return _lambdas(logit_lambda, float(chunk_period), float(max_memory_days))


def memory_days(lam, chunk_period: float = 1440) -> np.ndarray:
    """Memory length in days, shape (n,): ``m(lambda) = (2c/1440) cbrt(6 lambda / (1 - lambda)^3)``."""
    lam = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    return np.array([_memory_days(float(v), float(chunk_period)) for v in lam])


# --- rules on one row ----------------------------------------------------------------------------

@njit(cache=True)
def centred_update(s: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Zero-sum weight change ``r = k (s - sum(k s) / sum(k))``; zeros when ``sum(k) == 0``."""
    n = s.shape[0]
    sum_k = 0.0
    sum_ks = 0.0
    for i in range(n):
        sum_k += k[i]
        sum_ks += k[i] * s[i]
    r = np.zeros(n)
    if sum_k == 0.0:
        return r
    offset = sum_ks / sum_k
    for i in range(n):
        r[i] = k[i] * (s[i] - offset)
    return r


@njit(cache=True)
def _signed_power(g: float, q: float, beta: float) -> float:
    """sign(g) |g / (2 beta)|^q, computed as exp(q log|.|) (0 at g = 0)."""
    z = g / (2.0 * beta)
    if z == 0.0:
        return 0.0
    return math.copysign(math.exp(q * math.log(abs(z))), z)


@njit(cache=True)
def _mean_reversion_signal(g: float, q: float, beta: float, amplitude: float, width: float) -> float:
    """s = -A E (z - z^3/6) / 0.5415 + (1 - E) sign(g) |g/(2 beta)|^q, E = exp(-g^2/(2W^2)), z = pi g/(3W)."""
    envelope = math.exp(-(g * g) / (2.0 * width * width))
    z = math.pi * g / (3.0 * width)
    bump = -amplitude * envelope * (z - z * z * z / 6.0) / MEAN_REVERSION_SCALE
    return bump + (1.0 - envelope) * _signed_power(g, q, beta)


@njit(cache=True)
def min_variance_weights(sigma2: np.ndarray) -> np.ndarray:
    """r = softmax(-log(max(sigma2, 1e-30))): inverse-variance weights, uniform when all are 0."""
    n = sigma2.shape[0]
    z = np.empty(n)
    for i in range(n):
        z[i] = -math.log(max(sigma2[i], MIN_VARIANCE_FLOOR))
    z_max = z.max()
    total = 0.0
    for i in range(n):
        z[i] = math.exp(z[i] - z_max)
        total += z[i]
    return z / total


# --- rules over all chunks -----------------------------------------------------------------------

@njit(cache=True)
def _momentum_scale(log_k: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """k = 2^log_k * memory (per asset)."""
    n = log_k.shape[0]
    k = np.empty(n)
    for i in range(n):
        k[i] = 2.0 ** log_k[i] * memory[i]
    return k


@njit(cache=True)
def _delta_rows(signal: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Rule outputs r_m = centred_update(signal_{m+1}, k) for m = 0..M-2."""
    m_rows, n = signal.shape
    out = np.empty((max(m_rows - 1, 0), n))
    for m in range(m_rows - 1):
        out[m] = centred_update(signal[m + 1], k)
    return out


@njit(cache=True)
def _power_signal(g: np.ndarray, q: np.ndarray, beta: float) -> np.ndarray:
    m_rows, n = g.shape
    s = np.empty((m_rows, n))
    for t in range(m_rows):
        for i in range(n):
            s[t, i] = _signed_power(g[t, i], q[i], beta)
    return s


@njit(cache=True)
def _mean_reversion_rows(g: np.ndarray, q: np.ndarray, beta: float, amplitude: np.ndarray,
                         width: np.ndarray) -> np.ndarray:
    m_rows, n = g.shape
    s = np.empty((m_rows, n))
    for t in range(m_rows):
        for i in range(n):
            s[t, i] = _mean_reversion_signal(g[t, i], q[i], beta, amplitude[i], width[i])
    return s


@njit(cache=True)
def _difference_signal(e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    m_rows, n = e1.shape
    s = np.empty((m_rows, n))
    for t in range(m_rows):
        for i in range(n):
            s[t, i] = 1.0 - e2[t, i] / e1[t, i]
    return s


@njit(cache=True)
def _min_variance_rows(sigma2: np.ndarray) -> np.ndarray:
    out = np.empty(sigma2.shape)
    for m in range(sigma2.shape[0]):
        out[m] = min_variance_weights(sigma2[m])
    return out


def _param(params, name: str, n: int) -> np.ndarray:
    if name not in params:
        raise ValueError(f"missing parameter {name!r}")
    value = np.asarray(params[name], dtype=np.float64)
    try:
        value = np.broadcast_to(value, (n,))
    except ValueError:
        raise ValueError(f"parameter {name!r} must have shape ({n},), got {value.shape}") from None
    return np.ascontiguousarray(value)


def rule_outputs(
    name: str,
    chunk_prices,
    params,
    chunk_period: float = 1440,
    beta: float = 0.5,
    max_memory_days: float = 365.0,
) -> np.ndarray:
    """Rule outputs ``r_0..r_{M-2}``, shape (M - 1, n); ``r_m`` uses chunk prices ``0..m+1`` only.

    Delta rules return zero-sum weight changes; ``min_variance`` returns target weights.
    ``params`` maps the names in ``RULE_PARAMETERS[name]`` to arrays of shape (n,).
    """
    if name not in RULES:
        if name in ("balancer", "hodl"):
            raise ValueError(f"rule {name!r} has no rule outputs; rules: {', '.join(RULES)}")
        raise ValueError(f"strategy {name!r} is not implemented by the reference backend: the reference "
                         f"implements only the built-in strategies ({', '.join(RULES)}, balancer, hodl); run a "
                         f"user rule (tfmm.register_strategy) on 'jax' or 'torch'")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    x = _prices(chunk_prices)
    n = x.shape[1]
    p = {key: _param(params, key, n) for key in RULE_PARAMETERS[name]}
    c = float(chunk_period)
    lam = _decays(_lambdas(p["logit_lambda"], c, float(max_memory_days)), n)

    if name == "min_variance":
        return _min_variance_rows(_return_variance(x, lam))

    memory = np.array([_memory_days(v, c) for v in lam])
    if name == "difference_momentum":
        lam2 = _decays(_lambdas(p["logit_lambda_2"], c, float(max_memory_days)), n)
        memory2 = np.array([_memory_days(v, c) for v in lam2])
        k = _momentum_scale(p["log_k"], np.maximum(memory, memory2))
        return _delta_rows(_difference_signal(_ewma(x, lam), _ewma(x, lam2)), k)

    k = _momentum_scale(p["log_k"], memory)
    g = _ewma_gradient(x, lam)
    if name == "momentum":
        return _delta_rows(g, k)
    if name == "anti_momentum":
        return _delta_rows(g, -k)
    q = np.ascontiguousarray(np.maximum([squareplus(v) for v in p["raw_exponent"]], 1.0))
    if name == "power_channel":
        return _delta_rows(_power_signal(g, q, float(beta)), k)
    amplitude = np.array([squareplus(v) for v in p["sp_amplitude"]]) * memory
    width = np.array([squareplus(v) for v in p["sp_width"]])
    return _delta_rows(_mean_reversion_rows(g, q, float(beta), amplitude, width), k)


__all__ = [
    "RULES", "RULE_PARAMETERS", "sigmoid", "squareplus", "lambda_from_memory_days", "lambdas",
    "memory_days", "centred_update", "min_variance_weights", "rule_outputs",
]
