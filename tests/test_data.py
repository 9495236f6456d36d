"""Price data: loaders, alignment and gap policies, synthetic prices, the bundled set, summaries."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfmm.data import (
    Gap,
    PriceGapError,
    Prices,
    SamplingIntervalError,
    align_prices,
    equicorrelation_sqrt,
    example_prices,
    find_gaps,
    format_summary,
    infer_step,
    iso_utc,
    load_prices,
    read_price_file,
    summarize,
    synthetic_prices,
)

SET_2025 = "1m_2025-05-20_to_2025-08-18"
SET_2021 = "1m_2021-04-02_to_2021-05-14"
REPO = Path(__file__).resolve().parents[1]


def unix(*args: int) -> int:
    """Unix seconds of a UTC date-time, computed independently of tfmm."""
    return int(datetime(*args, tzinfo=timezone.utc).timestamp())


def write_csv(path: Path, timestamps, closes) -> Path:
    pd.DataFrame({"timestamp": timestamps, "close": closes}).to_csv(path, index=False)
    return path


def manifest(shared: Path, set_name: str, symbol: str) -> dict:
    entries = json.loads((shared / "MANIFEST.json").read_text())
    return next(e for e in entries if e["set"] == set_name and e["symbol"] == symbol)


# ------------------------------------------------------------------------------------------ shared real data


def test_shared_2025_set_loads_without_gaps(shared_data):
    prices = load_prices(shared_data / SET_2025)
    assert prices.assets == ("BTCUSDT", "ETHUSDT")
    assert prices.n_rows == 130_708
    assert prices.timestamps[0] == unix(2025, 5, 20, 0, 0)
    assert prices.timestamps[-1] == unix(2025, 8, 18, 18, 27)
    assert np.all(np.diff(prices.timestamps) == 60)
    for j, symbol in enumerate(prices.assets):
        entry = manifest(shared_data, SET_2025, symbol)
        assert prices.values[:, j].min() == entry["close_min"]
        assert prices.values[:, j].max() == entry["close_max"]


def test_shared_2021_set_gaps_are_reported(shared_data):
    with pytest.raises(PriceGapError) as info:
        load_prices(shared_data / SET_2021, assets=["BTCUSDT", "ETHUSDT"])
    gaps = info.value.gaps
    assert info.value.step == 60
    assert [g.n_missing for g in gaps] == [150, 284]
    assert [g.first for g in gaps] == [unix(2021, 4, 20, 2, 0), unix(2021, 4, 25, 4, 1)]
    assert [g.last for g in gaps] == [unix(2021, 4, 20, 4, 29), unix(2021, 4, 25, 8, 44)]
    assert all(g.assets == ("BTCUSDT", "ETHUSDT") for g in gaps)
    message = str(info.value)
    for text in ("2021-04-20T02:00:00Z", "2021-04-20T04:29:00Z", "2021-04-25T04:01:00Z", "150 missing", "284 missing",
                 '"ffill"', '"drop"'):
        assert text in message


def test_shared_2021_set_ffill_and_drop(shared_data):
    folder = shared_data / SET_2021
    # BTCUSDT ends first (20:25, the others 20:26 or later): the common window ends there.
    start, end = unix(2021, 4, 2, 0, 0), unix(2021, 5, 14, 20, 25)
    grid_rows = (end - start) // 60 + 1
    missing = manifest(shared_data, SET_2021, "BTCUSDT")["missing"]

    filled = load_prices(folder, assets=["BTCUSDT", "ETHUSDT"], gaps="ffill")
    assert filled.n_rows == grid_rows == 61_706
    assert np.all(np.diff(filled.timestamps) == 60)
    assert filled.timestamps[-1] == end
    row = {t: i for i, t in enumerate(filled.timestamps.tolist())}
    before, inside = row[unix(2021, 4, 20, 1, 59)], row[unix(2021, 4, 20, 3, 0)]
    np.testing.assert_array_equal(filled.values[inside], filled.values[before])

    dropped = load_prices(folder, assets=["BTCUSDT", "ETHUSDT"], gaps="drop")
    assert dropped.n_rows == grid_rows - missing == 61_272
    btc = pd.read_csv(folder / "BTCUSDT.csv")
    np.testing.assert_array_equal(dropped.timestamps, btc["timestamp"].to_numpy())
    np.testing.assert_array_equal(dropped.values[:, 0], btc["close"].to_numpy())
    summary = summarize(dropped)
    assert (summary["n_gaps"], summary["missing_rows"], summary["largest_gap"]["missing_rows"]) == (2, 434, 284)


def test_shared_2021_all_assets_sorted_and_trimmed(shared_data):
    prices = load_prices(shared_data / SET_2021, gaps="drop")
    assert prices.assets == ("BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert prices.timestamps[-1] == unix(2021, 5, 14, 20, 25)


# ------------------------------------------------------------------------------------------ bundled data


def test_example_prices_shape_and_names():
    prices = example_prices()
    assert prices.values.shape == (130_708, 2)
    assert prices.assets == ("BTCUSDT", "ETHUSDT")
    assert prices.timestamps[0] == unix(2025, 5, 20, 0, 0)
    assert np.all(np.diff(prices.timestamps) == 60)
    assert example_prices() is prices  # cached, immutable


def test_bundled_file_is_small_and_documented():
    parquet = REPO / "data" / "btc_eth_1m_2025.parquet"
    assert parquet.stat().st_size < 5 * 2**20
    readme = (REPO / "data" / "README.md").read_text()
    assert "Binance market data" in readme and "130,708" in readme


def test_example_prices_equal_the_shared_csvs(shared_data):
    prices = example_prices()
    for j, symbol in enumerate(prices.assets):
        csv = pd.read_csv(shared_data / SET_2025 / f"{symbol}.csv")
        np.testing.assert_array_equal(prices.timestamps, csv["timestamp"].to_numpy())
        np.testing.assert_array_equal(prices.values[:, j], csv["close"].to_numpy())


# ------------------------------------------------------------------------------------------ file formats


def test_iso_timestamps_match_unix_seconds(tmp_path):
    t0 = unix(2025, 1, 1, 0, 0)
    iso = ["2025-01-01T00:00:00Z", "2025-01-01T00:01:00+00:00", "2025-01-01 00:02:00", "2025-01-01T02:03:00+02:00"]
    write_csv(tmp_path / "AAA.csv", iso, [1.0, 2.0, 3.0, 4.0])
    write_csv(tmp_path / "BBB.csv", [t0, t0 + 60, t0 + 120, t0 + 180], [5.0, 6.0, 7.0, 8.0])
    prices = load_prices(tmp_path)
    np.testing.assert_array_equal(prices.timestamps, t0 + 60 * np.arange(4))
    np.testing.assert_array_equal(prices.values, [[1, 5], [2, 6], [3, 7], [4, 8]])


def test_datetime_columns_are_read_as_utc(tmp_path):
    times = pd.date_range("2025-01-01", periods=3, freq="min", tz="UTC")
    pd.DataFrame({"timestamp": times.tz_convert("Asia/Tokyo"), "close": [1.0, 2.0, 3.0]}).to_parquet(
        tmp_path / "AAA.parquet")
    pd.DataFrame({"timestamp": times.tz_localize(None), "close": [4.0, 5.0, 6.0]}).to_parquet(tmp_path / "BBB.parquet")
    prices = load_prices(tmp_path)
    np.testing.assert_array_equal(prices.timestamps, unix(2025, 1, 1, 0, 0) + 60 * np.arange(3))
    np.testing.assert_array_equal(prices.values, [[1, 4], [2, 5], [3, 6]])


def test_parquet_and_gzip_round_trip(tmp_path):
    original = synthetic_prices(n_assets=3, n_minutes=500, seed=3)
    frame = original.to_pandas()
    timestamps = original.timestamps
    for name in original.assets[:2]:
        table = pd.DataFrame({"timestamp": timestamps, "close": frame[name].to_numpy()})
        table.to_parquet(tmp_path / f"{name}.parquet")
    name = original.assets[2]
    pd.DataFrame({"timestamp": timestamps, "close": frame[name].to_numpy()}).to_csv(
        tmp_path / f"{name}.csv.gz", index=False, float_format="%.17g")
    loaded = load_prices(tmp_path)
    assert loaded.assets == original.assets
    np.testing.assert_array_equal(loaded.timestamps, original.timestamps)
    np.testing.assert_array_equal(loaded.values, original.values)


def test_wide_parquet_holds_one_asset_per_column(tmp_path):
    original = synthetic_prices(n_assets=2, n_minutes=100, seed=1)
    wide = pd.DataFrame({"timestamp": original.timestamps, "X": original.values[:, 0], "Y": original.values[:, 1]})
    wide.to_parquet(tmp_path / "pair.parquet")
    loaded = load_prices(tmp_path / "pair.parquet", layout="wide")
    assert loaded.assets == ("X", "Y")
    np.testing.assert_array_equal(loaded.values, original.values)
    # without the explicit layout a file with no close column is an error (issue 14, item 6)
    with pytest.raises(ValueError, match=r"pair.parquet: no 'close' column .*layout='wide'"):
        load_prices(tmp_path / "pair.parquet")


def test_explicit_files_keep_their_order_and_assets_select(tmp_path):
    t = 60 * np.arange(5)
    a = write_csv(tmp_path / "AAA.csv", t, [1.0] * 5)
    b = write_csv(tmp_path / "BBB.csv", t, [2.0] * 5)
    write_csv(tmp_path / "CCC.csv", t, [3.0] * 5)
    assert load_prices([b, a]).assets == ("BBB", "AAA")
    selected = load_prices(tmp_path, assets=["CCC", "AAA"])
    assert selected.assets == ("CCC", "AAA")
    np.testing.assert_array_equal(selected.values[0], [3.0, 1.0])
    with pytest.raises(ValueError, match="assets not found: ZZZ; available: .*AAA"):
        load_prices(tmp_path, assets=["AAA", "ZZZ"])
    sub = tmp_path / "other"
    sub.mkdir()
    write_csv(sub / "AAA.csv", t, [9.0] * 5)
    with pytest.raises(ValueError, match="'AAA' appears in both"):
        load_prices([tmp_path, sub])


def test_rows_only_some_assets_have_are_trimmed(tmp_path):
    write_csv(tmp_path / "AAA.csv", 60 * np.arange(0, 10), np.arange(1.0, 11.0))
    write_csv(tmp_path / "BBB.csv", 60 * np.arange(3, 14), np.arange(1.0, 12.0))
    prices = load_prices(tmp_path)
    np.testing.assert_array_equal(prices.timestamps, 60 * np.arange(3, 10))
    np.testing.assert_array_equal(prices.values[:, 0], np.arange(4.0, 11.0))
    np.testing.assert_array_equal(prices.values[:, 1], np.arange(1.0, 8.0))


def test_small_gaps_each_policy(tmp_path):
    t = 60 * np.arange(10)
    keep_a = np.isin(np.arange(10), [3, 4], invert=True)
    keep_b = np.arange(10) != 7
    write_csv(tmp_path / "AAA.csv", t[keep_a], np.arange(1.0, 11.0)[keep_a])
    write_csv(tmp_path / "BBB.csv", t[keep_b], np.arange(11.0, 21.0)[keep_b])
    with pytest.raises(PriceGapError) as info:
        load_prices(tmp_path)
    assert info.value.gaps == [Gap(180, 240, 2, ("AAA",)), Gap(420, 420, 1, ("BBB",))]
    assert "1970-01-01T00:03:00Z .. 1970-01-01T00:04:00Z: 2 missing rows (AAA)" in str(info.value)
    filled = load_prices(tmp_path, gaps="ffill")
    np.testing.assert_array_equal(filled.values[:, 0], [1, 2, 3, 3, 3, 6, 7, 8, 9, 10])
    np.testing.assert_array_equal(filled.values[:, 1], [11, 12, 13, 14, 15, 16, 17, 17, 19, 20])
    dropped = load_prices(tmp_path, gaps="drop")
    np.testing.assert_array_equal(dropped.timestamps, 60 * np.array([0, 1, 2, 5, 6, 8, 9]))


def test_ffill_uses_the_price_before_the_window(tmp_path):
    # BBB starts at minute 2; AAA has no row at minute 2, so its last earlier price (minute 1) fills it.
    write_csv(tmp_path / "AAA.csv", 60 * np.array([0, 1, 3, 4]), [1.0, 2.0, 4.0, 5.0])
    write_csv(tmp_path / "BBB.csv", 60 * np.array([2, 3, 4]), [7.0, 8.0, 9.0])
    filled = load_prices(tmp_path, gaps="ffill")
    np.testing.assert_array_equal(filled.timestamps, [120, 180, 240])
    np.testing.assert_array_equal(filled.values[:, 0], [2.0, 4.0, 5.0])
    with pytest.raises(PriceGapError) as info:
        load_prices(tmp_path)
    assert info.value.gaps == [Gap(120, 120, 1, ("AAA",))]


def test_off_grid_timestamps(tmp_path):
    write_csv(tmp_path / "AAA.csv", [0, 60, 120, 180, 240], [1.0] * 5)
    write_csv(tmp_path / "BBB.csv", [0, 60, 150, 180, 240], [2.0] * 5)
    for policy in ("error", "ffill"):
        with pytest.raises(ValueError, match=r"1 timestamps are not on the 60 s grid .*00:02:30Z"):
            load_prices(tmp_path, gaps=policy)
    np.testing.assert_array_equal(load_prices(tmp_path, gaps="drop").timestamps, [0, 60, 180, 240])


@pytest.mark.parametrize(
    "content, message",
    [
        ("timestamp,close\n0,1\n60,0\n", r"finite and > 0; column 'close' has 0 at 1970-01-01T00:01:00Z \(row 1\)"),
        ("timestamp,close\n0,1\n60,-3\n", "finite and > 0; column 'close' has -3 at"),
        ("timestamp,close\n0,1\n60,abc\n", "finite and > 0; column 'close' has 'abc' at"),
        ("timestamp,close\n0,1\n60,nan\n", "finite and > 0"),
        ("timestamp,close\n0,1\n0,2\n", "duplicate timestamp 1970-01-01T00:00:00Z"),
        ("time,close\n0,1\n60,2\n", "no 'timestamp' column"),
        ("timestamp,close\n1735689600000,1\n1735689660000,2\n", "milliseconds"),
        ("timestamp,close\nyesterday,1\ntoday,2\n", "unix seconds or ISO-8601"),
        ("timestamp,close\n", "no rows"),
    ],
)
def test_malformed_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "AAA.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_price_file(path)
    assert str(path) in str(info.value)


def test_unsorted_rows_are_sorted(tmp_path):
    series = read_price_file(write_csv(tmp_path / "AAA.csv", [120, 0, 60], [3.0, 1.0, 2.0]))["AAA"]
    np.testing.assert_array_equal(series.index.to_numpy(), [0, 60, 120])
    np.testing.assert_array_equal(series.to_numpy(), [1.0, 2.0, 3.0])


def test_argument_errors(tmp_path):
    write_csv(tmp_path / "AAA.csv", [0, 60], [1.0, 2.0])
    with pytest.raises(ValueError, match="gaps must be one of 'error', 'ffill', 'drop'"):
        load_prices(tmp_path, gaps="interpolate")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_prices(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no \*.csv"):
        load_prices(tmp_path / "empty")
    (tmp_path / "AAA.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_prices(tmp_path / "AAA.txt")
    with pytest.raises(ValueError, match="at least two assets"):
        load_prices(tmp_path / "AAA.csv")
    write_csv(tmp_path / "BBB.csv", [600, 660], [1.0, 2.0])
    with pytest.raises(ValueError, match="share fewer than two timestamps"):
        load_prices(tmp_path)


# ------------------------------------------------------------------------------------------ alignment properties


@st.composite
def presence(draw):
    """Per-asset presence masks over a 60 s grid, each asset with at least two rows."""
    n_assets = draw(st.integers(2, 3))
    length = draw(st.integers(3, 30))
    masks = []
    for _ in range(n_assets):
        mask = np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)))
        i, j = sorted(draw(st.lists(st.integers(0, length - 1), min_size=2, max_size=2, unique=True)))
        mask[[i, j]] = True
        masks.append(mask)
    return masks


def _series_from(masks):
    out = {}
    for k, mask in enumerate(masks):
        rows = np.nonzero(mask)[0]
        out[f"A{k}"] = pd.Series(100.0 * (k + 1) + rows, index=60 * rows)
    return out


@given(presence())
def test_alignment_matches_a_pandas_reference(masks):
    series = _series_from(masks)
    table = pd.concat(series, axis=1).sort_index()  # outer join: NaN where an asset has no row
    start = max(s.index[0] for s in series.values())
    end = min(s.index[-1] for s in series.values())
    if start >= end:
        with pytest.raises(ValueError, match="share fewer"):
            align_prices(series)
        return
    window = table.loc[start:end]
    common = window.dropna()
    if len(common) >= 2 and pd.Series(np.diff(common.index.to_numpy())).mode().min() == 60:
        dropped = align_prices(series, gaps="drop")
        np.testing.assert_array_equal(dropped.timestamps, common.index.to_numpy())
        np.testing.assert_array_equal(dropped.values, common.to_numpy())
        jumps = np.diff(common.index.to_numpy()) // 60 - 1
        assert len(dropped.time_jumps) == int((jumps > 0).sum()) and dropped.skipped_minutes == int(jumps.sum())
    elif len(common) >= 2:  # the common rows are mostly more than a minute apart: not minute data
        with pytest.raises(SamplingIntervalError, match="not 60 s"):
            align_prices(series, gaps="drop")
    else:
        with pytest.raises(ValueError, match="fewer than two timestamps have a price"):
            align_prices(series, gaps="drop")
    union = window.index.to_numpy()
    step = pd.Series(np.diff(union)).mode().min()  # most common step, smallest on ties
    if step != 60:  # rows are minutes, or it is an error (issue 14, item 2)
        for policy in ("error", "ffill"):
            with pytest.raises(SamplingIntervalError, match=f"rows are {step} s .* apart"):
                align_prices(series, gaps=policy)
    elif np.all((union - start) % step == 0):
        grid = np.arange(start, end + 1, step)
        reference = table.reindex(table.index.union(grid)).ffill().loc[grid]
        filled = align_prices(series, gaps="ffill")
        np.testing.assert_array_equal(filled.timestamps, grid)
        np.testing.assert_array_equal(filled.values, reference.to_numpy())
        missing_rows = int(table.reindex(grid).isna().any(axis=1).sum())
        if missing_rows == 0:
            np.testing.assert_array_equal(align_prices(series).values, reference.to_numpy())
        else:
            with pytest.raises(PriceGapError) as info:
                align_prices(series)
            assert sum(g.n_missing for g in info.value.gaps) == missing_rows
    else:
        with pytest.raises(ValueError, match="not on the"):
            align_prices(series, gaps="ffill")


@given(st.lists(st.integers(0, 200), min_size=2, max_size=60, unique=True), st.sampled_from([1, 60, 3600]))
def test_find_gaps_accounts_for_every_missing_row(rows, step):
    ts = np.sort(np.array(rows)) * step
    gaps = find_gaps(ts, step)
    assert len(ts) + sum(g.n_missing for g in gaps) == (ts[-1] - ts[0]) // step + 1
    present = set(ts.tolist())
    for g in gaps:
        assert g.first - step in present and g.last + step in present
        assert g.last - g.first == (g.n_missing - 1) * step
        assert not present & set(range(g.first, g.last + 1, step))


def test_infer_step_is_the_most_common_difference():
    assert infer_step([0, 60, 120, 300, 360]) == 60
    assert infer_step([0, 60, 180]) == 60  # tie between 60 and 120: the smaller
    with pytest.raises(ValueError, match="strictly increasing"):
        infer_step([0, 60, 60])


def test_find_gaps_off_grid_difference():
    assert find_gaps([0, 60, 210, 270], 60) == [Gap(120, 180, 2)]


# ------------------------------------------------------------------------------------------ Prices validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"values": [[1.0, np.nan], [1.0, 2.0]]}, r"finite and > 0; first bad entry at row 0, column 1"),
        ({"values": [[1.0, 2.0], [np.inf, 2.0]]}, r"finite and > 0; first bad entry at row 1, column 0"),
        ({"values": [[1.0, 2.0], [0.0, 2.0]]}, r"finite and > 0; first bad entry at row 1, column 0: 0\.0"),
        ({"values": [[1.0, 2.0], [1.0, -2.0]]}, r"row 1, column 1: -2\.0"),
        ({"values": [1.0, 2.0, 3.0]}, r"2-D array .* got shape \(3,\)"),
        ({"values": [[1.0, 2.0]]}, r"T rows >= 2.* got shape \(1, 2\)"),
        ({"values": [[1.0], [2.0]]}, r"N assets >= 2.* got shape \(2, 1\)"),
        ({"values": np.ones((3, 2)), "timestamps": [0, 60]}, r"timestamps must have shape \(3,\)"),
        ({"values": np.ones((3, 2)), "timestamps": [0, 60, 60]}, "strictly increasing; row 2 is not after row 1"),
        ({"values": np.ones((3, 2)), "timestamps": [0, 120, 60]}, "strictly increasing; row 2"),
        ({"values": np.ones((3, 2)), "assets": ["BTC", "BTC"]}, "2 distinct names"),
        ({"values": np.ones((3, 2)), "assets": ["BTC"]}, "2 distinct names"),
    ],
)
def test_prices_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Prices(**kwargs)


# ------------------------------------------------------------------------------------------ synthetic prices


def test_synthetic_prices_reproducible_by_seed():
    a = synthetic_prices(n_assets=3, n_minutes=2000, seed=7)
    b = synthetic_prices(n_assets=3, n_minutes=2000, seed=7)
    c = synthetic_prices(n_assets=3, n_minutes=2000, seed=8)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    assert a.values.shape == (2000, 3)
    np.testing.assert_array_equal(a.values[0], [100.0, 100.0, 100.0])
    assert a.timestamps[0] == unix(2025, 1, 1, 0, 0)
    assert np.all(np.diff(a.timestamps) == 60)


def test_synthetic_prices_options():
    p = synthetic_prices(n_minutes=10, initial=[30000.0, 2000.0], start_time="2024-03-01T12:00:00Z")
    np.testing.assert_array_equal(p.values[0], [30000.0, 2000.0])
    assert p.timestamps[0] == unix(2024, 3, 1, 12, 0)
    flat = synthetic_prices(n_minutes=1000, drift=[0.0, 0.5], vol=0.0)
    np.testing.assert_array_equal(flat.values[:, 0], 100.0)
    np.testing.assert_allclose(flat.values[:, 1], 100.0 * np.exp(0.5 * np.arange(1000) / 525_600), rtol=1e-12)


def test_synthetic_log_returns_have_the_requested_vol_and_corr():
    vol = np.array([0.8, 0.4, 1.2])
    n = 200_000
    p = synthetic_prices(n_assets=3, n_minutes=n, seed=11, vol=vol, corr=0.3)
    r = np.diff(np.log(p.values), axis=0)
    # standard errors: vol ~ vol / sqrt(2n) (0.16 %), corr ~ (1 - c^2) / sqrt(n) (0.002)
    np.testing.assert_allclose(r.std(axis=0) * math.sqrt(525_600), vol, rtol=0.01)
    c = np.corrcoef(r.T)
    np.testing.assert_allclose(c[np.triu_indices(3, 1)], 0.3, atol=0.01)


def test_synthetic_drift_is_the_annualised_arithmetic_drift():
    mu, sigma, n = 0.5, 0.05, 400_000
    p = synthetic_prices(n_minutes=n, seed=5, drift=mu, vol=sigma, corr=0.0)
    r = np.diff(np.log(p.values), axis=0)
    annual_mean = r.mean(axis=0) * 525_600
    standard_error = sigma * math.sqrt(525_600 / (n - 1))
    assert np.all(np.abs(annual_mean - (mu - sigma**2 / 2)) < 5 * standard_error)


@pytest.mark.parametrize("n, corr", [(2, -1.0), (3, -0.5), (4, 0.0), (4, 0.7), (3, 1.0)])
def test_equicorrelation_sqrt_squares_to_the_matrix(n, corr):
    root = equicorrelation_sqrt(n, corr)
    target = np.full((n, n), corr) + (1 - corr) * np.eye(n)
    np.testing.assert_allclose(root @ root, target, atol=1e-12)
    np.testing.assert_allclose(root, root.T)


def test_synthetic_argument_errors():
    with pytest.raises(ValueError, match=r"corr must lie in \[-0.5, 1\] for 3 assets"):
        synthetic_prices(n_assets=3, corr=-0.6)
    with pytest.raises(ValueError, match="vol must be >= 0"):
        synthetic_prices(vol=-0.1)
    with pytest.raises(ValueError, match=r"drift must be a scalar or have shape \(2,\)"):
        synthetic_prices(drift=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="n_assets must be an integer >= 2"):
        synthetic_prices(n_assets=1)
    with pytest.raises(ValueError, match="initial prices must be > 0"):
        synthetic_prices(initial=[1.0, 0.0])


# ------------------------------------------------------------------------------------------ summaries


def test_summarize_counts_gaps_and_ranges():
    ts = 60 * np.array([0, 1, 2, 5, 6, 16, 17])  # gaps: minutes 3-4 (2 rows), 7-15 (9 rows)
    values = np.column_stack([np.arange(1.0, 8.0), np.array([5.0, 4, 9, 3, 8, 2, 6])])
    s = summarize(Prices(values, ts, ["AAA", "BBB"]))
    assert s["rows"] == 7 and s["step_seconds"] == 60
    assert (s["n_gaps"], s["missing_rows"]) == (2, 11)
    assert s["largest_gap"] == Gap(420, 900, 9).to_dict()
    assert s["first"] == "1970-01-01T00:00:00Z" and s["last"] == "1970-01-01T00:17:00Z"
    assert s["prices"]["AAA"] == {"min": 1.0, "max": 7.0, "first": 1.0, "last": 7.0}
    assert s["prices"]["BBB"] == {"min": 2.0, "max": 9.0, "first": 5.0, "last": 6.0}
    json.dumps(s)  # JSON-ready
    text = format_summary(s, "title")
    assert text.splitlines()[0] == "title"
    assert "2 (11 missing rows; largest 9 rows, 1970-01-01T00:07:00Z .. 1970-01-01T00:15:00Z)" in text
    assert "BBB" in text and "2 .. 9 (first 5, last 6)" in text


def test_summarize_without_gaps():
    s = summarize(synthetic_prices(n_minutes=1441))
    assert (s["n_gaps"], s["missing_rows"], s["largest_gap"], s["days"]) == (0, 0, None, 1.0)
    assert "gaps    none" in format_summary(s)


def test_iso_utc():
    assert iso_utc(unix(2021, 4, 20, 2, 0)) == "2021-04-20T02:00:00Z"
