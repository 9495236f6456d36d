"""The backend-agnostic entry points: :func:`simulate`, :func:`metrics`, :func:`value_and_grad`.

Inputs are validated here, before any backend traces anything, and packed into a
:class:`SimulationRequest` that the current backend executes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfmm.backend import get_backend
from tfmm.core.memory import MINUTES_PER_DAY
from tfmm.data import Prices, as_prices
from tfmm.records import DTYPES, Simulation, SimulationRequest
from tfmm.specs import MODES, OBJECTIVES, Pool, Smoothing, Strategy, check_compatible


def _per_minute(name: str, value: Any, n_rows: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    return np.full(n_rows, float(arr)) if arr.ndim == 0 else arr


def make_request(
    prices: Any,
    strategy: Strategy,
    pool: Pool,
    start: Any = 0,
    length: int | None = None,
    mode: str = "exact",
    smoothing: Smoothing | None = None,
    dtype: str = "float64",
) -> SimulationRequest:
    """Validate the inputs of a simulation and pack them (errors name the argument and its range)."""
    prices = as_prices(prices)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a tfmm.Strategy, got {type(strategy).__name__}")
    if not isinstance(pool, Pool):
        raise TypeError(f"pool must be a tfmm.Pool, got {type(pool).__name__}")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: allowed one of {', '.join(map(repr, MODES))}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid: allowed one of {', '.join(map(repr, DTYPES))}")
    if smoothing is None:
        smoothing = Smoothing()
    elif not isinstance(smoothing, Smoothing):
        raise TypeError(f"smoothing must be a tfmm.Smoothing, got {type(smoothing).__name__}")
    n_rows = prices.n_rows
    check_compatible(n_rows, prices.n_assets, strategy, pool)
    batched = np.ndim(start) == 1
    starts = np.atleast_1d(np.asarray(start))
    if starts.ndim != 1 or starts.size == 0 or not np.issubdtype(starts.dtype, np.integer):
        raise TypeError(f"start must be an integer row index or a non-empty 1-D array of them, got {start!r}")
    starts = starts.astype(np.int64)
    if np.any(starts < 0) or np.any(starts > n_rows - 2):
        raise ValueError(f"start={start!r} is invalid: allowed row indices in [0, {n_rows - 2}]")
    if length is None:
        length = int(n_rows - starts.max())
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise TypeError(f"length must be an integer number of minutes, got {length!r}")
    length = int(length)
    if length < 2:
        raise ValueError(f"length={length} is invalid: allowed >= 2 (a bout of length B yields B - 1 rows)")
    last = int(starts.max()) + length - 1
    if last > n_rows:
        raise ValueError(
            f"bout start={int(starts.max())}, length={length} needs rows up to {last - 1} but prices have "
            f"{n_rows} rows (start + length - 1 <= {n_rows}); bouts are never clamped"
        )
    return SimulationRequest(
        prices=prices.values, timestamps=prices.timestamps, assets=prices.assets, starts=starts,
        length=length, strategy=strategy, pool=pool, mode=mode, smoothing=smoothing, dtype=dtype,
        batched_starts=batched, fee=_per_minute("fee", pool.fee, n_rows),
        gas=_per_minute("gas", pool.gas, n_rows), arb_fee=_per_minute("arb_fee", pool.arb_fee, n_rows),
    )


def simulate(
    prices: Any,
    strategy: Strategy,
    pool: Pool,
    start: Any = 0,
    length: int | None = None,
    mode: str = "exact",
    smoothing: Smoothing | None = None,
    dtype: str = "float64",
) -> Simulation:
    """Simulate the pool on ``prices[start : start + length - 1]`` with the current backend.

    The rows before ``start`` warm the estimators (they are initialised at row 0).

    Args:
      prices: a :class:`tfmm.Prices`, a DataFrame of one column per asset (USD per token) or a (T, n) array.
      strategy: the weight rule and its parameters; a leading parameter-set axis on its params batches sets.
      pool: fees, gas, chunk period, guardrails (:class:`tfmm.Pool`).
      start: the bout's first row, or a 1-D array of starts (a batch of bouts of one length).
      length: bout length B in minutes (the bout yields B - 1 rows); default: to the end of the prices.
      mode: "exact" (hard gates, what a pool does) or "smooth" (the training relaxation, docs/math.md 5).
      smoothing: the smooth mode's temperatures (:class:`tfmm.Smoothing`).
      dtype: "float64" or "float32".

    Returns:
      A :class:`Simulation`: reserves, weights, values (USD), trades, fees per minute, with leading axes
      (sets, starts) only where batched. Raises :class:`NonFiniteSimulationError` naming the first
      non-finite quantity instead of returning one.

    >>> import tfmm
    >>> prices = tfmm.synthetic_prices(n_assets=2, n_minutes=3 * 1440, seed=0)
    >>> strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1.0, chunk_period=60)
    >>> sim = tfmm.simulate(prices, strategy, tfmm.Pool(fee=0.003, chunk_period=60), start=1440,
    ...                     length=1441)
    >>> sim.values.shape, sim.weights.shape
    ((1440,), (1440, 2))
    >>> bool(abs(float(sim.weights.sum(axis=1).min()) - 1.0) < 1e-12)
    True
    """
    request = make_request(prices, strategy, pool, start, length, mode, smoothing, dtype)
    sim = get_backend().simulate(request)
    check_finite(sim)
    return sim


def _host(x: Any) -> np.ndarray:
    """A backend array as numpy (torch tensors are detached and moved to the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


class NonFiniteSimulationError(ValueError):
    """A simulation produced a non-finite weight, reserve or value (``quantity``, bout ``row``, ``set`` and
    ``start`` say where). Never returned as finite metrics: see :func:`check_finite`."""

    def __init__(self, message: str, quantity: str, row: int, set_index: int | None, start: int) -> None:
        super().__init__(message)
        self.quantity, self.row, self.set_index, self.start = quantity, row, set_index, start


def check_finite(sim: Simulation) -> None:
    """Raise :class:`NonFiniteSimulationError` naming the first non-finite weight, reserve or value.

    The earliest bout row wins (weights before reserves before values on the same row); batched
    simulations also name the parameter set and the bout start. A pool whose weights are NaN trades
    nothing, so its values and metrics stay finite: without this check it would look like a result.
    """
    request = sim.request
    found = []
    for order, name in enumerate(("weights", "reserves", "values")):
        arr = _host(getattr(sim, name))
        finite = np.isfinite(arr)
        if finite.all():
            continue
        bad = ~finite if name == "values" else ~finite.all(axis=-1)  # (..., rows)
        hit = np.argwhere(np.moveaxis(bad, -1, 0))[0]  # the earliest row first, then the lowest set/start
        row, lead = int(hit[0]), tuple(int(i) for i in hit[1:])
        found.append((row, order, name, lead, arr[lead + (row,)]))
    if not found:
        return
    row, _, name, lead, sample = min(found, key=lambda f: (f[0], f[1]))
    n_sets = request.strategy.n_sets if request is not None else None
    set_index = lead[0] if n_sets is not None and lead else None
    start_pos = lead[-1] if request is not None and request.batched_starts and lead else 0
    start = int(request.starts[start_pos]) if request is not None else 0
    where = [f"bout row {row} (price row {start + row})"]
    if set_index is not None:
        where.append(f"parameter set {set_index}")
    if request is not None and request.batched_starts:
        where.append(f"bout start {start}")
    shown = np.asarray(sample).tolist()
    hint = ("; float32 has a narrower range than float64: try dtype='float64'"
            if request is not None and request.dtype == "float32" else "")
    raise NonFiniteSimulationError(
        f"the {sim.mode}-mode simulation on backend {sim.backend!r} produced non-finite {name} at "
        f"{', '.join(where)}: {shown}; the strategy's parameters or the prices take the pool outside the "
        f"range its arithmetic can represent{hint}",
        name, row, set_index, start,
    )


def check_objective_length(objective: str, length: int) -> None:
    """Daily objectives need at least two daily returns: B - 1 > 2 * 1440 rows."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is invalid: allowed one of {', '.join(OBJECTIVES)}")
    if objective.startswith("daily") and (length - 2) // MINUTES_PER_DAY < 2:
        raise ValueError(
            f"objective {objective!r} needs at least 2 daily returns, i.e. a bout length of at least "
            f"{2 * MINUTES_PER_DAY + 2} minutes; got length={length}"
        )


def metrics(sim: Simulation) -> dict[str, Any]:
    """Every objective of docs/math.md section 6 for a simulation, on the backend that produced it.

    Args:
      sim: a :class:`Simulation` from :func:`simulate`.

    Returns:
      name -> float (an array with the simulation's leading axes when batched): returns in log or simple
      units, Sharpe ratios annualised or daily, drawdown as a fraction (docs/math.md 6).

    >>> import tfmm
    >>> prices = tfmm.synthetic_prices(n_assets=2, n_minutes=2 * 1440, seed=0)
    >>> sim = tfmm.simulate(prices, tfmm.Strategy("balancer", {}, [0.5, 0.5]), tfmm.Pool(fee=0.0))
    >>> m = tfmm.metrics(sim)
    >>> {"daily_log_sharpe", "returns_over_hodl", "max_drawdown"} <= set(m)
    True
    """
    return get_backend_for(sim).metrics(sim)


def get_backend_for(sim: Simulation) -> Any:
    return get_backend(sim.backend)


def value_and_grad(
    prices: Any,
    strategy: Strategy,
    pool: Pool,
    start: Any = 0,
    length: int | None = None,
    objective: str = "daily_log_sharpe",
    mode: str = "smooth",
    smoothing: Smoothing | None = None,
    dtype: str = "float64",
) -> tuple[Any, dict[str, Any]]:
    """The objective (mean over the bouts in ``start``) and its gradient w.r.t. ``strategy.params``.

    Args:
      prices, strategy, pool, start, length, smoothing, dtype: as :func:`simulate`.
      objective: a name of :data:`tfmm.specs.OBJECTIVES` (maximised by training), e.g. "daily_log_sharpe".
      mode: "smooth" (default: differentiable gates) or "exact" (the pathwise derivative of the hard gates).

    Returns:
      (value, grads): value a scalar, or (sets,) with a parameter-set axis; grads the keys and shapes of
      ``strategy.params`` (derivative of the objective per unit of each unconstrained parameter).

    >>> import tfmm
    >>> prices = tfmm.synthetic_prices(n_assets=2, n_minutes=4 * 1440, seed=0)
    >>> strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1.0, chunk_period=60)
    >>> value, grads = tfmm.value_and_grad(prices, strategy, tfmm.Pool(fee=0.003, chunk_period=60), start=1440,
    ...                                    length=2 * 1440 + 2)
    >>> sorted(grads), grads["log_k"].shape
    (['log_k', 'logit_lambda'], (2,))
    """
    request = make_request(prices, strategy, pool, start, length, mode, smoothing, dtype)
    if not strategy.is_trainable:
        raise ValueError(f"strategy {strategy.name!r} has no trainable parameters")
    check_objective_length(objective, request.length)
    return get_backend().value_and_grad_objective(request, objective)


__all__ = [
    "SimulationRequest", "Simulation", "NonFiniteSimulationError", "check_finite", "make_request", "simulate",
    "metrics", "value_and_grad",
]
