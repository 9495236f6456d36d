"""Specs: frozen, validated descriptions of a pool, a strategy, smoothing and training.

Every bad value raises ``ValueError`` (or ``TypeError`` for a wrong kind of value) naming the field,
the value and the allowed range. Checks that need the number of assets or the length of the price
data run in :func:`check_compatible`, called when a pool meets prices and a strategy.
Specs round-trip through TOML (:func:`to_toml`, :func:`from_toml`, :func:`load_config`); a strategy is
saved by name, so a user strategy (:func:`register_strategy`) loads wherever it is registered.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import tomli_w

from tfmm.core.memory import (
    MINUTES_PER_DAY,
    lambda_from_memory_days,
    log_k_from_k_per_day,
    logit_lambda_from_memory_days,
)
from tfmm.core import objectives as core_objectives, weights as core_weights
from tfmm.core.strategies import registry, rule_kind as strategy_rule_kind
from tfmm.core.strategies.common import lambda_cap
from tfmm.core.strategies.registry import MIXING_PARAMETER, LiveMapping, LiveNames, StrategyRecord
from tfmm.records import DTYPES

# The largest momentum scale k = 2^log_k m(lambda) accepted (about 1.1e12). The weight update k (g - mean)
# is added to weights of order 1 and the sum renormalised; its float64 rounding is about k |g| 2^-52, i.e.
# 2.4e-7 of the weight at a 1% chunk move with k = 2^40, but of order 1 at k = 2^60 (log_k >= 62 on hourly
# chunks), where JAX, torch and the reference then return different weights, all finite.
K_MAX = 2.0**40

# Live views of the strategy registry (tfmm.core.strategies.registry), so they include user strategies
# registered with register_strategy. Trainable parameters of each strategy (docs/math.md section 5), all per
# asset: shape (n,) or (sets, n).
STRATEGY_PARAMETERS: Mapping[str, tuple[str, ...]] = LiveMapping(registry.parameters_by_name)
DELTA_RULES: Sequence[str] = LiveNames(lambda: registry.names_of_kind("delta"))
WEIGHT_RULES: Sequence[str] = LiveNames(lambda: registry.names_of_kind("weight"))
# parameters whose sigmoid is an EWMA decay (capped at lambda(max_memory_days)), per strategy
EWMA_LOGITS: Mapping[str, tuple[str, ...]] = LiveMapping(
    lambda: {name: registry.lookup(name).decay_parameters for name in registry.names()})
OBJECTIVES = core_objectives.OBJECTIVES  # defined with the math, once
INTERPOLATIONS = core_weights.INTERPOLATIONS
SIGNATURE_SETS = ("auto", "all", "pairwise")
SELECTIONS = ("softmax", "straight_through", "hard")
MODES = ("exact", "smooth")


def _fail(field_name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field_name}={value!r} is invalid: allowed {allowed}")


def _number(field_name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{field_name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise _fail(field_name, value, "a finite number")
    return value


def _integer(field_name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{field_name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise _fail(field_name, value, f"an integer >= {minimum}")
    return int(value)


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise _fail(field_name, value, "one of " + ", ".join(repr(a) for a in allowed))
    return value


def _rate(field_name: str, value: Any, low: float, high: float | None, high_open: bool = True):
    """A scalar or per-minute array in [low, high) (or [low, inf) when high is None)."""
    if np.ndim(value) == 0:
        arr = np.asarray(_number(field_name, value))
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{field_name} must be a number or a 1-D array of numbers") from exc
        if arr.ndim != 1:
            raise _fail(field_name, f"array of shape {arr.shape}", "a scalar or a 1-D per-minute array")
    bad = ~np.isfinite(arr) | (arr < low)
    if high is not None:
        bad |= (arr >= high) if high_open else (arr > high)
    if np.any(bad):
        shown = float(arr.flat[int(np.argmax(bad.ravel()))])
        bracket = ")" if high_open else "]"
        rng = f"[{low}, {high}{bracket}" if high is not None else f">= {low}"
        raise _fail(field_name, shown, f"values in {rng}")
    return float(arr) if arr.ndim == 0 else arr


@dataclass(frozen=True, eq=False)
class Pool:
    """A TFMM pool: fees, arbitrage costs, guardrails and the weight-update schedule.

    fee: fraction of the input amount, in [0, 1) (scalar or per-minute array aligned with price rows);
    gas: USD per arbitrage, >= 0; arb_fee: arbitrageur's external cost rate, in [0, 1);
    initial_value: USD; min_weight: lower weight bound (None -> 0.1 / n), max weight 1 - (n-1) min_weight;
    max_change: largest weight change per minute; chunk_period: minutes per strategy update;
    interpolation_period: minutes over which a chunk's change is spread (None -> chunk_period).
    """

    fee: float | np.ndarray = 0.003
    gas: float | np.ndarray = 0.0
    arb_fee: float | np.ndarray = 0.0
    initial_value: float = 1e6
    min_weight: float | None = None
    max_change: float = 3e-4
    chunk_period: int = 1440
    interpolation_period: int | None = None
    interpolation: str = "linear"
    signatures: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fee", _rate("fee", self.fee, 0.0, 1.0))
        object.__setattr__(self, "gas", _rate("gas", self.gas, 0.0, None))
        object.__setattr__(self, "arb_fee", _rate("arb_fee", self.arb_fee, 0.0, 1.0))
        value = _number("initial_value", self.initial_value)
        if value <= 0:
            raise _fail("initial_value", value, "> 0 (USD)")
        object.__setattr__(self, "initial_value", value)
        if self.min_weight is not None:
            mw = _number("min_weight", self.min_weight)
            if not 0.0 < mw < 0.5:
                raise _fail("min_weight", mw, "None or in (0, 0.5) (and min_weight * n_assets < 1)")
            object.__setattr__(self, "min_weight", mw)
        mc = _number("max_change", self.max_change)
        if mc <= 0:
            raise _fail("max_change", mc, "> 0 (weight per minute)")
        object.__setattr__(self, "max_change", mc)
        _integer("chunk_period", self.chunk_period, 1)
        if self.interpolation_period is not None:
            ip = _integer("interpolation_period", self.interpolation_period, 1)
            if ip > self.chunk_period:
                raise _fail("interpolation_period", ip, f"0 < interpolation_period <= chunk_period ({self.chunk_period})")
        _choice("interpolation", self.interpolation, INTERPOLATIONS)
        _choice("signatures", self.signatures, SIGNATURE_SETS)

    @property
    def interpolation_minutes(self) -> int:
        """I: the interpolation period in minutes (chunk_period when not set)."""
        return self.chunk_period if self.interpolation_period is None else self.interpolation_period

    @property
    def has_fees(self) -> bool:
        """True unless fee, gas and arb_fee are all zero (then the closed-form path applies)."""
        return any(np.any(np.asarray(x) != 0) for x in (self.fee, self.gas, self.arb_fee))

    def weight_bounds(self, n_assets: int) -> tuple[float, float]:
        """(w_min, w_max) with w_min default 0.1/n and w_max = 1 - (n-1) w_min."""
        w_min = 0.1 / n_assets if self.min_weight is None else self.min_weight
        if w_min * n_assets >= 1:
            raise _fail("min_weight", w_min, f"min_weight * n_assets < 1 (n_assets={n_assets})")
        return w_min, 1.0 - (n_assets - 1) * w_min

    def signature_set(self, n_assets: int) -> str:
        """"all" for n <= 6 when signatures="auto", else "pairwise"."""
        if self.signatures == "auto":
            return "all" if n_assets <= 6 else "pairwise"
        return self.signatures

    def to_dict(self) -> dict[str, Any]:
        return _to_plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def _as_param(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"params[{name!r}] must be an array of numbers, got {value!r}") from exc
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0:
        raise _fail(f"params[{name!r}]", f"array of shape {arr.shape}", "shape (n_assets,) or (n_sets, n_assets)")
    if not np.all(np.isfinite(arr)):
        raise _fail(f"params[{name!r}]", arr.tolist(), "finite values")
    arr.setflags(write=False)
    return arr


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) in float64 without overflow warnings (0 and 1 where it rounds there)."""
    with np.errstate(over="ignore", under="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _squareplus(x: np.ndarray) -> np.ndarray:
    """sp(x) = (x + sqrt(x^2 + 4)) / 2 exactly as the core evaluates it (float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (x + np.sqrt(x * x + 4.0)) / 2.0


def _log_memory_days(lam: np.ndarray, chunk_period: float) -> np.ndarray:
    """log m(lambda), as the core computes it (float64)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return math.log(2.0 * chunk_period / MINUTES_PER_DAY) + (
            math.log(6.0) + np.log(lam) - 3.0 * np.log1p(-lam)) / 3.0


def _memory_cap_problem(cap: float, chunk_period: int, max_memory_days: float) -> str | None:
    """Why the decay cap ``lambda(max_memory_days)`` is unusable in float64 (None when it is usable)."""
    m_cap = math.exp(_log_memory_days(np.asarray(cap), chunk_period)) if 0.0 < cap < 1.0 else float("nan")
    if 0.0 < cap < 1.0 and abs(m_cap / max_memory_days - 1.0) < 1e-6:
        return None
    return (f"max_memory_days={max_memory_days!r} is invalid: its decay lambda(max_memory_days) is not "
            f"representable in float64 for chunk_period={chunk_period} (lambda={cap!r}); allowed a memory "
            f"cap of a few minutes to ~1e9 days")


def _checked_log_memory(x: np.ndarray, key: str, cap: float | None, chunk_period: int | None,
                        max_memory_days: float, report: Callable[..., None]) -> np.ndarray:
    """log m(lambda) in days of the decay logit ``x`` (``lambda = min(sigmoid(x), cap)``), reporting a
    lambda that is 0, or rounds to 1 under the cap. Without a chunk period: the lower bound over chunk
    periods, m at c = 1 minute, capped at ``max_memory_days``."""
    sig = _sigmoid(x)
    report(lambda i, j: "lambda = sigmoid(logit) is 0 in float64 (logit below about -745); allowed "
                        "logit values whose sigmoid is in (0, 1)", key, sig <= 0.0)
    if cap is None:
        return np.minimum(_log_memory_days(sig, 1), math.log(max_memory_days))
    lam = np.minimum(sig, cap)
    report(lambda i, j: f"lambda = min(sigmoid(logit), lambda(max_memory_days)) rounds to 1 in float64 "
                        f"(max_memory_days={max_memory_days})", key, lam >= 1.0)
    return _log_memory_days(lam, chunk_period)


def parameter_problems(name: str, params: Mapping[str, Any], chunk_period: int | None,
                       max_memory_days: float) -> list[str | None]:
    """Why each parameter set is out of range (None where it is fine), in float64 as the core computes.

    Which parameters are EWMA decay logits, the momentum scale ``log_k`` and squareplus inputs is the
    strategy's registry record (user strategies: their ``decay_parameters`` only).
    Derived quantities must be usable: every EWMA decay ``lambda = min(sigmoid(logit), lambda(max_memory_days))``
    in (0, 1); ``k = 2^log_k m(lambda)`` finite and at most :data:`K_MAX`; ``sp(raw_exponent)``,
    ``sp(sp_amplitude)`` finite and ``sp(sp_width)`` finite and > 0. With ``chunk_period=None`` (no pool
    known yet) only what fails for every chunk period is reported: lambda = 0, and k already too large at
    the shortest chunk (1 minute), since m(lambda) grows with the chunk period.
    params: name -> (n,) or (sets, n) arrays. Returns one entry per set (a single entry without a set axis).
    """
    record = registry.lookup(name)
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    if not arrays:
        return [None]
    first = next(iter(arrays.values()))
    n_sets = first.shape[0] if first.ndim == 2 else None
    problems: list[str | None] = [None] * (n_sets or 1)

    def report(message_of: Any, key: str, bad: np.ndarray) -> None:
        bad2 = bad.reshape(n_sets or 1, -1)
        arr2 = arrays[key].reshape(n_sets or 1, -1)
        for i in np.flatnonzero(bad2.any(axis=1)):
            if problems[i] is None:
                j = int(np.argmax(bad2[i]))
                label = f"params[{key!r}]" + (f"[set {i}, asset {j}]" if n_sets else f"[{j}]")
                problems[i] = f"{label}={float(arr2[i, j])!r} is invalid: {message_of(i, j)}"

    cap = None
    if chunk_period is not None:
        cap = lambda_cap(chunk_period, max_memory_days)
        cap_problem = _memory_cap_problem(cap, chunk_period, max_memory_days)
        if cap_problem is not None:
            return [cap_problem] * len(problems)
    log_m = {key: _checked_log_memory(arrays[key], key, cap, chunk_period, max_memory_days, report)
             for key in record.decay_parameters}
    scale = record.scale_parameter
    if scale in arrays and log_m:
        lm = np.maximum.reduce(list(log_m.values()))
        with np.errstate(over="ignore", invalid="ignore"):
            log2_k = arrays[scale] + lm / math.log(2.0)
            k = np.exp2(log2_k)
        def k_message(i, j):
            kij = float(k.reshape(len(problems), -1)[i, j])
            bound = float((math.log2(K_MAX) - lm / math.log(2.0)).reshape(len(problems), -1)[i, j])
            value = (f"at least {kij:.3g} in any pool" if chunk_period is None
                     else f"{kij:.3g} with chunk_period={chunk_period}")
            where = "with a 1-minute chunk" if chunk_period is None else "here"
            return (f"k = 2^log_k m(lambda) is {value}, above 2^40 (about 1.1e12): float64 rounding of the "
                    f"weight update would decide the weights; allowed log_k <= {bound:.4g} {where}")

        report(k_message, scale, ~np.isfinite(k) | (k > K_MAX))
    for key in record.squareplus_parameters:
        if key in arrays:
            sp = _squareplus(arrays[key])
            report(lambda i, j: f"sp({key}) is not finite in float64; allowed |{key}| < 1e150",
                   key, ~np.isfinite(sp))
            if key == "sp_width":
                report(lambda i, j: "the channel width sp(sp_width) is 0 in float64; allowed sp_width > -6e7",
                       key, np.isfinite(sp) & (sp <= 0.0))
    return problems


# parameters Strategy.from_memory_days derives from human units, for built-in and user strategies alike
HUMAN_UNIT_PARAMETERS = ("log_k", "logit_lambda", "logit_lambda_2", "raw_exponent", "sp_amplitude", "sp_width")


def _human_unit_values(memory_days: float, memory_days_2: float, k_per_day: float, exponent: float,
                       chunk_period: int) -> dict[str, float]:
    """log_k = log2(k_per_day); logit_lambda(_2) = logit(lambda(memory_days(_2), c)); raw_exponent with
    sp(raw_exponent) = exponent; sp_amplitude = sp_width = 0 (amplitude and width 1)."""
    return {
        "log_k": log_k_from_k_per_day(k_per_day),
        "logit_lambda": logit_lambda_from_memory_days(memory_days, chunk_period),
        "logit_lambda_2": logit_lambda_from_memory_days(memory_days_2, chunk_period),
        "raw_exponent": float(exponent) - 1.0 / float(exponent),
        "sp_amplitude": 0.0,
        "sp_width": 0.0,
    }


def _initial_values(record: StrategyRecord, memory_days: float, memory_days_2: float, k_per_day: float,
                    exponent: float, chunk_period: int) -> dict[str, Any]:
    """Initial value of each parameter of ``record``: from human units by name, else the record's default."""
    derived = _human_unit_values(memory_days, memory_days_2, k_per_day, exponent, chunk_period)
    values = {}
    for key in record.parameters:
        if key in record.defaults:
            values[key] = record.defaults[key]
        elif key in derived:
            values[key] = derived[key]
        else:
            raise ValueError(
                f"Strategy.from_memory_days cannot initialise parameter {key!r} of strategy {record.name!r}: it is "
                f"not one of {list(HUMAN_UNIT_PARAMETERS)} and has no default; register the strategy with "
                f"defaults={{{key!r}: ...}} or build tfmm.Strategy({record.name!r}, params=...)")
    return values


def check_parameters(strategy: "Strategy", chunk_period: int | None = None) -> None:
    """Raise ValueError naming the first parameter whose derived quantity is out of range
    (see :func:`parameter_problems`)."""
    problems = parameter_problems(strategy.name, strategy.params, chunk_period, strategy.max_memory_days)
    bad = [p for p in problems if p is not None]
    if bad:
        more = f" ({len(bad) - 1} more parameter sets are out of range)" if len(bad) > 1 else ""
        raise ValueError(f"strategy {strategy.name!r}: {bad[0]}{more}")


@dataclass(frozen=True, eq=False)
class Strategy:
    """A rule name, its unconstrained parameters and the initial weights.

    params: name -> array of shape (n,) or (sets, n) (a leading parameter-set axis trains sets in parallel);
    initial_weights: (n,) positive, summing to 1 (not trained); beta: power-channel scale;
    max_memory_days: cap on every memory length (lambda <= lambda(max_memory_days));
    chunk_period: the chunk period (minutes) the parameters were converted for by :meth:`from_memory_days`
    (None: not recorded); a pool with another chunk period is then refused, since the same lambda means a
    memory ``chunk_period`` times longer or shorter.

    Parameters whose derived quantities are unusable (lambda = sigmoid(logit) = 0, k = 2^log_k m(lambda)
    above 2^40 or infinite, ...; :func:`parameter_problems`) are rejected here when they are so for every
    pool, and otherwise when the strategy meets a pool (:func:`check_compatible`).
    """

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    initial_weights: Any = None
    beta: float = 0.5
    max_memory_days: float = 365.0
    chunk_period: int | None = None

    def __post_init__(self) -> None:
        names = registry.lookup(self.name).parameters
        if not isinstance(self.params, Mapping):
            raise TypeError(f"params must be a mapping of name -> array, got {type(self.params).__name__}")
        expected = set(names)
        given = set(self.params)
        if given != expected:
            missing, unknown = sorted(expected - given), sorted(given - expected)
            hints = [f"{u!r} -> {close[0]!r}" for u in unknown
                     for close in [difflib.get_close_matches(str(u), sorted(expected), n=1)] if close]
            raise ValueError(
                f"params for strategy {self.name!r}: missing {missing}, unknown {unknown}; "
                f"expected exactly {sorted(expected)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
            )
        params = {k: _as_param(k, self.params[k]) for k in names}
        shapes = {k: v.shape for k, v in params.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"params must all have one shape, got {shapes}")
        object.__setattr__(self, "params", params)
        if self.initial_weights is None:
            if not params:
                raise ValueError(f"initial_weights is required for strategy {self.name!r}")
            n = next(iter(params.values())).shape[-1]
            w = np.full(n, 1.0 / n)
        else:
            try:
                w = np.array(self.initial_weights, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"initial_weights must be an array of numbers, got {self.initial_weights!r}") from None
        if w.ndim != 1 or w.size < 2:
            raise _fail("initial_weights", w.tolist(), "a 1-D array of n_assets >= 2 weights")
        if not np.all(np.isfinite(w)) or np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-9:
            raise _fail("initial_weights", w.tolist(), "positive weights summing to 1 (within 1e-9)")
        if params and next(iter(params.values())).shape[-1] != w.size:
            raise ValueError(
                f"params have {next(iter(params.values())).shape[-1]} assets but initial_weights has {w.size}"
            )
        w.setflags(write=False)
        object.__setattr__(self, "initial_weights", w)
        beta = _number("beta", self.beta)
        if beta <= 0:
            raise _fail("beta", beta, "> 0")
        object.__setattr__(self, "beta", beta)
        mmd = _number("max_memory_days", self.max_memory_days)
        if mmd <= 0:
            raise _fail("max_memory_days", mmd, "> 0 (days)")
        object.__setattr__(self, "max_memory_days", mmd)
        if self.chunk_period is not None:
            object.__setattr__(self, "chunk_period", _integer("chunk_period", self.chunk_period, 1))
        check_parameters(self, self.chunk_period)

    @property
    def n_assets(self) -> int:
        return int(self.initial_weights.size)

    @property
    def n_sets(self) -> int | None:
        """Size of the leading parameter-set axis, or None for a single set."""
        if not self.params:
            return None
        shape = next(iter(self.params.values())).shape
        return shape[0] if len(shape) == 2 else None

    @property
    def is_trainable(self) -> bool:
        return bool(self.params)

    @property
    def rule_kind(self) -> str:
        """"delta" (momentum family), "weight" (min_variance) or "constant" (balancer, hodl); a user
        strategy's kind as registered."""
        return strategy_rule_kind(self.name)

    def replace(self, **changes: Any) -> "Strategy":
        return dataclasses.replace(self, **changes)

    def with_params(self, params: Mapping[str, Any]) -> "Strategy":
        return dataclasses.replace(self, params={k: np.asarray(v) for k, v in params.items()})

    def param_set(self, index: int) -> "Strategy":
        """The strategy with only parameter set ``index`` (params of shape (n,))."""
        if self.n_sets is None:
            raise ValueError("this strategy has no parameter-set axis")
        return self.with_params({k: v[index] for k, v in self.params.items()})

    @classmethod
    def from_memory_days(
        cls,
        name: str,
        n_assets: int,
        memory_days: float = 10.0,
        k_per_day: float = 20.0,
        chunk_period: int | None = None,
        initial_weights: Any = None,
        n_sets: int | None = None,
        *,
        pool: "Pool | None" = None,
        **extra: Any,
    ) -> "Strategy":
        """Build a strategy from human units.

        logit_lambda = logit(lambda(memory_days, chunk_period)); log_k = log2(k_per_day), so that
        k = k_per_day * memory_days. Second memories (difference_momentum, min_variance) default to
        ``memory_days_2 = 2 * memory_days``; channel parameters default to exponent 2, amplitude 1, width 1.
        A registered user strategy gets these values for parameters of these names
        (:data:`HUMAN_UNIT_PARAMETERS`) and its registered ``defaults`` for the others.

        chunk_period: minutes per strategy update of the pool the strategy will run in; default: ``pool``'s,
        else 1440 (the default :class:`Pool`'s). It is recorded on the strategy, and a pool with another
        chunk period is refused (the same lambda would be a memory that many times longer or shorter).
        A memory above ``max_memory_days`` (default 365) is an error, not silently capped.
        """
        record = registry.lookup(name)
        n = _integer("n_assets", n_assets, 2)
        if pool is not None:
            if not isinstance(pool, Pool):
                raise TypeError(f"pool must be a tfmm.Pool, got {type(pool).__name__}")
            if chunk_period is not None and chunk_period != pool.chunk_period:
                raise ValueError(f"chunk_period={chunk_period!r} disagrees with the pool's chunk_period="
                                 f"{pool.chunk_period}; pass one of them")
            chunk_period = pool.chunk_period
        chunk_period = _integer("chunk_period", MINUTES_PER_DAY if chunk_period is None else chunk_period, 1)
        memory_days_2 = extra.pop("memory_days_2", 2.0 * memory_days)
        exponent = extra.pop("exponent", 2.0)
        cap = _number("max_memory_days", extra.get("max_memory_days", 365.0))
        for label, days in (("memory_days", memory_days), ("memory_days_2", memory_days_2)):
            if label == "memory_days" or "logit_lambda_2" in record.decay_parameters:
                if _number(label, days) > cap:
                    raise _fail(label, days, f"at most max_memory_days={cap:g} (memories are capped there; pass "
                                             f"max_memory_days={float(days):g} or more to allow it)")
        values = _initial_values(record, memory_days, memory_days_2, k_per_day, exponent, chunk_period)
        shape = (n,) if n_sets is None else (_integer("n_sets", n_sets, 1), n)
        params = {k: np.full(shape, values[k]) for k in record.parameters}
        if initial_weights is None:
            initial_weights = np.full(n, 1.0 / n)
        return cls(name, params, initial_weights, chunk_period=chunk_period, **extra)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain({
            "name": self.name, "params": dict(self.params), "initial_weights": self.initial_weights,
            "beta": self.beta, "max_memory_days": self.max_memory_days, "chunk_period": self.chunk_period,
        })


# --- user strategies -------------------------------------------------------------------------------

USER_KINDS = ("delta", "weight")


def register_strategy(
    name: str,
    parameters: Sequence[str],
    rule: Callable[..., Any],
    *,
    kind: str = "delta",
    defaults: Mapping[str, float] | None = None,
    decay_parameters: Sequence[str] | None = None,
    overwrite: bool = False,
    doc: str = "",
) -> StrategyRecord:
    """Register a user strategy: afterwards ``Strategy(name, params)``, ``simulate``, ``value_and_grad``,
    ``train`` and TOML files accept ``name`` on the array backends (jax, torch); the reference backend
    implements only the built-ins.

    Args:
      name: an identifier, not a built-in's name.
      parameters: names of the trainable per-asset parameters (each an (n,) array; unconstrained: the
        optimiser adds to them freely).
      rule: ``rule(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk) -> outputs``, as the
        built-ins (:mod:`tfmm.core.strategies.momentum`): chunk prices (M, n) in USD, one row per chunk of
        ``chunk_period`` minutes; ``params`` name -> (n,) array; outputs (M - 1, n), row ``m`` using chunk
        prices ``0..m+1`` only. Written against ``bk.xp`` (the Array API namespace of the inputs) and
        ``bk``'s primitives (``where``, ``sigmoid``, ``softmax``, ``scan``, ...), with no Python branching
        on array values, so that it traces under jit, vmap and autodiff on every backend. The helpers of
        :mod:`tfmm.core.strategies.common` and :mod:`tfmm.core.estimators` take the same ``bk``.
      kind: "delta": each output row is a weight change per chunk, summing to 0 over assets (the
        momentum family); "weight": each row is target weights (positive, summing to 1), mixed as
        ``u = alpha a + (1 - alpha) r`` with ``alpha = sigmoid(logit_lambda_2)``, so ``parameters`` must
        include "logit_lambda_2" (as min_variance).
      defaults: name -> float, initial values for :meth:`Strategy.from_memory_days` of parameters it cannot
        derive from human units; parameters named as in :data:`HUMAN_UNIT_PARAMETERS` (log_k,
        logit_lambda, ...) get the built-ins' conversions (log_k = log2(k_per_day), logit_lambda =
        logit(lambda(memory_days)), ...) and may not have defaults.
      decay_parameters: parameters whose sigmoid is an EWMA decay per chunk: the specs check that
        ``lambda = min(sigmoid(x), lambda(max_memory_days))`` is in (0, 1); the rule applies the cap itself
        (:func:`tfmm.core.strategies.common.lambdas`). Default: those of "logit_lambda", "logit_lambda_2"
        among ``parameters`` (but not a weight rule's mixing "logit_lambda_2"); ``()`` for none.
      overwrite: replace a user strategy already registered under ``name`` (functions the backends
        compiled for the old rule are dropped). A built-in is never replaced.
      doc: a one-line description.

    Returns the registered :class:`~tfmm.core.strategies.registry.StrategyRecord`. Raises ValueError for a
    built-in or taken name, a bad ``kind`` or bad parameter names, TypeError for a non-callable ``rule``.
    """
    if kind not in USER_KINDS:
        raise _fail("kind", kind, "one of " + ", ".join(map(repr, USER_KINDS))
                    + " (constant weights: the built-in 'balancer')")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {type(overwrite).__name__} {overwrite!r}")
    if registry.is_registered(name) and registry.lookup(name).builtin:
        raise ValueError(f"name={name!r} is invalid: {name!r} is a built-in strategy and cannot be replaced; "
                         f"register the rule under another name")
    defaults = {} if defaults is None else defaults
    if not isinstance(defaults, Mapping):
        raise TypeError(f"defaults must be a mapping of parameter name -> number, got {type(defaults).__name__}")
    derived = [k for k in defaults if k in HUMAN_UNIT_PARAMETERS]
    if derived:
        raise ValueError(f"defaults[{derived[0]!r}] is invalid: Strategy.from_memory_days derives {derived[0]!r} "
                         f"from human units (memory_days, k_per_day, exponent); allowed defaults for parameters "
                         f"not in {list(HUMAN_UNIT_PARAMETERS)}")
    record = StrategyRecord(
        name, parameters, kind, rule,
        decay_parameters=_default_decays(parameters, kind) if decay_parameters is None else decay_parameters,
        defaults=defaults, doc=str(doc),
    )
    replaced = registry.is_registered(name)
    registry.register(record, overwrite=overwrite)
    if replaced:
        _forget_compiled(name)
    return record


def _default_decays(parameters: Any, kind: str) -> tuple[str, ...]:
    """logit_lambda and logit_lambda_2 among ``parameters`` (not a weight rule's mixing logit)."""
    if isinstance(parameters, str) or not isinstance(parameters, Sequence):
        return ()  # the record reports the bad parameters
    mixing = (MIXING_PARAMETER,) if kind == "weight" else ()
    return tuple(p for p in ("logit_lambda", "logit_lambda_2") if p in parameters and p not in mixing)


def unregister_strategy(name: str) -> None:
    """Remove a user strategy (and the functions the backends compiled for it); built-ins stay."""
    registry.unregister(name)
    _forget_compiled(name)


def _forget_compiled(name: str) -> None:
    """Drop the functions the loaded backends' engines compiled for strategy ``name``: their cache key
    holds the strategy's name, not its rule, so a replaced rule would otherwise run the old one."""
    from tfmm.backend import loaded_backends

    for instance in loaded_backends():
        forget = getattr(instance, "forget_strategy", None)
        if forget is not None:
            forget(name)


@dataclass(frozen=True)
class Smoothing:
    """Temperatures of smooth mode (docs/math.md sections 2.5, 2.4 and 3.4).

    gate_temperature: USD, gate = sigmoid((profit - gas - cost) / gate_temperature);
    selection: "softmax" (mixture), "straight_through" (exact forward, softmax backward) or "hard";
    selection_temperature: USD, q = softmax(profit / selection_temperature);
    abs_epsilon: USD, |x| ~ sqrt(x^2 + eps^2) in the arbitrage cost;
    weight_temperature: weight units, width of the smooth guardrail and speed limit.
    """

    gate_temperature: float = 1.0
    selection: str = "softmax"
    selection_temperature: float = 1.0
    abs_epsilon: float = 1e-6
    weight_temperature: float = 1e-4

    def __post_init__(self) -> None:
        for name in ("gate_temperature", "selection_temperature", "abs_epsilon", "weight_temperature"):
            value = _number(name, getattr(self, name))
            if value <= 0:
                raise _fail(name, value, "> 0")
            object.__setattr__(self, name, value)
        _choice("selection", self.selection, SELECTIONS)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scaled(self, factor: float) -> "Smoothing":
        """All temperatures multiplied by ``factor`` (factor -> 0 approaches exact mode)."""
        return dataclasses.replace(
            self,
            gate_temperature=self.gate_temperature * factor,
            selection_temperature=self.selection_temperature * factor,
            abs_epsilon=self.abs_epsilon * factor,
            weight_temperature=self.weight_temperature * factor,
        )


OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "exponential")
NAN_POLICIES = ("raise", "skip")
SAMPLINGS = ("uniform", "stratified")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (docs/stability.md); every stability fix is on by default.

    split: fractions (train, validation, test) of the rows after the burn-in, in time order;
    burn_in: minutes before the first training row that only warm the estimators (None -> about three
    memory lengths of the initial strategy, at most a quarter of the data); bout_length: minutes;
    batch_size: bouts per step; n_sets: parameter sets trained in parallel; clip_norm: global-norm
    clipping (None disables it); plateau_*: learning-rate reduction on a plateau of the training objective;
    probe_size: training bouts of the fixed probe batch (drawn once from the seed) whose objective is logged
    for every parameter set every ``eval_every`` steps (None -> ``batch_size``; 0 turns the probe off).
    """

    objective: str = "daily_log_sharpe"
    split: tuple[float, float, float] = (0.6, 0.2, 0.2)
    burn_in: int | None = None
    bout_length: int = 10 * MINUTES_PER_DAY
    batch_size: int = 8
    n_sets: int = 1
    n_iterations: int = 200
    optimizer: str = "adam"
    learning_rate: float = 0.05
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_rate: float = 0.99
    weight_decay: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 0
    clip_norm: float | None = 1.0
    clip_objective: float | None = None
    mode: str = "smooth"
    smoothing: Smoothing = field(default_factory=Smoothing)
    sampling: str = "uniform"
    eval_every: int = 10
    probe_size: int | None = None
    patience: int | None = None
    nan_policy: str = "raise"
    checkpoint_every: int = 50
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self) -> None:
        _choice("objective", self.objective, OBJECTIVES)
        split = tuple(self.split)
        if len(split) != 3 or any(_number("split", s) < 0 for s in split) or split[0] <= 0:
            raise _fail("split", self.split, "three fractions (train > 0, validation >= 0, test >= 0)")
        if abs(sum(split) - 1.0) > 1e-9:
            raise _fail("split", self.split, "fractions summing to 1")
        object.__setattr__(self, "split", tuple(float(s) for s in split))
        if self.burn_in is not None:
            _integer("burn_in", self.burn_in, 0)
        _integer("bout_length", self.bout_length, 3)
        _integer("batch_size", self.batch_size, 1)
        _integer("n_sets", self.n_sets, 1)
        _integer("n_iterations", self.n_iterations, 1)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if _number("learning_rate", self.learning_rate) <= 0:
            raise _fail("learning_rate", self.learning_rate, "> 0")
        _choice("schedule", self.schedule, SCHEDULES)
        _integer("warmup_steps", self.warmup_steps, 0)
        if not 0 < _number("decay_rate", self.decay_rate) <= 1:
            raise _fail("decay_rate", self.decay_rate, "in (0, 1]")
        if _number("weight_decay", self.weight_decay) < 0:
            raise _fail("weight_decay", self.weight_decay, ">= 0")
        if not 0 < _number("plateau_factor", self.plateau_factor) <= 1:
            raise _fail("plateau_factor", self.plateau_factor, "in (0, 1]")
        _integer("plateau_patience", self.plateau_patience, 0)
        if self.clip_norm is False:
            object.__setattr__(self, "clip_norm", None)
        for name in ("clip_norm", "clip_objective"):
            value = getattr(self, name)
            if value is not None and _number(name, value) <= 0:
                raise _fail(name, value, "None or > 0")
        _choice("mode", self.mode, MODES)
        if not isinstance(self.smoothing, Smoothing):
            raise TypeError(f"smoothing must be a tfmm.Smoothing, got {type(self.smoothing).__name__}")
        _choice("sampling", self.sampling, SAMPLINGS)
        _integer("eval_every", self.eval_every, 1)
        if self.probe_size is not None:
            _integer("probe_size", self.probe_size, 0)
        if self.patience is not None:
            _integer("patience", self.patience, 1)
        _choice("nan_policy", self.nan_policy, NAN_POLICIES)
        _integer("checkpoint_every", self.checkpoint_every, 1)
        _integer("seed", self.seed, 0)
        _choice("dtype", self.dtype, DTYPES)

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["smoothing"] = self.smoothing.to_dict()
        if self.clip_norm is None:
            out["clip_norm"] = False  # TOML has no null; False reads back as no clipping
        return _to_plain(out)


def check_compatible(n_rows: int, n_assets: int, strategy: Strategy, pool: Pool) -> None:
    """Checks that need the prices and the pool: asset counts agree, per-minute arrays have one entry per
    row, the strategy was converted for the pool's chunk period, its derived quantities are in range with
    that chunk period (:func:`parameter_problems`)."""
    if strategy.n_assets != n_assets:
        raise ValueError(f"strategy has {strategy.n_assets} assets but prices have {n_assets} columns")
    if strategy.chunk_period is not None and strategy.chunk_period != pool.chunk_period:
        c_s, c_p = strategy.chunk_period, pool.chunk_period
        change = f"{c_s / c_p:.4g}x shorter" if c_p < c_s else f"{c_p / c_s:.4g}x longer"
        raise ValueError(
            f"the strategy's parameters were converted for chunk_period={c_s} but the pool updates every "
            f"{c_p} minutes: its memories would be {change}; build it with "
            f"Strategy.from_memory_days(..., chunk_period={pool.chunk_period}) or pool=pool"
        )
    check_parameters(strategy, pool.chunk_period)
    pool.weight_bounds(n_assets)
    for name in ("fee", "gas", "arb_fee"):
        value = getattr(pool, name)
        if np.ndim(value) == 1 and len(value) != n_rows:
            raise ValueError(f"{name} is a per-minute array of length {len(value)}; prices have {n_rows} rows")


# --- TOML ------------------------------------------------------------------------------------------

def _to_plain(value: Any) -> Any:
    """numpy -> lists, tuples -> lists, None dropped (TOML has no null)."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def to_toml(
    pool: Pool | None = None,
    strategy: Strategy | None = None,
    smoothing: Smoothing | None = None,
    train: TrainConfig | None = None,
    **sections: Mapping[str, Any],
) -> str:
    """A TOML document with one table per spec (``[pool]``, ``[strategy]``, ``[smoothing]``, ``[train]``)."""
    doc: dict[str, Any] = {}
    for key, spec in (("pool", pool), ("strategy", strategy), ("smoothing", smoothing), ("train", train)):
        if spec is not None:
            doc[key] = spec.to_dict()
    doc.update({k: _to_plain(dict(v)) for k, v in sections.items()})
    return tomli_w.dumps(doc)


def check_keys(table: str, values: Mapping[str, Any], allowed: tuple[str, ...] | list[str],
               source: str | None = None) -> None:
    """Every key of ``values`` must be in ``allowed``; the error names the key, its table and the nearest
    allowed name (``difflib.get_close_matches``)."""
    unknown = [k for k in values if k not in allowed]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        prefix = f"{source}: " if source else ""
        raise ValueError(f"{prefix}unknown key {key!r} in [{table}]; {hint}allowed keys: {', '.join(allowed)}")


SPEC_TABLES = ("pool", "strategy", "smoothing", "train")


def _field_names(cls: type, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.init and f.name not in exclude)


def _build(table: str, cls: type, values: Any, source: str | None) -> Any:
    """``cls(**values)`` with unknown keys, wrong types and bad values reported as one line naming the table."""
    prefix = f"{source}: " if source else ""
    if not isinstance(values, dict):
        raise ValueError(f"{prefix}[{table}] must be a table, got {type(values).__name__} {values!r}")
    check_keys(table, values, _field_names(cls), source)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{prefix}[{table}] {exc}") from None


def from_toml(text: str, *, tables: tuple[str, ...] | None = None, source: str | None = None) -> dict[str, Any]:
    """Parse a TOML document into specs: keys ``pool``, ``strategy``, ``smoothing``, ``train``
    (each present only if its table is), plus any other tables as plain dicts.

    Unknown keys of the spec tables are errors naming the key, the table and the nearest valid name; so
    are tables outside ``tables`` when it is given (the command line passes its run-file tables). Values
    of the wrong type are errors naming the table and the field. ``source`` (a file name) prefixes errors.
    """
    prefix = f"{source}: " if source else ""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{prefix}not valid TOML ({exc})") from None
    if tables is not None:
        for key, table in doc.items():
            if key in tables:
                continue
            if not isinstance(table, dict):
                classes = {"pool": Pool, "strategy": Strategy, "smoothing": Smoothing, "train": TrainConfig}
                owner = [t for t, cls in classes.items() if key in _field_names(cls)]
                hint = f"; did you mean to put it under [{owner[0]}]?" if owner else ""
                raise ValueError(f"{prefix}key {key!r} is outside any table{hint} (tables: {', '.join(tables)})")
            close = difflib.get_close_matches(key, list(tables), n=1, cutoff=0.6)
            hint = f"did you mean [{close[0]}]? " if close else ""
            raise ValueError(f"{prefix}unknown table [{key}]; {hint}allowed tables: {', '.join(tables)}")
    out: dict[str, Any] = {}
    for key, table in doc.items():
        if key == "pool":
            out[key] = _build("pool", Pool, table, source)
        elif key == "strategy":
            out[key] = _build("strategy", Strategy, table, source)
        elif key == "smoothing":
            out[key] = _build("smoothing", Smoothing, table, source)
        elif key == "train":
            if not isinstance(table, dict):
                raise ValueError(f"{prefix}[train] must be a table, got {type(table).__name__} {table!r}")
            table = dict(table)
            check_keys("train", table, _field_names(TrainConfig), source)
            if "smoothing" in table:
                table["smoothing"] = _build("train.smoothing", Smoothing, table["smoothing"], source)
            if "split" in table:
                if not isinstance(table["split"], list):
                    raise TypeError(f"{prefix}[train] split must be a list of three fractions, got "
                                    f"{type(table['split']).__name__} {table['split']!r}")
                table["split"] = tuple(table["split"])
            out[key] = _build("train", TrainConfig, table, source)
        else:
            out[key] = table
    return out


def load_config(path: str | Path, *, tables: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read a run file written by :func:`to_toml` (or by hand); see :func:`from_toml` for ``tables``.
    Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such run file: {path}")
    return from_toml(path.read_text(), tables=tables, source=str(path))


__all__ = [
    "Pool", "Strategy", "Smoothing", "TrainConfig", "STRATEGY_PARAMETERS", "DELTA_RULES", "WEIGHT_RULES",
    "OBJECTIVES", "HUMAN_UNIT_PARAMETERS", "register_strategy", "unregister_strategy", "lambda_cap",
    "check_compatible", "check_keys", "check_parameters", "parameter_problems", "to_toml", "from_toml",
    "load_config",
]
