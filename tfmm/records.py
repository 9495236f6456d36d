"""The records passed between the API and the backends: :class:`SimulationRequest` and :class:`Simulation`.

A leaf module: it imports numpy only (pandas inside :meth:`Simulation.to_pandas`), so the backends and the
reference depend on these types without depending on :mod:`tfmm.api`. ``DTYPES`` are the supported
floating-point types, defined here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tfmm.specs import Pool, Smoothing, Strategy

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


def keep_requested_axes(arr: Any, request: SimulationRequest) -> Any:
    """(sets, starts, ...) -> the leading axes the caller asked for: the set axis only when the strategy has
    one, the start axis only when ``start`` was an array."""
    if not request.batched_starts:
        arr = arr[:, 0]
    if request.strategy.n_sets is None:
        arr = arr[0]
    return arr


__all__ = ["DTYPES", "SimulationRequest", "Simulation", "keep_requested_axes"]
