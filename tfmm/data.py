"""Price data: the validated :class:`Prices` container, loaders, synthetic prices, the bundled set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class Prices:
    """External prices, one row per minute, one column per asset, in one numeraire (USD).

    values: (T, N) finite and > 0; timestamps: (T,) unix seconds, strictly increasing
    (default: 60 s apart from 0); assets: one name per column (default "asset0", ...).
    """

    values: Any
    timestamps: Any = None
    assets: Sequence[str] | None = None

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] < 2:
            raise ValueError(
                f"values must be a 2-D array (T rows >= 2, N assets >= 2), got shape {values.shape}"
            )
        finite = np.isfinite(values) & (values > 0)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise ValueError(
                f"values must be finite and > 0; first bad entry at row {row}, column {col}: {values[row, col]!r}"
            )
        if self.timestamps is None:
            timestamps = np.arange(values.shape[0], dtype=np.int64) * 60
        else:
            timestamps = np.asarray(self.timestamps)
            if np.issubdtype(timestamps.dtype, np.datetime64):
                timestamps = timestamps.astype("datetime64[s]").astype(np.int64)
            timestamps = timestamps.astype(np.int64)
        if timestamps.shape != (values.shape[0],):
            raise ValueError(f"timestamps must have shape ({values.shape[0]},), got {timestamps.shape}")
        steps = np.diff(timestamps)
        if np.any(steps <= 0):
            row = int(np.argmax(steps <= 0)) + 1
            raise ValueError(f"timestamps must be strictly increasing; row {row} is not after row {row - 1}")
        assets = [f"asset{i}" for i in range(values.shape[1])] if self.assets is None else list(self.assets)
        if len(assets) != values.shape[1] or len(set(assets)) != len(assets):
            raise ValueError(f"assets must be {values.shape[1]} distinct names, got {assets!r}")
        values.setflags(write=False)
        timestamps.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "assets", tuple(str(a) for a in assets))

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_assets(self) -> int:
        return int(self.values.shape[1])

    def __len__(self) -> int:
        return self.n_rows

    def slice(self, start: int, stop: int) -> "Prices":
        """Rows [start, stop) as a new Prices."""
        return Prices(self.values[start:stop], self.timestamps[start:stop], self.assets)

    def select(self, assets: Sequence[str]) -> "Prices":
        """The given assets, in the given order."""
        idx = [self.assets.index(a) for a in assets]
        return Prices(self.values[:, idx], self.timestamps, list(assets))

    def to_pandas(self):
        import pandas as pd

        index = pd.to_datetime(self.timestamps, unit="s", utc=True)
        return pd.DataFrame(self.values, index=index, columns=list(self.assets))


def as_prices(prices: Any) -> Prices:
    """A :class:`Prices` from a Prices, a pandas DataFrame (datetime index) or a (T, N) array."""
    if isinstance(prices, Prices):
        return prices
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if pd is not None and isinstance(prices, pd.DataFrame):
        index = prices.index
        timestamps = None
        if isinstance(index, pd.DatetimeIndex):
            timestamps = (index.as_unit("s").asi8 if index.tz is None else index.tz_convert("UTC").as_unit("s").asi8)
        return Prices(prices.to_numpy(dtype=np.float64), timestamps, [str(c) for c in prices.columns])
    return Prices(prices)
