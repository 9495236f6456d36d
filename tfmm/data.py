"""Price data: the validated :class:`Prices` container, loaders, synthetic prices, the bundled set.

- :func:`load_prices` reads one price file per asset (CSV, CSV.gz or parquet with columns ``timestamp``
  and ``close``) or a folder of them, and aligns the assets on their common time grid
  (:func:`align_prices`); gaps are an error unless a policy (``"ffill"``, ``"drop"``) is named.
- :func:`synthetic_prices`: correlated geometric Brownian motion, one row per minute.
- :func:`example_prices`: the bundled real data (Binance BTCUSDT and ETHUSDT one-minute closes, 2025).
- :func:`summarize`, :func:`summarize_series`, :func:`format_summary`: what ``tfmm data`` prints.

Decisions where the specification is silent:

- Timestamps are integer unix seconds (UTC) or ISO-8601 strings; strings without an offset are read as
  UTC. Integers above 1e11 (which would be after the year 5000) are taken to be milliseconds by mistake
  and rejected with an error, rather than silently rescaled, in files and in :class:`Prices` alike.
- A file with a ``close`` column holds one asset named after the file (``BTCUSDT.csv.gz`` -> ``BTCUSDT``);
  with ``layout="wide"`` a file holds one asset per column besides ``timestamp`` (the layout of the
  bundled parquet). Column names are matched case-insensitively.
- Rows within a file are sorted by time; duplicate timestamps, non-finite or non-positive prices are errors
  that name the file and the first offending row.
- The grid step is the most common difference between consecutive timestamps (the smallest on ties).
  A gap is a maximal run of grid points where at least one asset has no price; a timestamp off the grid
  is an error under ``"error"`` and ``"ffill"`` (it cannot be placed) and is kept by ``"drop"`` only if
  every asset has it.
- Rows are minutes: the simulator reads each row as one minute, so a :class:`Prices` whose timestamps
  are not one minute apart (the most common difference; hourly files, a 30 s grid built by assets
  sampled at different seconds) is an error (:class:`SamplingIntervalError`) that says what was found
  and how to resample. Raw files of any step can still be read and summarised (``tfmm data``).
- Differences that are whole multiples of a minute are time jumps: ``gaps="drop"`` (or timestamps given
  with holes) keeps them, and the result records them in ``Prices.time_jumps`` and in :func:`summarize`
  (``time_jumps``, ``skipped_minutes``), because the simulator then reads the jump as one minute.
- In a timestamp series that is not on one grid, a difference ``d > step`` counts ``ceil(d / step) - 1``
  missing rows, the grid being continued from the earlier row.
- A file without a ``close`` column is an error unless ``layout="wide"`` says that every other column is
  an asset (a candle file ``timestamp,open,volume`` would otherwise become two assets, open and volume).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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
    time_jumps: tuple = field(init=False, default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            values = np.array(self.values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"values must be a (T, N) array of numbers ({exc})") from None
        if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] < 2:
            raise ValueError(
                f"values must be a 2-D array (T rows >= 2, N assets >= 2), got shape {values.shape}"
            )
        finite = np.isfinite(values) & (values > 0)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise ValueError(
                f"values must be finite and > 0; first bad entry at row {row}, column {col}: "
                f"{float(values[row, col])!r}"
            )
        if self.timestamps is None:
            timestamps = np.arange(values.shape[0], dtype=np.int64) * 60
        else:
            timestamps = _timestamp_array(self.timestamps)
        if timestamps.shape != (values.shape[0],):
            raise ValueError(f"timestamps must have shape ({values.shape[0]},), got {timestamps.shape}")
        steps = np.diff(timestamps)
        if np.any(steps <= 0):
            row = int(np.argmax(steps <= 0)) + 1
            raise ValueError(f"timestamps must be strictly increasing; row {row} is not after row {row - 1}")
        jumps = check_minute_rows(timestamps)
        assets = [f"asset{i}" for i in range(values.shape[1])] if self.assets is None else list(self.assets)
        if len(assets) != values.shape[1] or len(set(assets)) != len(assets):
            raise ValueError(f"assets must be {values.shape[1]} distinct names, got {assets!r}")
        self._set(values, timestamps, assets, jumps)

    def _set(self, values: np.ndarray, timestamps: np.ndarray, assets: Sequence[str], jumps: Sequence[Gap]) -> None:
        values.setflags(write=False)
        timestamps.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "assets", tuple(str(a) for a in assets))
        object.__setattr__(self, "time_jumps", tuple(jumps))

    @classmethod
    def _part(cls, values: np.ndarray, timestamps: np.ndarray, assets: Sequence[str]) -> "Prices":
        """Rows or columns of a validated Prices (no new validation: a slice across a jump of a minute grid
        may have any most-common step, and is still minute rows)."""
        out = object.__new__(cls)
        out._set(np.array(values, dtype=np.float64), np.array(timestamps, dtype=np.int64), assets,
                 find_gaps(timestamps, MINUTE) if len(timestamps) >= 2 else [])
        return out

    @property
    def skipped_minutes(self) -> int:
        """Minutes missing between consecutive rows (each read as one minute by the simulator)."""
        return int(sum(g.n_missing for g in self.time_jumps))

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
        values = self.values[start:stop]
        if values.shape[0] < 2:
            raise ValueError(f"slice({start}, {stop}) leaves {values.shape[0]} rows of {self.n_rows}; at least 2 "
                             f"are needed")
        return Prices._part(values, self.timestamps[start:stop], self.assets)

    def select(self, assets: Sequence[str]) -> "Prices":
        """The given assets, in the given order."""
        if isinstance(assets, str):
            raise TypeError(f"assets must be a sequence of names, got the string {assets!r}")
        missing = [a for a in assets if a not in self.assets]
        if missing:
            raise ValueError(f"assets not found: {', '.join(map(str, missing))}; available: {', '.join(self.assets)}")
        if len(assets) < 2 or len(set(assets)) != len(assets):
            raise ValueError(f"assets must be at least two distinct names, got {list(assets)!r}")
        idx = [self.assets.index(a) for a in assets]
        return Prices._part(self.values[:, idx], self.timestamps, list(assets))

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
        for column in prices.columns:
            dtype = prices[column].dtype
            if not (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)):
                raise TypeError(f"DataFrame column {column!r} holds {dtype} values, not prices: every column must "
                                f"be numeric (one asset per column; put times in a DatetimeIndex)")
        return Prices(prices.to_numpy(dtype=np.float64), timestamps, [str(c) for c in prices.columns])
    return Prices(prices)


# ----------------------------------------------------------------------------------------------------------
# Loading and aligning price files

GAP_POLICIES = ("error", "ffill", "drop")
PRICE_SUFFIXES = (".csv", ".csv.gz", ".parquet")
MINUTES_PER_YEAR = 525_600  # 365 days
EXAMPLE_FILE = "btc_eth_1m_2025.parquet"
SYNTHETIC_START = 1_735_689_600  # 2025-01-01T00:00:00Z, unix seconds
_MAX_LISTED_GAPS = 20
_MILLISECONDS_THRESHOLD = 10**11  # unix seconds this large would be after the year 5000
MINUTE = 60
LAYOUTS = ("close", "wide")


class SamplingIntervalError(ValueError):
    """Timestamps that are not one row per minute; ``step`` is the most common difference found (s)."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = int(step)


def _duration(seconds: int) -> str:
    """``3600 s (1 hour)``, ``30 s``, ``86400 s (1 day)``."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return f"{seconds} s ({n} {unit}{'s' if n != 1 else ''})"
    return f"{seconds} s"


def _timestamp_array(timestamps: Any) -> np.ndarray:
    """Timestamps given to :class:`Prices` -> int64 unix seconds; no silent truncation or rescaling."""
    ts = np.asarray(timestamps)
    if np.issubdtype(ts.dtype, np.datetime64):
        return ts.astype("datetime64[s]").astype(np.int64)
    if ts.dtype == object or ts.dtype.kind in "USb":
        raise TypeError(f"timestamps must be integer unix seconds or datetime64 values, got {ts.dtype} "
                        f"(parse ISO-8601 text with pandas.to_datetime first)")
    if ts.dtype.kind == "f":
        if not (np.isfinite(ts).all() and np.all(ts == np.round(ts))):
            raise ValueError("timestamps must be whole unix seconds; got fractional or non-finite values")
    ts = ts.astype(np.int64)
    if ts.size and int(np.abs(ts).max()) >= _MILLISECONDS_THRESHOLD:
        raise ValueError(f"timestamps look like unix milliseconds ({int(np.abs(ts).max())}); tfmm reads unix "
                         f"seconds: divide them by 1000")
    return ts


def check_minute_rows(timestamps: Any, what: str = "prices") -> list["Gap"]:
    """Rows must be minutes: the most common difference of the (strictly increasing) timestamps is 60 s and
    every difference is a whole number of minutes. Returns the time jumps (differences above a minute) as
    :class:`Gap` s; raises :class:`SamplingIntervalError` saying what was found and how to resample."""
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size < 2:
        return []
    step = infer_step(ts)
    if step != MINUTE:
        if step > MINUTE and step % MINUTE == 0:
            how = (f"tfmm simulates one row per minute, so each row would be read as one minute ({step // MINUTE}x "
                   f"too fast). Use one-minute data, or resample to one row per minute first, e.g. for candles "
                   f"stamped at their open time, with pandas: frame.shift(freq='{step // MINUTE - 1}min')"
                   f".resample('1min').ffill() (each close then holds until the next one is known)")
        else:
            how = ("tfmm simulates one row per minute: resample to one row per minute first, e.g. with pandas "
                   "frame.resample('1min').last().dropna(); when the assets are sampled at different seconds past "
                   "the minute, floor their timestamps to the minute")
        raise SamplingIntervalError(
            f"{what}: rows are {_duration(step)} apart (the most common difference between timestamps), not "
            f"60 s; {how}", step)
    off = np.nonzero(np.diff(ts) % MINUTE)[0]
    if off.size:
        i = int(off[0]) + 1
        raise SamplingIntervalError(
            f"{what}: row {i} ({iso_utc(ts[i])}) is {int(ts[i] - ts[i - 1])} s after row {i - 1}, not a whole "
            f"number of minutes ({off.size} such rows); tfmm simulates one row per minute: floor the timestamps to "
            f"the minute or resample to one row per minute", MINUTE)
    return find_gaps(ts, MINUTE)


def iso_utc(timestamp: int) -> str:
    """Unix seconds -> ISO-8601 UTC text ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.fromtimestamp(int(timestamp), tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Gap:
    """A run of missing grid rows: first and last missing timestamps (unix s), the number of missing rows,
    and the assets that lack a price somewhere in the run (empty when not known)."""

    first: int
    last: int
    n_missing: int
    assets: tuple[str, ...] = ()

    def describe(self) -> str:
        """``2021-04-20T02:00:00Z .. 2021-04-20T04:29:00Z: 150 missing rows (BTCUSDT, ETHUSDT)``."""
        who = f" ({', '.join(self.assets)})" if self.assets else ""
        rows = "row" if self.n_missing == 1 else "rows"
        return f"{iso_utc(self.first)} .. {iso_utc(self.last)}: {self.n_missing} missing {rows}{who}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (times as ISO text and as unix seconds)."""
        return {
            "first": iso_utc(self.first), "last": iso_utc(self.last), "first_timestamp": int(self.first),
            "last_timestamp": int(self.last), "missing_rows": int(self.n_missing), "assets": list(self.assets),
        }


class PriceGapError(ValueError):
    """Gaps found while aligning with ``gaps="error"``; ``gaps`` lists them, ``step`` is the grid step (s)."""

    def __init__(self, message: str, gaps: Sequence[Gap], step: int) -> None:
        super().__init__(message)
        self.gaps = list(gaps)
        self.step = int(step)


def _check_policy(gaps: str) -> None:
    if gaps not in GAP_POLICIES:
        raise ValueError(f"gaps must be one of {', '.join(repr(p) for p in GAP_POLICIES)}, got {gaps!r}")


def infer_step(timestamps: Any) -> int:
    """The grid step in seconds: the most common difference of consecutive timestamps (smallest on ties)."""
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.ndim != 1 or ts.size < 2:
        raise ValueError(f"at least two timestamps are needed to infer the step, got {ts.size}")
    diffs = np.diff(ts)
    if np.any(diffs <= 0):
        raise ValueError("timestamps must be strictly increasing")
    values, counts = np.unique(diffs, return_counts=True)  # values ascending: argmax takes the smallest tie
    return int(values[np.argmax(counts)])


def find_gaps(timestamps: Any, step: int | None = None) -> list[Gap]:
    """Gaps of a strictly increasing series of unix seconds on a grid of ``step`` seconds (default: inferred).

    A difference ``d > step`` after row ``t`` misses ``n = ceil(d / step) - 1`` rows, ``t + step .. t + n step``.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    if ts.size < 2:
        return []
    step = infer_step(ts) if step is None else int(step)
    if step <= 0:
        raise ValueError(f"step must be > 0 seconds, got {step}")
    diffs = np.diff(ts)
    if np.any(diffs <= 0):
        raise ValueError("timestamps must be strictly increasing")
    gaps = []
    for i in np.nonzero(diffs > step)[0]:
        n = -(-int(diffs[i]) // step) - 1
        gaps.append(Gap(int(ts[i]) + step, int(ts[i]) + n * step, n))
    return gaps


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive index ranges ``(i0, i1)`` of the runs of True in a 1-D boolean mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0].tolist(), (np.nonzero(edges == -1)[0] - 1).tolist()))


def _asset_stem(filename: str) -> str | None:
    """``BTCUSDT.csv.gz`` -> ``BTCUSDT``; None for a name without a supported suffix."""
    lower = filename.lower()
    for suffix in sorted(PRICE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def _parse_timestamps(column: Any, source: str) -> np.ndarray:
    """A column of unix seconds (integers), datetimes or ISO-8601 text -> int64 unix seconds (UTC)."""
    import pandas as pd

    if column.isna().any():
        raise ValueError(f"{source}: missing timestamp at row {int(np.argmax(column.isna().to_numpy()))}")
    if pd.api.types.is_bool_dtype(column):
        raise ValueError(f"{source}: timestamps must be unix seconds or ISO-8601 text, got booleans")
    if pd.api.types.is_numeric_dtype(column):
        raw = column.to_numpy()
        if raw.dtype.kind == "f":
            if not (np.isfinite(raw).all() and np.all(raw == np.round(raw))):
                raise ValueError(f"{source}: numeric timestamps must be whole unix seconds")
        ts = raw.astype(np.int64)
        if ts.size and int(np.abs(ts).max()) >= _MILLISECONDS_THRESHOLD:
            raise ValueError(
                f"{source}: timestamps look like unix milliseconds ({int(ts.max())}); tfmm reads unix seconds, "
                "divide the column by 1000"
            )
        return ts
    try:
        parsed = pd.to_datetime(column, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: timestamps must be unix seconds or ISO-8601 text ({exc})") from None
    return pd.DatetimeIndex(parsed).as_unit("s").asi8.astype(np.int64)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(repr(x) for x in LAYOUTS)}, got {layout!r}")


def read_price_file(path: str | os.PathLike, layout: str = "close") -> dict[str, Any]:
    """One price file -> ``{asset: pandas.Series}`` of float64 prices indexed by unix seconds (int64, sorted).

    CSV (optionally gzip-compressed) or parquet. layout ``"close"`` (default): a ``timestamp`` and a ``close``
    column, one asset named after the file (other columns are ignored); ``"wide"``: every column besides
    ``timestamp`` is an asset named after the column. Errors name the file (and the column).
    """
    import pandas as pd

    _check_layout(layout)
    path = Path(path)
    stem = _asset_stem(path.name)
    if stem is None:
        raise ValueError(f"{path}: unsupported file type; expected one of {', '.join(PRICE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"no such price file: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty (0 bytes)")
    try:
        frame = pd.read_parquet(path) if path.name.lower().endswith(".parquet") else pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: no columns (an empty or blank file)") from None
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: cannot be read as {'parquet' if path.suffix == '.parquet' else 'CSV'} "
                         f"({first})") from None
    columns = {str(c).strip().lower(): c for c in frame.columns}
    if "timestamp" not in columns:
        raise ValueError(f"{path}: no 'timestamp' column (columns: {', '.join(map(str, frame.columns))})")
    if len(frame) == 0:
        raise ValueError(f"{path}: no rows")
    time_column = columns["timestamp"]
    if layout == "close":
        if "close" not in columns:
            others = [str(c) for c in frame.columns if c != time_column]
            raise ValueError(
                f"{path}: no 'close' column (columns: {', '.join(map(str, frame.columns))}); a price file has "
                f"columns timestamp, close" + (f"; if {', '.join(others)} are each an asset's price, pass "
                                               f"layout='wide'" if others else ""))
        price_columns = {stem: columns["close"]}
    else:
        price_columns = {str(c).strip(): c for c in frame.columns if c != time_column}
        if not price_columns:
            raise ValueError(f"{path}: layout='wide' but no price columns besides 'timestamp'")
    ts = _parse_timestamps(frame[time_column], str(path))
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    duplicates = np.nonzero(np.diff(ts) == 0)[0]
    if duplicates.size:
        raise ValueError(
            f"{path}: duplicate timestamp {iso_utc(ts[duplicates[0]])} ({duplicates.size} duplicated rows)"
        )
    out = {}
    for asset, column in price_columns.items():
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)[order]
        bad = ~(np.isfinite(values) & (values > 0))
        if bad.any():
            i = int(np.argmax(bad))
            raw = frame[column].iloc[order[i]]
            raw = raw.item() if isinstance(raw, np.generic) else raw
            raise ValueError(
                f"{path}: prices must be finite and > 0; column {column!r} has {raw!r} "
                f"at {iso_utc(ts[i])} (row {int(order[i])})"
            )
        out[asset] = pd.Series(values, index=pd.Index(ts, name="timestamp"), name=asset)
    return out


def _price_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files given, and the price files of any folder given (sorted by name)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for entry in paths:
        entry = Path(entry)
        if entry.is_dir():
            found = sorted((f for f in entry.iterdir() if f.is_file() and _asset_stem(f.name)), key=lambda f: f.name)
            if not found:
                raise FileNotFoundError(f"no {', '.join('*' + s for s in PRICE_SUFFIXES)} files in {entry}")
            files.extend(found)
        elif entry.exists():
            files.append(entry)
        else:
            raise FileNotFoundError(f"no such file or directory: {entry}")
    if not files:
        raise ValueError("no price files given")
    return files


def read_price_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike], assets: Sequence[str] | None = None,
    layout: str = "close",
) -> dict[str, Any]:
    """``{asset: pandas.Series}`` from files and folders (see :func:`load_prices`), in asset order.

    With ``assets``, only those (in that order); the files named after them are read first, the others
    only if some asset is still missing (it may be a column of a wide file).
    """
    _check_layout(layout)
    files = _price_files(paths)
    if assets is not None:
        if isinstance(assets, str):
            raise TypeError(f"assets must be a sequence of names, got the string {assets!r}")
        assets = [str(a) for a in assets]
        if len(set(assets)) != len(assets):
            raise ValueError(f"assets must be distinct names, got {assets!r}")
        named = [f for f in files if _asset_stem(f.name) in assets]
        batches = [named, [f for f in files if f not in named]]
    else:
        batches = [files]
    series: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    for batch in batches:
        if assets is not None and all(a in series for a in assets):
            break
        for file in batch:
            for name, s in read_price_file(file, layout).items():
                if name in series:
                    raise ValueError(f"asset {name!r} appears in both {sources[name]} and {file}")
                series[name], sources[name] = s, file
    if assets is None:
        return series
    missing = [a for a in assets if a not in series]
    if missing:
        raise ValueError(f"assets not found: {', '.join(missing)}; available: {', '.join(series)}")
    return {a: series[a] for a in assets}


def _series_arrays(name: str, s: Any, min_rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A pandas Series (unix-second or datetime index) -> sorted (timestamps int64, prices float64), validated."""
    import pandas as pd

    index = s.index
    if isinstance(index, pd.DatetimeIndex):
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        ts = index.as_unit("s").asi8.astype(np.int64)
    else:
        ts = _parse_timestamps(pd.Series(np.asarray(index)), f"asset {name!r}")
    values = np.asarray(s, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    if ts.size < min_rows:
        raise ValueError(f"asset {name!r}: at least {min_rows} rows are needed, got {ts.size}")
    if np.any(np.diff(ts) == 0):
        raise ValueError(f"asset {name!r}: duplicate timestamp {iso_utc(ts[np.argmax(np.diff(ts) == 0)])}")
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"asset {name!r}: prices must be finite and > 0; {values[i]!r} at {iso_utc(ts[i])}")
    return ts, values


def _gap_message(gaps: Sequence[Gap], step: int, start: int, end: int) -> str:
    missing = sum(g.n_missing for g in gaps)
    lines = [
        f"prices have {len(gaps)} gap{'s' if len(gaps) != 1 else ''} on the {step} s grid from {iso_utc(start)} "
        f"to {iso_utc(end)} ({missing} missing rows):"
    ]
    lines += [f"  {g.describe()}" for g in gaps[:_MAX_LISTED_GAPS]]
    if len(gaps) > _MAX_LISTED_GAPS:
        lines.append(f"  ... and {len(gaps) - _MAX_LISTED_GAPS} more")
    lines.append(
        'pass gaps="ffill" to forward-fill each asset onto the full grid, or gaps="drop" to keep only the rows '
        "where every asset has a price"
    )
    return "\n".join(lines)


def align_prices(series: Mapping[str, Any], gaps: str = "error") -> Prices:
    """Align per-asset price series (``{asset: pandas.Series}`` indexed by unix seconds or datetimes).

    The rows are the union of the assets' timestamps from the latest first timestamp to the earliest last one:
    rows before or after that window, which only some assets have, are trimmed (the shared 2021 files end a
    few minutes apart, for example). The grid step is the most common difference of those timestamps.

    gaps: ``"error"`` raises :class:`PriceGapError` (a ValueError) listing each gap (first and last missing
    row as UTC time, number of missing rows, assets concerned); ``"ffill"`` forward-fills every asset onto the
    full regular grid (a missing first row takes the asset's last earlier price); ``"drop"`` keeps only the
    rows where every asset has a price (no fill; the timestamps then skip the gaps, and the result's
    ``time_jumps`` lists where). A grid that is not one minute raises :class:`SamplingIntervalError`.
    """
    _check_policy(gaps)
    names = [str(n) for n in series]
    if len(names) < 2:
        raise ValueError(f"at least two assets are needed, got {names!r}")
    arrays = [_series_arrays(name, s) for name, s in zip(names, series.values())]
    start = max(int(ts[0]) for ts, _ in arrays)
    end = min(int(ts[-1]) for ts, _ in arrays)
    if start >= end:
        spans = ", ".join(f"{n} {iso_utc(ts[0])} .. {iso_utc(ts[-1])}" for n, (ts, _) in zip(names, arrays))
        raise ValueError(f"the assets share fewer than two timestamps: {spans}")
    inside = [ts[(ts >= start) & (ts <= end)] for ts, _ in arrays]
    if gaps == "drop":
        common = functools.reduce(np.intersect1d, inside)
        if common.size < 2:
            raise ValueError(f"fewer than two timestamps have a price for every asset ({common.size})")
        values = np.column_stack([v[np.searchsorted(ts, common)] for ts, v in arrays])
        check_minute_rows(common, "the rows every asset has")
        return Prices(values, common, names)  # its time_jumps record the dropped rows
    union = functools.reduce(np.union1d, inside)
    step = infer_step(union)
    if step != MINUTE:
        own = {n: infer_step(ts) for n, (ts, _) in zip(names, arrays) if ts.size >= 2}
        if step < MINUTE and all(v == MINUTE for v in own.values()):
            phases = ", ".join(f"{n} at :{int(ts[0]) % 60:02d}" for n, (ts, _) in zip(names, arrays))
            raise SamplingIntervalError(
                f"the assets are each one row per minute but at different seconds past the minute ({phases}), "
                f"so together they form a {step} s grid; tfmm simulates one row per minute: floor every "
                f"timestamp to the minute (e.g. (t // 60) * 60) before aligning", step)
        check_minute_rows(union, "the aligned assets")
    off_grid = (union - start) % step != 0
    if off_grid.any():
        raise ValueError(
            f"{int(off_grid.sum())} timestamps are not on the {step} s grid starting at {iso_utc(start)} "
            f"(first: {iso_utc(union[off_grid][0])}); pass gaps=\"drop\" to keep only the rows every asset has"
        )
    grid = np.arange(start, end + 1, step, dtype=np.int64)
    if gaps == "ffill":
        values = np.column_stack([v[np.searchsorted(ts, grid, side="right") - 1] for ts, v in arrays])
        return Prices(values, grid, names)
    present = np.column_stack([np.isin(grid, ts) for ts in inside])
    missing = ~present.all(axis=1)
    if missing.any():
        found = [
            Gap(int(grid[i0]), int(grid[i1]), i1 - i0 + 1,
                tuple(n for j, n in enumerate(names) if not present[i0 : i1 + 1, j].all()))
            for i0, i1 in _runs(missing)
        ]
        raise PriceGapError(_gap_message(found, step, start, end), found, step)
    values = np.column_stack([v[np.searchsorted(ts, grid)] for ts, v in arrays])
    return Prices(values, grid, names)


def load_prices(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    assets: Sequence[str] | None = None,
    gaps: str = "error",
    layout: str = "close",
) -> Prices:
    """Load and align price files: one file per asset, or a folder of them.

    paths: a file, a folder, or a list of them. Files are CSV (``.csv``, ``.csv.gz``) or parquet with columns
    ``timestamp`` (unix seconds, UTC, or ISO-8601 text) and ``close`` (price in the numeraire, e.g. USDT);
    the asset is named after the file (``BTCUSDT.csv`` -> ``BTCUSDT``). A file without ``close`` holds one
    asset per column besides ``timestamp``. A folder contributes its ``*.csv``, ``*.csv.gz`` and ``*.parquet``
    files in name order; files listed explicitly keep the order given.
    assets: names to keep, in this order (default: all, in file order).
    gaps: ``"error"`` (default), ``"ffill"`` or ``"drop"``; see :func:`align_prices`, which also explains the
    trimming of the rows that only some assets have at the start or end. With ``"drop"`` the timestamps jump
    over the gaps: the result's ``time_jumps`` lists them (the simulator reads each row as one minute).
    layout: ``"close"`` (default; columns timestamp, close) or ``"wide"`` (one asset per column).
    The rows must be one minute apart (:class:`SamplingIntervalError` otherwise, saying how to resample).
    """
    _check_policy(gaps)
    _check_layout(layout)
    return align_prices(read_price_files(paths, assets, layout), gaps=gaps)


# ----------------------------------------------------------------------------------------------------------
# Synthetic and bundled prices


def _per_asset(name: str, value: Any, n_assets: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_assets, float(arr))
    if arr.shape != (n_assets,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_assets},), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def _unix_seconds(value: Any) -> int:
    """Unix seconds from an int, an ISO-8601 string or a datetime (naive means UTC)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    import pandas as pd

    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value) // 1_000_000_000  # Timestamp.value is in nanoseconds


def equicorrelation_sqrt(n: int, corr: float) -> np.ndarray:
    """Symmetric square root of the n x n matrix with unit diagonal and ``corr`` elsewhere.

    ``C = (1 - c) I + c J`` (J all ones) has eigenvalues ``1 - c`` (on 1-perp) and ``1 + (n - 1) c`` (on 1), so
    ``C^(1/2) = sqrt(1 - c) (I - J/n) + sqrt(1 + (n - 1) c) J/n``; it exists iff ``-1/(n-1) <= c <= 1``.
    """
    lo = -1.0 / (n - 1) if n > 1 else -1.0
    if not (lo <= corr <= 1.0):
        raise ValueError(f"corr must lie in [{lo:.6g}, 1] for {n} assets (a valid correlation matrix), got {corr!r}")
    j = np.full((n, n), 1.0 / n)
    return math.sqrt(1.0 - corr) * (np.eye(n) - j) + math.sqrt(1.0 + (n - 1) * corr) * j


def synthetic_prices(
    n_assets: int = 2,
    n_minutes: int = 43200,
    seed: int | None = 0,
    drift: Any = 0.0,
    vol: Any = 0.8,
    corr: float = 0.5,
    initial: Any = None,
    start_time: Any = SYNTHETIC_START,
) -> Prices:
    """Correlated geometric Brownian motion, one row per minute (``n_minutes`` rows, 60 s apart).

    ``dS_i / S_i = mu_i dt + sigma_i dW_i`` with ``corr(dW_i, dW_j) = corr`` for ``i != j``: the one-minute log
    returns are normal with mean ``(mu_i - sigma_i^2 / 2) dt`` and covariance ``sigma_i sigma_j C_ij dt``,
    ``dt = 1 / 525,600`` year (365 days). drift ``mu`` and vol ``sigma`` are annualised (per year, e.g. 0.8 =
    80 %), scalars or one per asset; ``corr`` is one pairwise correlation in ``[-1/(n-1), 1]``.
    initial: first-row prices (default 100 for every asset). start_time: unix seconds, ISO-8601 text or a
    datetime (default 2025-01-01T00:00:00Z). Reproducible: the same seed gives the same prices
    (``numpy.random.default_rng(seed)``).
    """
    if int(n_assets) != n_assets or n_assets < 2:
        raise ValueError(f"n_assets must be an integer >= 2, got {n_assets!r}")
    if int(n_minutes) != n_minutes or n_minutes < 2:
        raise ValueError(f"n_minutes must be an integer >= 2, got {n_minutes!r}")
    n_assets, n_minutes = int(n_assets), int(n_minutes)
    mu = _per_asset("drift", drift, n_assets)
    sigma = _per_asset("vol", vol, n_assets)
    if np.any(sigma < 0):
        raise ValueError(f"vol must be >= 0, got {sigma.tolist()}")
    first = _per_asset("initial", 100.0 if initial is None else initial, n_assets)
    if np.any(first <= 0):
        raise ValueError(f"initial prices must be > 0, got {first.tolist()}")
    root = equicorrelation_sqrt(n_assets, float(corr))
    dt = 1.0 / MINUTES_PER_YEAR
    rng = np.random.default_rng(seed)
    shocks = rng.standard_normal((n_minutes - 1, n_assets)) @ root
    log_returns = (mu - 0.5 * sigma**2) * dt + sigma * math.sqrt(dt) * shocks
    log_paths = np.concatenate([np.zeros((1, n_assets)), np.cumsum(log_returns, axis=0)])
    values = first * np.exp(log_paths)
    timestamps = _unix_seconds(start_time) + 60 * np.arange(n_minutes, dtype=np.int64)
    return Prices(values, timestamps)


@functools.lru_cache(maxsize=1)
def example_prices() -> Prices:
    """The bundled real data: Binance spot one-minute close prices (USDT) of BTCUSDT and ETHUSDT.

    2025-05-20T00:00Z to 2025-08-18T18:27Z, 130,708 rows, no gaps; source and checksums in the bundle's
    README.md. Credit: Binance market data. The result is cached (Prices is immutable).
    """
    from importlib.resources import files

    import pandas as pd

    with files("tfmm._bundled").joinpath(EXAMPLE_FILE).open("rb") as handle:
        frame = pd.read_parquet(handle)
    assets = [c for c in frame.columns if c != "timestamp"]
    return Prices(frame[assets].to_numpy(dtype=np.float64), frame["timestamp"].to_numpy(dtype=np.int64), assets)


# ----------------------------------------------------------------------------------------------------------
# Summaries


def _summary(timestamps: np.ndarray, values: np.ndarray, assets: Sequence[str]) -> dict[str, Any]:
    ts = np.asarray(timestamps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64).reshape(ts.size, -1)
    step = infer_step(ts) if ts.size >= 2 else None
    found = find_gaps(ts, step) if step is not None else []
    largest = max(found, key=lambda g: g.n_missing) if found else None  # the first of the largest
    return {
        "assets": list(assets),
        "rows": int(ts.size),
        "first": iso_utc(ts[0]),
        "last": iso_utc(ts[-1]),
        "first_timestamp": int(ts[0]),
        "last_timestamp": int(ts[-1]),
        "days": float(ts[-1] - ts[0]) / 86400.0,
        "step_seconds": step,
        "n_gaps": len(found),
        "missing_rows": int(sum(g.n_missing for g in found)),
        "largest_gap": None if largest is None else largest.to_dict(),
        "prices": {
            str(a): {"min": float(values[:, j].min()), "max": float(values[:, j].max()),
                     "first": float(values[0, j]), "last": float(values[-1, j])}
            for j, a in enumerate(assets)
        },
    }


def summarize(prices: Any) -> dict[str, Any]:
    """Summary of a :class:`Prices` (or anything :func:`as_prices` takes), JSON-ready.

    Keys: assets, rows, first / last (UTC ISO text) and first_timestamp / last_timestamp (unix s), days
    (span), step_seconds (most common step), n_gaps, missing_rows, largest_gap (a :meth:`Gap.to_dict` or
    None), time_jumps and skipped_minutes (rows that follow their predecessor by more than a minute, and
    the minutes skipped: the simulator reads each such jump as one minute), prices (per asset: min, max,
    first, last).
    """
    prices = as_prices(prices)
    out = _summary(prices.timestamps, prices.values, prices.assets)
    out["time_jumps"] = len(prices.time_jumps)
    out["skipped_minutes"] = prices.skipped_minutes
    return out


def summarize_series(series: Any) -> dict[str, Any]:
    """Summary (keys as :func:`summarize`) of one asset's pandas Series, e.g. from :func:`read_price_file`."""
    ts, values = _series_arrays(str(series.name), series, min_rows=1)
    return _summary(ts, values[:, None], [str(series.name)])


def _number(x: float) -> str:
    return f"{x:,.8g}"


def count_rows(n: int) -> str:
    """``1 row``, ``2 rows``, ``61,272 rows``."""
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def format_summary(summary: Mapping[str, Any], title: str | None = None) -> str:
    """The printable form of a :func:`summarize` dict (what ``tfmm data`` prints)."""
    width = max([6, *(len(a) for a in summary["assets"])]) + 2
    lines = [] if title is None else [title]
    row = lambda label, text: lines.append(f"  {label:<{width}}{text}")  # noqa: E731
    row("assets", ", ".join(summary["assets"]))
    row("rows", f"{summary['rows']:,} from {summary['first']} to {summary['last']} ({summary['days']:.2f} days)")
    row("step", "-" if summary["step_seconds"] is None else f"{summary['step_seconds']} s")
    if summary["n_gaps"] == 0:
        row("gaps", "none")
    else:
        big = summary["largest_gap"]
        row("gaps", f"{summary['n_gaps']} ({count_rows(summary['missing_rows']).replace(' row', ' missing row')}; "
                    f"largest {count_rows(big['missing_rows'])}, {big['first']} .. {big['last']})")
    if summary.get("time_jumps"):
        n = summary["time_jumps"]
        row("time", f"jumps {n} time{'s' if n != 1 else ''} over {summary['skipped_minutes']:,} missing minutes: "
                    f"the simulator reads each jump as one minute")
    for asset, p in summary["prices"].items():
        row(asset, f"{_number(p['min'])} .. {_number(p['max'])} (first {_number(p['first'])}, "
                   f"last {_number(p['last'])})")
    return "\n".join(lines)
