"""The benchmark's inputs and its timing rule, shared with the scripts in ``bench/``.

Every benchmark simulates the same pool: synthetic correlated prices (70% annual volatility), a momentum
strategy with a 10-day memory and ``k`` of 20 per day, daily weight updates unless told otherwise. Times
are wall-clock seconds of whole calls; the first call (tracing, compilation, kernels loaded or compiled)
is kept apart from the warm calls.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import numpy as np

DAY = 1440  # minutes
YEAR = 365 * DAY  # minutes
START_SPREAD_DAYS = 7  # bout starts cycle over this many daily offsets


def bout_label(minutes: int) -> str:
    """A bout length for people: "1 d", "30 d", "120 min"."""
    return f"{minutes // DAY} d" if minutes % DAY == 0 else f"{minutes} min"


def time_calls(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """(seconds of the first call, seconds of each of ``repeats`` further calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, times


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(first-call seconds, compilation included; median seconds of ``repeats`` further calls)."""
    first, times = time_calls(fn, repeats)
    return first, statistics.median(times)


def split_batch(batch: int) -> tuple[int, int]:
    """A batch of ``batch`` bouts as (parameter sets, bout starts), as square as powers of two allow:
    1 -> 1 x 1, 16 -> 4 x 4, 256 -> 16 x 16, 4096 -> 64 x 64, 8 -> 2 x 4 (sets <= starts)."""
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch={batch!r} is invalid: allowed an integer >= 1")
    sets = 2 ** (int(math.log2(batch)) // 2)
    while batch % sets:
        sets //= 2
    return sets, batch // sets


def bout_starts(n_starts: int) -> np.ndarray:
    """Row indices of ``n_starts`` bout starts: day 1, 2, .., ``START_SPREAD_DAYS``, 1, 2, .. (on daily
    chunk boundaries; the first day warms the estimators)."""
    return (DAY * (1 + np.arange(n_starts) % START_SPREAD_DAYS)).astype(np.int64)


def momentum_strategy(n_assets: int, *, n_sets: int | None = None, chunk_period: int = DAY) -> Any:
    """The benchmark's momentum strategy: 10-day memory, k of 20 per day (``n_sets`` equal parameter sets,
    or None for one)."""
    import tfmm

    return tfmm.Strategy.from_memory_days("momentum", n_assets=n_assets, memory_days=10, k_per_day=20,
                                          chunk_period=chunk_period, n_sets=n_sets)


def momentum_inputs(n_assets: int, length: int, *, n_sets: int | None = None, chunk_period: int = DAY,
                    seed: int = 0, extra_rows: int | None = None) -> tuple[Any, Any]:
    """(prices, strategy): synthetic prices (70% annual volatility) with rows for bouts of ``length`` rows
    starting anywhere in :func:`bout_starts` (``extra_rows`` more rows than ``length``; default
    ``(START_SPREAD_DAYS + 1)`` days), and :func:`momentum_strategy`."""
    import tfmm

    extra = (START_SPREAD_DAYS + 1) * DAY if extra_rows is None else int(extra_rows)
    prices = tfmm.synthetic_prices(n_assets=n_assets, n_minutes=length + extra, seed=seed, vol=0.7)
    return prices, momentum_strategy(n_assets, n_sets=n_sets, chunk_period=chunk_period)


__all__ = ["DAY", "YEAR", "START_SPREAD_DAYS", "bout_label", "time_calls", "timed", "split_batch", "bout_starts",
           "momentum_strategy", "momentum_inputs"]
