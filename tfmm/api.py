"""The backend-agnostic entry points: :func:`simulate`, :func:`metrics`, :func:`value_and_grad`.

Inputs are validated here, before any backend traces anything, and packed into a
:class:`SimulationRequest` that the current backend executes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfmm.backend import get_backend
from tfmm.core.memory import MINUTES_PER_DAY
from tfmm.data import Prices, as_prices
from tfmm.specs import MODES, OBJECTIVES, Pool, Smoothing, Strategy, check_compatible

DTYPES = ("float64", "float32")


@dataclass(frozen=True, eq=False)
class SimulationRequest:
    """Everything a backend needs for one (possibly batched) simulation; all validated.

    prices: (T, N) float64 numpy; starts: (n_starts,) int64 row indices; length: bout length B
    (each bout yields B - 1 rows); batched_starts: whether the caller passed an array of starts.
    Per-minute pool rates are expanded to (T,) arrays in ``fee``, ``gas``, ``arb_fee``.
    """

    prices: np.ndarray
    timestamps: np.ndarray
    assets: tuple[str, ...]
    starts: np.ndarray
    length: int
    strategy: Strategy
    pool: Pool
    mode: str
    smoothing: Smoothing
    dtype: str
    batched_starts: bool
    fee: np.ndarray = field(repr=False, default=None)
    gas: np.ndarray = field(repr=False, default=None)
    arb_fee: np.ndarray = field(repr=False, default=None)

    @property
    def n_rows(self) -> int:
        return int(self.prices.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.prices.shape[1])

    @property
    def n_out(self) -> int:
        """Rows per bout in the result: B - 1."""
        return self.length - 1


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


@dataclass(frozen=True, eq=False)
class Simulation:
    """A simulated pool. Arrays are in the producing backend's array type.

    Shapes (leading axes only when batched: parameter sets, then starts): reserves (.., B-1, N),
    weights (.., B-1, N), values (.., B-1,) in USD, trades (.., B-1, N) net arbitrage reserve change
    per minute (both phases; > 0 flows into the pool), fees (.., B-1,) USD collected per minute,
    prices (B-1, N) or (starts, B-1, N) the rows used, timestamps likewise.
    """

    reserves: Any
    weights: Any
    values: Any
    trades: Any
    fees: Any
    prices: Any
    timestamps: np.ndarray
    assets: tuple[str, ...]
    backend: str
    mode: str
    request: SimulationRequest = field(repr=False, default=None)

    def to_numpy(self) -> "Simulation":
        """The same simulation with numpy arrays."""
        conv = lambda x: None if x is None else np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)  # noqa: E731
        return Simulation(
            conv(self.reserves), conv(self.weights), conv(self.values), conv(self.trades), conv(self.fees),
            conv(self.prices), np.asarray(self.timestamps), self.assets, self.backend, self.mode, self.request,
        )

    def to_pandas(self):
        """One DataFrame indexed by UTC time: value, then reserve_*, weight_*, price_* per asset.
        Only for an unbatched simulation."""
        import pandas as pd

        sim = self.to_numpy()
        if sim.values.ndim != 1:
            raise ValueError("to_pandas needs an unbatched simulation; index the batch first")
        index = pd.to_datetime(sim.timestamps, unit="s", utc=True)
        cols: dict[str, Any] = {"value": sim.values, "fees": sim.fees}
        for i, a in enumerate(sim.assets):
            cols[f"reserve_{a}"] = sim.reserves[:, i]
        for i, a in enumerate(sim.assets):
            cols[f"weight_{a}"] = sim.weights[:, i]
        for i, a in enumerate(sim.assets):
            cols[f"price_{a}"] = sim.prices[:, i]
        return pd.DataFrame(cols, index=pd.Index(index, name="time"))


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
    ``start`` may be a 1-D array of starts (a batch of bouts of one length) and the strategy's params
    may carry a leading parameter-set axis; results then have leading axes (sets, starts).
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
    """Every objective of docs/math.md section 6 for a simulation: name -> float (array when batched)."""
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

    Returns (value, grads): value is a scalar, or (sets,) with a parameter-set axis; grads has the
    keys and shapes of ``strategy.params``.
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
