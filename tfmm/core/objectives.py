"""Portfolio objectives of a simulated bout (docs/math.md section 6), all maximised.

Inputs: values V (T,) in USD (T = B - 1 rows), reserves0 R_0 (n,), prices P (T, n) in USD.
Daily samples are V[::1440]; a year is 365 days = 525,600 minutes.

- daily_log_sharpe = sqrt(365) mean(l) / sqrt(var(l) + eps^2), l = diff(log V[::1440]), population variance.
- daily_sharpe: the same with arithmetic daily returns V_{d+1}/V_d - 1.
- sharpe: the same with minute returns, annualised by sqrt(525600).
- returns = V_{T-1}/V_0 - 1; annualised_returns = expm1((525600/(T-1)) log(V_{T-1}/V_0)).
- returns_over_hodl = V_{T-1} / (R_0 . P_{T-1}) - 1; returns_over_uniform_hodl with V_0/(n P_{0,i}) units of
  each asset. Both benchmarks carry no gradient (bk.stop_gradient).
- max_drawdown = min_t (V_t - max_{u<=t} V_u) / max_{u<=t} V_u (<= 0);
  calmar = annualised_returns / max(-max_drawdown, eps).

Decisions where docs/math.md is silent:

- daily_sharpe and sharpe use the same hardened denominator sqrt(var + eps^2) as daily_log_sharpe, so a
  constant series gives 0 with a finite gradient.
- :func:`objective` raises ``ValueError`` for a daily objective with fewer than 2 daily returns, and for
  sharpe with fewer than 2 rows (shapes are static, so this is decided before tracing);
  :func:`all_objectives` reports such objectives as NaN instead, so that the metrics of a short simulation
  still give every other number.
- annualised_returns with T = 1 uses T - 1 := 1 (the return is then 0, not NaN).
- calmar divides by max(-max_drawdown, eps): a series that never falls has a large finite calmar.
- The running maximum of max_drawdown is the backend primitive ``bk.cummax`` (JAX: a sequential
  ``lax.scan``, faster on XLA:CPU than an associative scan; torch: ``torch.cummax``, one op where a Python
  loop over a year of minutes took 27 s).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from tfmm.core.memory import MINUTES_PER_DAY, MINUTES_PER_YEAR, DAYS_PER_YEAR

EPS = 1e-8


def _sharpe_ratio(x: Any, periods_per_year: float, eps: float, bk: Any) -> Any:
    """sqrt(periods_per_year) mean(x) / sqrt(var(x) + eps^2), population variance."""
    xp = bk.xp
    mean = xp.mean(x)
    var = xp.mean((x - mean) ** 2)
    return math.sqrt(periods_per_year) * mean / xp.sqrt(var + eps * eps)


def _n_daily_returns(n_values: int) -> int:
    """Number of daily returns of V[::1440] for T = n_values rows."""
    return max(-(-n_values // MINUTES_PER_DAY) - 1, 0)


def _check_daily(name: str, values: Any) -> None:
    t = values.shape[0]
    if _n_daily_returns(t) < 2:
        raise ValueError(
            f"objective {name!r} needs at least 2 daily returns, i.e. a bout length of at least "
            f"{2 * MINUTES_PER_DAY + 2} minutes; got length={t + 1} ({t} value rows)"
        )


def daily_log_sharpe(values: Any, bk: Any, eps: float = EPS) -> Any:
    """sqrt(365) mean(l) / sqrt(var(l) + eps^2), l = diff(log V[::1440]) (daily log returns)."""
    _check_daily("daily_log_sharpe", values)
    log_v = bk.xp.log(values[::MINUTES_PER_DAY])
    return _sharpe_ratio(log_v[1:] - log_v[:-1], DAYS_PER_YEAR, eps, bk)


def daily_sharpe(values: Any, bk: Any, eps: float = EPS) -> Any:
    """sqrt(365) mean(r) / sqrt(var(r) + eps^2), r = V_{d+1} / V_d - 1 on V[::1440]."""
    _check_daily("daily_sharpe", values)
    daily = values[::MINUTES_PER_DAY]
    return _sharpe_ratio(daily[1:] / daily[:-1] - 1.0, DAYS_PER_YEAR, eps, bk)


def sharpe(values: Any, bk: Any, eps: float = EPS) -> Any:
    """sqrt(525600) mean(r) / sqrt(var(r) + eps^2), r = V_{t+1} / V_t - 1 (minute returns)."""
    if values.shape[0] < 2:
        raise ValueError(f"objective 'sharpe' needs at least 2 value rows (bout length >= 3); got length="
                         f"{values.shape[0] + 1}")
    return _sharpe_ratio(values[1:] / values[:-1] - 1.0, MINUTES_PER_YEAR, eps, bk)


def returns(values: Any, bk: Any) -> Any:
    """V_{T-1} / V_0 - 1."""
    return values[-1] / values[0] - 1.0


def annualised_returns(values: Any, bk: Any) -> Any:
    """(V_{T-1} / V_0)^{525600 / (T - 1)} - 1, as expm1(525600 / (T - 1) log(V_{T-1} / V_0)) (+inf on overflow)."""
    minutes = max(values.shape[0] - 1, 1)
    return bk.xp.expm1((MINUTES_PER_YEAR / minutes) * bk.xp.log(values[-1] / values[0]))


def returns_over_hodl(values: Any, reserves0: Any, prices: Any, bk: Any) -> Any:
    """V_{T-1} / (sum_i R_{0,i} P_{T-1,i}) - 1; the benchmark carries no gradient."""
    benchmark = bk.stop_gradient(bk.xp.sum(reserves0 * prices[-1]))
    return values[-1] / benchmark - 1.0


def returns_over_uniform_hodl(values: Any, prices: Any, bk: Any) -> Any:
    """V_{T-1} / (sum_i V_0 / (n P_{0,i}) P_{T-1,i}) - 1; the benchmark carries no gradient."""
    n = prices.shape[-1]
    benchmark = bk.stop_gradient(values[0] * bk.xp.sum(prices[-1] / prices[0]) / n)
    return values[-1] / benchmark - 1.0


def max_drawdown(values: Any, bk: Any) -> Any:
    """min_t (V_t - max_{u<=t} V_u) / max_{u<=t} V_u, in [-1, 0]."""
    peak = bk.cummax(values, axis=0)  # the backend's running maximum
    return bk.xp.min(values / peak - 1.0)


def calmar(values: Any, bk: Any, eps: float = EPS) -> Any:
    """annualised_returns / max(-max_drawdown, eps)."""
    xp = bk.xp
    drawdown = -max_drawdown(values, bk)
    return annualised_returns(values, bk) / xp.maximum(drawdown, xp.full_like(drawdown, eps))


_OBJECTIVES: dict[str, Callable[..., Any]] = {
    "daily_log_sharpe": lambda v, r0, p, bk, eps: daily_log_sharpe(v, bk, eps),
    "daily_sharpe": lambda v, r0, p, bk, eps: daily_sharpe(v, bk, eps),
    "sharpe": lambda v, r0, p, bk, eps: sharpe(v, bk, eps),
    "returns": lambda v, r0, p, bk, eps: returns(v, bk),
    "annualised_returns": lambda v, r0, p, bk, eps: annualised_returns(v, bk),
    "returns_over_hodl": lambda v, r0, p, bk, eps: returns_over_hodl(v, r0, p, bk),
    "returns_over_uniform_hodl": lambda v, r0, p, bk, eps: returns_over_uniform_hodl(v, p, bk),
    "max_drawdown": lambda v, r0, p, bk, eps: max_drawdown(v, bk),
    "calmar": lambda v, r0, p, bk, eps: calmar(v, bk, eps),
}
OBJECTIVES: tuple[str, ...] = tuple(_OBJECTIVES)  # the objectives that exist (tfmm.specs validates against it)


def objective(name: str, values: Any, reserves0: Any, prices: Any, bk: Any, eps: float = EPS) -> Any:
    """Objective ``name`` (a scalar, maximised) of values (T,), initial reserves (n,), prices (T, n)."""
    if name not in _OBJECTIVES:
        raise ValueError(f"objective={name!r} is invalid: allowed one of {', '.join(OBJECTIVES)}")
    return _OBJECTIVES[name](values, reserves0, prices, bk, eps)


def all_objectives(values: Any, reserves0: Any, prices: Any, bk: Any, eps: float = EPS) -> dict[str, Any]:
    """Every objective in OBJECTIVES; NaN for those the bout is too short for (see module doc)."""
    xp = bk.xp
    t = values.shape[0]
    short = {name for name in OBJECTIVES if name.startswith("daily")} if _n_daily_returns(t) < 2 else set()
    if t < 2:
        short.add("sharpe")
    out = {}
    for name in OBJECTIVES:
        if name in short:
            out[name] = xp.full_like(values[0], math.nan)
        else:
            out[name] = objective(name, values, reserves0, prices, bk, eps)
    return out


__all__ = [
    "EPS", "objective", "all_objectives", "daily_log_sharpe", "daily_sharpe", "sharpe", "returns",
    "annualised_returns", "returns_over_hodl", "returns_over_uniform_hodl", "max_drawdown", "calmar",
]
