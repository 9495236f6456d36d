"""Reference objectives (docs/math.md section 6): plain Numba loops, float64, all to be maximised.

``values`` V (T,) USD, one row per minute of a bout of length ``B = T + 1``; ``reserves0`` R_0 (n,);
``prices`` P (T, n) USD. Daily samples are ``V[::1440]``; variances are population variances.

- daily_log_sharpe: ``sqrt(365) mean(l) / sqrt(var(l) + eps^2)``, ``l = diff(log V[::1440])``;
- daily_sharpe: the same with arithmetic daily returns ``V_{d+1} / V_d - 1``;
- sharpe: arithmetic minute returns, annualised by ``sqrt(525600)``;
- returns: ``V_{T-1} / V_0 - 1``; annualised_returns: ``(V_{T-1} / V_0)^{525600 / (T - 1)} - 1``
  (as ``expm1(525600 / (T - 1) log(V_{T-1} / V_0))``, ``+inf`` on overflow);
- returns_over_hodl: ``V_{T-1} / sum_i R_{0,i} P_{T-1,i} - 1``;
- returns_over_uniform_hodl: the same with holdings ``V_0 / (n P_{0,i})``;
- max_drawdown: ``min_t (V_t - max_{u<=t} V_u) / max_{u<=t} V_u`` (<= 0);
- calmar: ``annualised_returns / max(-max_drawdown, eps)``.

Decisions where docs/math.md is silent:
- the daily objectives need at least 2 daily returns (``T >= 2881``), else a ``ValueError`` naming the bout
  length ``T + 1``; ``sharpe`` needs ``T >= 2`` rows, else a ``ValueError`` likewise. ``all_objectives``
  reports such objectives as NaN so that a short bout still gets every other number;
- calmar divides by ``max(-max_drawdown, eps)``: a series that never falls has a large finite calmar;
- annualised_returns with ``T = 1`` takes ``T - 1 := 1`` (the return is 0), and overflows to ``+inf``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

MINUTES_PER_DAY = 1440
DAYS_PER_YEAR = 365
MINUTES_PER_YEAR = MINUTES_PER_DAY * DAYS_PER_YEAR
OBJECTIVES = (
    "daily_log_sharpe", "daily_sharpe", "sharpe", "returns", "annualised_returns",
    "returns_over_hodl", "returns_over_uniform_hodl", "max_drawdown", "calmar",
)


@njit(cache=True)
def _sharpe_ratio(returns: np.ndarray, periods_per_year: float, eps: float) -> float:
    """sqrt(periods_per_year) mean(r) / sqrt(var(r) + eps^2), population variance (two passes)."""
    count = returns.shape[0]
    mean = 0.0
    for r in returns:
        mean += r
    mean /= count
    var = 0.0
    for r in returns:
        var += (r - mean) ** 2
    var /= count
    return math.sqrt(periods_per_year) * mean / math.sqrt(var + eps * eps)


@njit(cache=True)
def _sampled_returns(values: np.ndarray, stride: int, log_returns: bool) -> np.ndarray:
    """Returns of V[::stride]: log(V_{j+1} / V_j) or V_{j+1} / V_j - 1."""
    count = (values.shape[0] - 1) // stride
    out = np.empty(count)
    for j in range(count):
        before = values[j * stride]
        after = values[(j + 1) * stride]
        out[j] = math.log(after) - math.log(before) if log_returns else after / before - 1.0
    return out


@njit(cache=True)
def _max_drawdown(values: np.ndarray) -> float:
    peak = values[0]
    worst = 0.0
    for v in values:
        peak = max(peak, v)
        worst = min(worst, (v - peak) / peak)
    return worst


@njit(cache=True)
def _hodl_value(holdings: np.ndarray, prices_last: np.ndarray) -> float:
    total = 0.0
    for i in range(holdings.shape[0]):
        total += holdings[i] * prices_last[i]
    return total


def _annualised_returns(values: np.ndarray) -> float:
    """expm1(525600 / (T - 1) * log(V_{T-1} / V_0)); +inf when it overflows (short bouts)."""
    minutes = max(values.shape[0] - 1, 1)
    exponent = MINUTES_PER_YEAR / minutes * (math.log(values[-1]) - math.log(values[0]))
    with np.errstate(over="ignore"):
        return float(np.expm1(np.float64(exponent)))


def objective(name: str, values, reserves0=None, prices=None, eps: float = 1e-8) -> float:
    """One objective of docs/math.md section 6 (see the module docstring); ``reserves0`` and ``prices`` are
    needed by the hodl benchmarks only."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective={name!r} is invalid: allowed one of {', '.join(OBJECTIVES)}")
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 1:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    t = v.size
    if name in ("daily_log_sharpe", "daily_sharpe"):
        if (t - 1) // MINUTES_PER_DAY < 2:
            raise ValueError(
                f"objective {name!r} needs at least 2 daily returns, i.e. a bout length of at least "
                f"{2 * MINUTES_PER_DAY + 2} minutes; got bout length {t + 1}"
            )
        daily = _sampled_returns(v, MINUTES_PER_DAY, name == "daily_log_sharpe")
        return float(_sharpe_ratio(daily, float(DAYS_PER_YEAR), float(eps)))
    if name == "sharpe":
        if t < 2:
            raise ValueError(f"objective 'sharpe' needs at least 1 minute return; got bout length {t + 1}")
        return float(_sharpe_ratio(_sampled_returns(v, 1, False), float(MINUTES_PER_YEAR), float(eps)))
    if name == "returns":
        return float(v[-1] / v[0] - 1.0)
    if name == "annualised_returns":
        return _annualised_returns(v)
    if name == "max_drawdown":
        return float(_max_drawdown(v))
    if name == "calmar":
        return _annualised_returns(v) / max(-_max_drawdown(v), eps)
    p = np.ascontiguousarray(prices, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != t:
        raise ValueError(f"prices must have shape ({t}, n) for objective {name!r}, got {p.shape}")
    if name == "returns_over_hodl":
        holdings = np.ascontiguousarray(reserves0, dtype=np.float64)
        if holdings.shape != (p.shape[1],):
            raise ValueError(f"reserves0 must have shape ({p.shape[1]},), got {holdings.shape}")
    else:  # returns_over_uniform_hodl: V_0 / n in each asset at P_0
        holdings = v[0] / (p.shape[1] * p[0])
    return float(v[-1] / _hodl_value(holdings, p[-1]) - 1.0)


def all_objectives(values, reserves0, prices, eps: float = 1e-8) -> dict[str, float]:
    """Every objective of docs/math.md section 6, name -> float; NaN for the daily ones with fewer than 2 daily
    returns and for ``sharpe`` with fewer than 2 rows."""
    t = np.shape(values)[0]
    out: dict[str, float] = {}
    for name in OBJECTIVES:
        too_short = (t - 1) // MINUTES_PER_DAY < 2 if name.startswith("daily") else name == "sharpe" and t < 2
        out[name] = math.nan if too_short else objective(name, values, reserves0, prices, eps)
    return out


__all__ = ["OBJECTIVES", "objective", "all_objectives"]
