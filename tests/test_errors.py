"""Issue 14, "no silent wrong answer, no lost run": what tfmm refuses, and the one-line errors of the CLI.

Items: 1 non-finite states and out-of-range parameters; 2 rows are minutes; 3 run-file keys and types;
4 run folders (CLI side; the training side is in test_training.py); 5 one line, no traceback; 6 the
smaller ones. Item 7 (every strategy on every backend) is tests/test_strategies_all_backends.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tfmm
from tfmm import api, specs
from tfmm.cli import main
from tfmm.data import (
    Prices,
    SamplingIntervalError,
    as_prices,
    format_summary,
    load_prices,
    read_price_file,
    summarize,
    synthetic_prices,
)

DAY = 1440
ARRAY_BACKENDS = [b for b in ("jax", "torch") if b in tfmm.available_backends()]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------------------------------------- item 1


@pytest.mark.parametrize(
    "params, pattern",
    [
        ({"log_k": [4.32, 4.32], "logit_lambda": [-800.0, -800.0]},
         r"params\['logit_lambda'\]\[0\]=-800.0 is invalid: lambda = sigmoid\(logit\) is 0"),
        ({"log_k": [62.0, 4.0], "logit_lambda": [0.7, 0.7]},
         r"params\['log_k'\]\[0\]=62.0 is invalid: k = 2\^log_k m\(lambda\) is at least .* above 2\^40"),
        ({"log_k": [[4.0, 4.0], [4.0, 2000.0]], "logit_lambda": [[0.7, 0.7], [0.7, 0.7]]},
         r"params\['log_k'\]\[set 1, asset 1\]=2000.0 is invalid"),
    ],
)
def test_out_of_range_parameters_rejected_at_construction(params, pattern):
    with pytest.raises(ValueError, match=pattern):
        tfmm.Strategy("momentum", params)


def test_channel_and_second_memory_parameters_are_checked():
    base = {"log_k": [1.0, 1.0], "logit_lambda": [0.0, 0.0], "raw_exponent": [0.0, 0.0],
            "sp_amplitude": [0.0, 0.0], "sp_width": [0.0, 0.0]}
    with pytest.raises(ValueError, match=r"params\['sp_width'\]\[1\]=-1000000000.0 is invalid: the channel width"):
        tfmm.Strategy("mean_reversion_channel", {**base, "sp_width": [0.0, -1e9]})
    with pytest.raises(ValueError, match=r"params\['raw_exponent'\]\[0\]=1e\+200 is invalid: sp\(raw_exponent\)"):
        tfmm.Strategy("power_channel", {k: base[k] for k in ("log_k", "logit_lambda")} | {"raw_exponent": [1e200, 0]})
    with pytest.raises(ValueError, match=r"params\['logit_lambda_2'\]\[0\]=-900.0 is invalid"):
        tfmm.Strategy("difference_momentum", {"log_k": [1.0, 1.0], "logit_lambda": [0.0, 0.0],
                                              "logit_lambda_2": [-900.0, 0.0]})
    # min_variance's logit_lambda_2 is a mixing weight, not a decay: 0 or 1 are both meaningful
    tfmm.Strategy("min_variance", {"logit_lambda": [0.0, 0.0], "logit_lambda_2": [-900.0, 900.0]})


def test_k_is_checked_with_the_pools_chunk_period():
    # log_k = 45 passes construction (k < 2^40 with 1-minute chunks) but not with hourly chunks
    strategy = tfmm.Strategy("momentum", {"log_k": [45.0, 45.0], "logit_lambda": [0.7, 0.7]})
    prices = synthetic_prices(n_minutes=3 * DAY)
    with pytest.raises(ValueError, match=r"k = 2\^log_k m\(lambda\) is 1.4e\+13 with chunk_period=60.*log_k <= 41.3"):
        api.make_request(prices, strategy, tfmm.Pool(chunk_period=60))
    api.make_request(prices, strategy, tfmm.Pool(chunk_period=1))


def _nan_weights_strategy():
    """Two parameter sets; set 1 has lambda = sigmoid(-120): > 0 in float64, 0 in float32 (NaN weights)."""
    return tfmm.Strategy("momentum", {"log_k": [[4.32] * 2] * 2, "logit_lambda": [[0.5, 0.5], [-120.0, -120.0]]})


@pytest.mark.parametrize("backend", ARRAY_BACKENDS)
def test_nonfinite_weights_raise_naming_quantity_row_set_and_start(backend):
    prices = synthetic_prices(n_minutes=2 * DAY, seed=1)
    pool = tfmm.Pool(chunk_period=60)
    with tfmm.use(backend):
        with pytest.raises(api.NonFiniteSimulationError,
                           match=r"non-finite weights at bout row 60 \(price row 180\), parameter set 1, bout "
                                 r"start 120: \[nan, nan\].*dtype='float64'") as info:
            tfmm.simulate(prices, _nan_weights_strategy(), pool, start=np.array([120, 300]), length=DAY,
                          dtype="float32")
        assert (info.value.quantity, info.value.row, info.value.set_index, info.value.start) == ("weights", 60, 1, 120)
        sim = tfmm.simulate(prices, _nan_weights_strategy(), pool, start=np.array([120, 300]), length=DAY)
        assert np.isfinite(sim.to_numpy().weights).all()  # the same parameters are fine in float64


def test_check_finite_names_reserves_and_values_unbatched():
    prices = synthetic_prices(n_minutes=DAY, seed=2)
    strategy = tfmm.Strategy.from_memory_days("momentum", 2, memory_days=0.2, chunk_period=60)
    with tfmm.use("reference"):
        sim = tfmm.simulate(prices, strategy, tfmm.Pool(chunk_period=60), start=10, length=200).to_numpy()
    api.check_finite(sim)
    values = sim.values.copy()
    values[7] = np.inf
    reserves = sim.reserves.copy()
    reserves[9, 1] = np.nan
    bad = dataclasses.replace(sim, values=values, reserves=reserves)
    with pytest.raises(api.NonFiniteSimulationError, match=r"non-finite values at bout row 7 \(price row 17\): inf"):
        api.check_finite(bad)


# ---------------------------------------------------------------------------------------------- item 2


def _write(path: Path, timestamps, closes, **extra) -> Path:
    pd.DataFrame({"timestamp": timestamps, "close": closes, **extra}).to_csv(path, index=False)
    return path


def test_hourly_files_are_an_error_that_says_how_to_resample(tmp_path):
    t = 3600 * np.arange(50)
    _write(tmp_path / "AAA.csv", t, np.linspace(1, 2, 50))
    _write(tmp_path / "BBB.csv", t, np.linspace(2, 1, 50))
    with pytest.raises(SamplingIntervalError, match=r"rows are 3600 s \(1 hour\) apart .* not 60 s.*resample"
                                                    r".*shift\(freq='59min'\)\.resample\('1min'\)") as info:
        load_prices(tmp_path)
    assert info.value.step == 3600


def test_hourly_dataframe_and_array_timestamps_are_an_error():
    index = pd.date_range("2024-01-01", periods=30, freq="h", tz="UTC")
    frame = pd.DataFrame({"A": np.linspace(1, 2, 30), "B": 1.0}, index=index)
    with pytest.raises(SamplingIntervalError, match=r"3600 s \(1 hour\) apart"):
        as_prices(frame)
    with pytest.raises(SamplingIntervalError, match="30 s apart"):
        Prices(np.ones((10, 2)), 30 * np.arange(10))
    with pytest.raises(SamplingIntervalError, match=r"row 2 .* is 90 s after row 1, not a whole number of minutes"):
        Prices(np.ones((5, 2)), [0, 60, 150, 180, 240])


def test_offset_assets_do_not_build_a_30_second_grid(tmp_path):
    t = 60 * np.arange(20)
    _write(tmp_path / "AAA.csv", t, 1.0)
    _write(tmp_path / "BBB.csv", t + 30, 2.0)
    for policy in ("error", "ffill"):
        with pytest.raises(SamplingIntervalError, match=r"different seconds past the minute \(AAA at :00, BBB at :30\)"):
            load_prices(tmp_path, gaps=policy)


def test_dropped_gaps_are_recorded_as_time_jumps(tmp_path, capsys):
    t = 60 * np.arange(300)
    keep = (t < 60 * 100) | (t >= 60 * 200)  # 100 minutes missing in BBB
    _write(tmp_path / "AAA.csv", t, np.linspace(1, 2, 300))
    _write(tmp_path / "BBB.csv", t[keep], 2.0)
    dropped = load_prices(tmp_path, gaps="drop")
    assert len(dropped.time_jumps) == 1 and dropped.skipped_minutes == 100
    assert dropped.time_jumps[0].first == 6000 and dropped.time_jumps[0].n_missing == 100
    s = summarize(dropped)
    assert (s["time_jumps"], s["skipped_minutes"]) == (1, 100)
    assert "jumps 1 time over 100 missing minutes: the simulator reads each jump as one minute" in format_summary(s)
    assert dropped.slice(0, 150).time_jumps == dropped.time_jumps  # slices keep their record
    assert load_prices(tmp_path, gaps="ffill").time_jumps == ()
    code, out, _ = run_cli(capsys, "data", tmp_path, "--gaps", "drop")
    assert code == 0 and "time    jumps 1 time over 100 missing minutes" in out
    code, out, _ = run_cli(capsys, "data", tmp_path, "--gaps", "drop", "--json")
    result = json.loads(out)
    assert result["aligned"]["time_jumps"] == 1 and "time jumps 1 times over 100 missing minutes" in result["note"]


def test_tfmm_data_reports_hourly_files_without_failing(capsys, shared_data):
    hourly = shared_data / "1h_2017-08-17_to_2022-10-11"
    code, out, err = run_cli(capsys, "data", hourly / "BTCUSDT.csv", hourly / "ETHUSDT.csv")
    assert code == 0, err
    assert "step 3600 s" in out and "not built" in out and "rows are 3600 s (1 hour) apart" in out


# ---------------------------------------------------------------------------------------------- item 3


RUN_FILE = """
[data]
paths = "bundled"

[run]
start = 0
length = 3000

[pool]
fee = 0.003
chunk_period = 60

[strategy]
name = "momentum"
params = {log_k = [2.0, 2.0], logit_lambda = [3.0, 3.0]}
"""


@pytest.mark.parametrize(
    "edit, message",
    [
        (("paths = \"bundled\"", "path = \"bundled\""),
         r"unknown key 'path' in \[data\]; did you mean 'paths'\?"),
        (("length = 3000", "lenght = 3000"), r"unknown key 'lenght' in \[run\]; did you mean 'length'\?"),
        (("[run]", "[runn]"), r"unknown table \[runn\]; did you mean \[run\]\?"),
        (("fee = 0.003", "fe = 0.003"), r"unknown key 'fe' in \[pool\]; did you mean 'fee'\?"),
        (("fee = 0.003", "fee = \"0.003\""), r"\[pool\] fee must be a number, got str '0.003'"),
        (("chunk_period = 60", "chunk_period = 60.0"), r"\[pool\] chunk_period must be an integer, got float 60.0"),
        (("start = 0", "start = 1.7"), r"\[run\] start must be an integer, got float 1.7"),
        (("length = 3000", "length = \"3000\""), r"\[run\] length must be an integer, got str '3000'"),
        (("name = \"momentum\"", "name = \"momentum\"\nbeta_ = 1.0"),
         r"unknown key 'beta_' in \[strategy\]; did you mean 'beta'\?"),
        (("logit_lambda =", "logit_lamda ="), r"unknown \['logit_lamda'\].*did you mean 'logit_lamda' -> 'logit_lambda'"),
        (("[pool]", "[pool\n"), r"not valid TOML"),
    ],
)
def test_run_file_typos_and_types_are_one_line_errors(tmp_path, capsys, edit, message):
    path = tmp_path / "run.toml"
    path.write_text(RUN_FILE.replace(*edit, 1))
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "simulate", "--config", path, "--out", out_dir, "--backend", "reference")
    assert code == 1, err
    assert err.startswith(f"tfmm simulate: error: {path}") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_train_table_keys_and_nested_smoothing_are_checked():
    with pytest.raises(ValueError, match=r"unknown key 'learnig_rate' in \[train\]; did you mean 'learning_rate'"):
        specs.from_toml("[train]\nlearnig_rate = 0.1\n")
    with pytest.raises(ValueError, match=r"unknown key 'gate_temp' in \[train.smoothing\]; did you mean 'gate_temperature'"):
        specs.from_toml("[train.smoothing]\ngate_temp = 1.0\n")
    with pytest.raises(TypeError, match=r"\[train\] n_iterations must be an integer, got float 10.5"):
        specs.from_toml("[train]\nn_iterations = 10.5\n")
    with pytest.raises(ValueError, match=r"key 'fee' is outside any table; did you mean to put it under \[pool\]"):
        specs.from_toml("fee = 0.1\n", tables=("pool",))


# ---------------------------------------------------------------------------------------------- items 4, 5


@pytest.fixture
def small_run_file(tmp_path):
    prices = synthetic_prices(n_assets=2, n_minutes=12 * DAY, seed=4, vol=0.6)
    paths = []
    for i, name in enumerate(["AAA", "BBB"]):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame({"timestamp": prices.timestamps, "close": prices.values[:, i]}).to_csv(path, index=False)
        paths.append(str(path))
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=1e-3)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=4, pool=pool)
    train = tfmm.TrainConfig(bout_length=3 * DAY, batch_size=2, n_iterations=2, eval_every=1, burn_in=DAY)
    path = tmp_path / "run.toml"
    path.write_text(tfmm.to_toml(pool=pool, strategy=strategy, train=train, data={"paths": paths},
                                 run={"start": 2 * DAY, "length": 3 * DAY, "backend": "jax"}))
    return path


def test_train_refuses_a_folder_holding_a_run_and_a_rejected_resume_writes_nothing(small_run_file, tmp_path, capsys):
    out = tmp_path / "train"
    out.mkdir()
    (out / "config.toml").write_text("# a previous run\n")
    (out / "metrics.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(capsys, "train", "--config", small_run_file, "--out", out, "--quiet")
    assert code == 1 and "already holds a training run (config.toml, metrics.json)" in err and "--overwrite" in err
    code, _, err = run_cli(capsys, "train", "--config", small_run_file, "--out", out, "--quiet", "--resume")
    assert code == 1 and "no checkpoint to resume from" in err
    code, _, err = run_cli(capsys, "train", "--config", small_run_file, "--out", out, "--resume", "--overwrite")
    assert code == 1 and "exclude each other" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert "Traceback" not in err


def test_ctrl_c_gives_130_and_says_how_to_resume(small_run_file, tmp_path, capsys, monkeypatch):
    from tfmm import training

    out = tmp_path / "train"

    def interrupted(*args, **kwargs):
        Path(kwargs["run_dir"]).mkdir()
        (Path(kwargs["run_dir"]) / training.CHECKPOINT).write_bytes(b"")
        raise training.TrainingInterrupted("interrupted", 7, 6, Path(kwargs["run_dir"]))

    monkeypatch.setattr(tfmm, "train", interrupted)
    code, _, err = run_cli(capsys, "train", "--config", small_run_file, "--out", out, "--quiet")
    assert code == 130
    assert err.strip() == (f"tfmm train: interrupted at step 7; resume with --resume: tfmm train --config "
                           f"{small_run_file} --out {out} --resume (last checkpoint: step 6)")


@pytest.mark.parametrize(
    "error",
    [TypeError("bad type"), KeyError("fee"), FileNotFoundError("no such file: x"), ImportError("no jax"),
     tfmm.TrainingDivergedError("non-finite objective at step 3", {})],
)
def test_user_errors_print_one_line_with_status_1(small_run_file, tmp_path, capsys, monkeypatch, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(tfmm, "train", fail)
    code, out, err = run_cli(capsys, "train", "--config", small_run_file, "--out", tmp_path / "t", "--quiet")
    assert code == 1 and len(err.strip().splitlines()) == 1 and err.startswith("tfmm train: error: ")
    assert "Traceback" not in err
    if isinstance(error, KeyError):
        assert "missing key 'fee'" in err


def test_a_bug_keeps_its_traceback(small_run_file, tmp_path, monkeypatch):
    def bug(*args, **kwargs):
        raise AttributeError("a bug")

    monkeypatch.setattr(tfmm, "train", bug)
    with pytest.raises(AttributeError):
        main(["train", "--config", str(small_run_file), "--out", str(tmp_path / "t"), "--quiet"])


def test_missing_run_file_and_params_file(tmp_path, capsys, small_run_file):
    code, _, err = run_cli(capsys, "simulate", "--config", tmp_path / "nope.toml")
    assert code == 1 and "no such run file" in err
    (tmp_path / "p.toml").write_text("[pool]\nfee = 0.001\n")
    code, _, err = run_cli(capsys, "evaluate", "--config", small_run_file, "--params", tmp_path / "p.toml",
                           "--backend", "reference")
    assert code == 1 and "no [strategy] table to evaluate" in err


# ---------------------------------------------------------------------------------------------- item 6


def test_csv_without_close_column_needs_an_explicit_layout(tmp_path):
    path = tmp_path / "AAA.csv"
    pd.DataFrame({"timestamp": 60 * np.arange(5), "open": 1.0, "volume": 5.0}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"AAA.csv: no 'close' column \(columns: timestamp, open, volume\).*"
                                         r"layout='wide'"):
        read_price_file(path)
    assert set(read_price_file(path, layout="wide")) == {"open", "volume"}


def test_empty_file_and_non_numeric_column_are_named(tmp_path):
    empty = tmp_path / "AAA.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty}: the file is empty"):
        read_price_file(empty)
    blank = tmp_path / "BBB.csv"
    blank.write_text("\n")
    with pytest.raises(ValueError, match=f"{blank}: no columns"):
        read_price_file(blank)
    frame = pd.DataFrame({"BTC": [1.0, 2.0, 3.0], "ETH": ["a", "b", "c"]},
                         index=pd.date_range("2024-01-01", periods=3, freq="min"))
    with pytest.raises(TypeError, match=r"DataFrame column 'ETH' holds \w+ values, not prices"):
        as_prices(frame)


def test_millisecond_and_fractional_timestamps_in_prices_are_caught():
    with pytest.raises(ValueError, match="look like unix milliseconds.*divide them by 1000"):
        Prices(np.ones((3, 2)), 1_735_689_600_000 + 60_000 * np.arange(3))
    with pytest.raises(ValueError, match="whole unix seconds"):
        Prices(np.ones((3, 2)), [0.0, 60.5, 120.0])


def test_from_memory_days_takes_the_pools_chunk_period_or_refuses_a_mismatch():
    pool = tfmm.Pool(chunk_period=60)
    prices = synthetic_prices(n_minutes=3 * DAY)
    built = tfmm.Strategy.from_memory_days("momentum", 2, memory_days=5, pool=pool)
    assert built.chunk_period == 60
    np.testing.assert_allclose(built.params["logit_lambda"],
                               tfmm.Strategy.from_memory_days("momentum", 2, 5, chunk_period=60).params["logit_lambda"])
    default = tfmm.Strategy.from_memory_days("momentum", 2, memory_days=5)  # converted for 1440-minute chunks
    with pytest.raises(ValueError, match=r"converted for chunk_period=1440 but the pool updates every 60 minutes: "
                                         r"its memories would be 24x shorter"):
        api.make_request(prices, default, pool)
    with pytest.raises(ValueError, match="disagrees with the pool's chunk_period=60"):
        tfmm.Strategy.from_memory_days("momentum", 2, memory_days=5, chunk_period=1440, pool=pool)
    # the recorded chunk period survives TOML
    assert specs.from_toml(specs.to_toml(strategy=built))["strategy"].chunk_period == 60


def test_memory_above_the_cap_is_an_error():
    with pytest.raises(ValueError, match=r"memory_days=500 is invalid: allowed at most max_memory_days=365"):
        tfmm.Strategy.from_memory_days("momentum", 2, memory_days=500)
    with pytest.raises(ValueError, match=r"memory_days_2=800.0 is invalid"):
        tfmm.Strategy.from_memory_days("difference_momentum", 2, memory_days=400, max_memory_days=500)
    s = tfmm.Strategy.from_memory_days("momentum", 2, memory_days=500, max_memory_days=500)
    assert s.max_memory_days == 500


def test_metrics_json_is_strict_json(tmp_path):
    from tfmm.training import write_json

    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [np.inf, 1.0], "c": np.float32(2.5), "d": np.arange(2)})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "a": None, "b": [None, 1.0], "c": 2.5, "d": [0, 1]}


def test_simulate_checks_out_is_writable_before_running(tmp_path, capsys, monkeypatch):
    path = tmp_path / "run.toml"
    path.write_text(RUN_FILE)
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def never(*args, **kwargs):
        raise AssertionError("simulated although --out is not usable")

    monkeypatch.setattr(tfmm, "simulate", never)
    code, _, err = run_cli(capsys, "simulate", "--config", path, "--out", blocker, "--backend", "reference")
    assert code == 1 and "exists and is not a folder" in err
    code, _, err = run_cli(capsys, "simulate", "--config", path, "--out", blocker / "sub", "--backend", "reference")
    assert code == 1 and "tfmm simulate: error:" in err
