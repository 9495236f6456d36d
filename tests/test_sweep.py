"""`tfmm sweep`: sweep files, trials on Ray Tune (local), results table, failures, resume, missing extra.

Trials are tiny trainings on the bundled data (4 steps, 5-day bouts). Ray starts once for the module,
with 2 CPUs; its workers run on the CPU with one thread each.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import tfmm
from tfmm.cli import main
from tfmm.sweep import SweepInterrupted, load_sweep, trial_specs
from tfmm.sweep.spec import human_units
from tfmm.training import RUN_FILES

HAS_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("optuna") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="needs the sweep extra: pip install 'tfmm[sweep]'")
BACKEND = "torch" if "torch" in tfmm.available_backends() else "jax"
DAY = 1440

BASE = f"""
[run]
backend = "{BACKEND}"

[pool]
fee = 0.003
chunk_period = 1440
max_change = 0.0003

[strategy]
name = "momentum"
params = {{ log_k = [2.32, 2.32], logit_lambda = [0.5, 0.5] }}
chunk_period = 1440

[train]
bout_length = {5 * DAY}
batch_size = 2
n_iterations = 4
eval_every = 2
burn_in = {5 * DAY}
split = [0.85, 0.1, 0.05]
probe_size = 0
checkpoint_every = 2
"""

SPACE = """
[space.strategy]
memory_days = { kind = "log-uniform", low = 2, high = 20 }
k_per_day = { kind = "uniform", low = 1, high = 10 }

[space.pool]
chunk_period = { kind = "choice", values = [720, 1440] }
"""

try:
    from ray.tune import Callback as _TuneCallback
except ImportError:  # the tests that need it are skipped
    _TuneCallback = object


class InterruptAfter(_TuneCallback):
    """Ctrl-C (SIGINT to this process, which Ray Tune handles) once ``n`` trials have ended, the first time
    only (the marker file stops the copy Ray Tune restores with a resumed sweep)."""

    def __init__(self, n: int, marker: str) -> None:
        self.n, self.marker, self.ended = n, marker, 0

    def _ended(self) -> None:
        self.ended += 1
        if self.ended == self.n and not os.path.exists(self.marker):
            Path(self.marker).write_text("interrupted")
            os.kill(os.getpid(), signal.SIGINT)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended()


def write_sweep(folder: Path, settings: str, space: str = SPACE, name: str = "sweep.toml") -> Path:
    (folder / "run.toml").write_text(BASE)
    path = folder / name
    path.write_text(f'[sweep]\nbase = "run.toml"\n{settings}\n{space}')
    return path


@pytest.fixture(scope="module")
def ray_local():
    """Ray on 2 CPUs for the whole module; workers on the CPU, one thread each."""
    ray = pytest.importorskip("ray")
    env = {"JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def random_sweep(ray_local, tmp_path_factory):
    """A 4-trial random sweep, 2 at once."""
    folder = tmp_path_factory.mktemp("random")
    path = write_sweep(folder, "searcher = \"random\"\ntrials = 4\nconcurrency = 2\nseed = 3")
    return path, tfmm.sweep(path, folder / "out", progress=False)


# --- a sweep that runs ------------------------------------------------------------------------------------

@needs_ray
def test_sweep_writes_table_and_trial_folders(random_sweep):
    _, result = random_sweep
    out, table, metric = result.out, result.table, "daily_log_sharpe"
    assert result.metric == metric and len(table) == 4 and table["trial"].is_unique
    assert (table["status"] == "finished").all() and (table["error"] == "").all()
    assert table["strategy.memory_days"].between(2, 20).all()
    assert table["strategy.k_per_day"].between(1, 10).all()
    assert set(table["pool.chunk_period"]) <= {720, 1440}
    assert (table["steps"] == 4).all() and (table["wall_time_s"] > 0).all()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "results.parquet"), table)
    markdown = (out / "results.md").read_text()
    assert all(t in markdown for t in table["trial"])
    assert (out / "validation_by_parameter.png").stat().st_size > 0 and (out / "best_so_far.png").stat().st_size > 0
    for _, row in table.iterrows():
        run_dir = out / row["run_dir"]
        assert set(RUN_FILES) - {"checkpoint.pkl"} <= {p.name for p in run_dir.iterdir()}
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["validation"][metric] == pytest.approx(row[f"validation_{metric}"], rel=1e-12)
        assert metrics["test"][metric] == pytest.approx(row[f"test_{metric}"], rel=1e-12)
        config = tomllib.loads((run_dir / "config.toml").read_text())  # the trial's own specs
        assert config["pool"]["chunk_period"] == row["pool.chunk_period"]
        strategy = tfmm.Strategy(**config["strategy"])
        units = human_units(strategy, row["pool.chunk_period"])
        assert units["memory_days"] == pytest.approx(row["strategy.memory_days"], rel=1e-9)
        assert units["k_per_day"] == pytest.approx(row["strategy.k_per_day"], rel=1e-9)
    best = table[f"validation_{metric}"].max()
    assert result.best[f"validation_{metric}"] == best and math.isfinite(best)
    assert result.best_run_dir == out / result.best["run_dir"] and result.best_run_dir.is_dir()
    assert f"best: trial {result.best['trial']}" in markdown


@needs_ray
def test_a_failing_trial_is_reported_with_its_message(ray_local, tmp_path, capsys):
    # each value is valid on the base run, together they are not: the trial raises building its pool
    path = write_sweep(tmp_path, 'searcher = "grid"', '[space.pool]\nchunk_period = { kind = "grid", values = [720] }\n'
                                                     'interpolation_period = { kind = "grid", values = [1000] }\n')
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--out", str(out), "--quiet"]) == 1  # no trial finished
    err = capsys.readouterr().err
    table = pd.read_parquet(out / "results.parquet")
    assert table["status"].tolist() == ["failed"] and table["pool.interpolation_period"].tolist() == [1000]
    message = "ValueError: [pool] interpolation_period=1000 is invalid: allowed 0 < interpolation_period <= chunk_period (720)"
    row = table.iloc[0]
    assert row["error"] == message and math.isnan(row["validation_daily_log_sharpe"])
    assert f"{row['trial']} failed: {message}" in err and "no trial finished" in err
    assert message in (out / "results.md").read_text()


@needs_ray
def test_an_interrupted_sweep_resumes_without_rerunning_ended_trials(ray_local, tmp_path, capsys):
    # grid order, one at a time: two trainings, then a bout too long for the data; Ctrl-C after the first
    path = write_sweep(tmp_path, 'searcher = "grid"\nconcurrency = 1',
                       f'[space.train]\nbout_length = {{ kind = "grid", values = [{5 * DAY}, {6 * DAY}, {150 * DAY}] }}\n')
    out = tmp_path / "out"
    with pytest.raises(SweepInterrupted, match="--resume") as info:
        tfmm.sweep(path, out, progress=False, callbacks=[InterruptAfter(1, str(tmp_path / "interrupted"))])
    first = info.value.result.table
    assert (first["status"] == "finished").sum() == 1 and (first["status"] == "unfinished").sum() <= 2
    done = first.loc[first["status"] == "finished", "trial"].iloc[0]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "trials" / done).iterdir()}

    assert main(["sweep", "--config", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    table = pd.read_parquet(out / "results.parquet")
    assert table["status"].tolist() == ["finished", "finished", "failed"]
    assert table["train.bout_length"].tolist() == [5 * DAY, 6 * DAY, 150 * DAY]
    assert table["trial"].tolist()[0] == done
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trials" / done).iterdir()} == stamps  # not run again
    assert json.loads((out / "trials" / done / "trial.json").read_text())["attempts"] == 1
    failed = table.iloc[2]
    assert failed["error"].startswith("ValueError: data too short")
    assert f"{failed['trial']} failed: ValueError: data too short" in capsys.readouterr().err


# --- the sweep file -------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, space, message", [
    ("", "[spaces.pool]\nfee = { kind = \"choice\", values = [0.001] }",
     r"unknown table \[spaces\]; did you mean \[space\]\?"),
    ("", "[space.pools]\nfee = { kind = \"choice\", values = [0.001] }", r"unknown table \[space.pools\]"),
    ("", "[space.pool]\nchunk_perod = { kind = \"choice\", values = [60] }",
     r"unknown key 'chunk_perod' in \[space.pool\]; did you mean 'chunk_period'\?"),
    ("", "[space.train]\nlearning_rate = { kind = \"choice\", values = [] }",
     r"\[space.train\] learning_rate values=\[\] is invalid: allowed a non-empty list"),
    ("", "[space.train]\nlearning_rate = { kind = \"uniform\", low = 0.5, high = 0.1 }",
     r"learning_rate low=0.5 is invalid: allowed low < high \(high=0.1\)"),
    ("", "[space.strategy]\nmemory_days = { kind = \"log-uniform\", low = 0, high = 10 }",
     r"memory_days low=0 is invalid: allowed low > 0 for kind 'log-uniform'"),
    ("", "[space.train]\nbatch_size = { kind = \"uniform\", low = 1.5, high = 4 }",
     r"batch_size low=1.5 is invalid: allowed an integer"),
    ("", "[space.train]\nlearning_rate = { kind = \"normal\", low = 0.01, high = 0.1 }",
     r"learning_rate kind='normal' is invalid: allowed one of 'grid', 'choice', 'uniform', 'log-uniform'"),
    ("trials = 0", SPACE, r"\[sweep\] trials=0 is invalid: allowed an integer >= 1"),
    ("searcher = \"bayes\"", SPACE, r"searcher='bayes' is invalid: allowed one of 'grid', 'random', 'tpe'"),
    ("trails = 4", SPACE, r"unknown key 'trails' in \[sweep\]; did you mean 'trials'\?"),
    ("metric = \"sharp\"", SPACE, r"metric='sharp' is invalid: allowed one of 'daily_log_sharpe'"),
    ("gpus_per_trial = 1.5", SPACE, r"gpus_per_trial=1.5 is invalid: allowed a number >= 0"),
    ("", "[space.pool]\nchunk_period = { kind = \"grid\", values = [60, 1440] }",
     r"kind='grid' is invalid: allowed 'choice', 'uniform' or 'log-uniform' with searcher 'random'"),
    ("searcher = \"grid\"\ntrials = 3", "[space.pool]\nchunk_period = { kind = \"grid\", values = [60, 1440] }",
     r"trials=3 is invalid: allowed a multiple of the grid size 2"),
    ("", "[space.pool]\nchunk_period = { kind = \"choice\", values = [60, 0] }",
     r"\[space\] pool.chunk_period value 0 is invalid: \[pool\] chunk_period=0 is invalid: allowed an integer >= 1"),
    ("", "[space.strategy]\nchunk_period = { kind = \"choice\", values = [60] }",
     r"chunk_period cannot be swept on its own: sweep \[space.pool\] chunk_period"),
    ("scheduler = \"asha\"\nmetric = \"returns\"", SPACE,
     r"metric='returns' is invalid: allowed the training objective \(daily_log_sharpe\) with scheduler 'asha'"),
])
def test_sweep_file_errors_name_the_field(tmp_path, capsys, settings, space, message):
    path = write_sweep(tmp_path, settings, space)
    with pytest.raises(ValueError, match=message):
        load_sweep(path)
    out = tmp_path / "out"
    assert main(["sweep", "--config", str(path), "--out", str(out)]) == 1  # refused before anything runs
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("tfmm sweep: error:") and len(err.strip().splitlines()) == 1


def test_sweep_file_defaults_and_inline_base(tmp_path):
    path = tmp_path / "inline.toml"  # no base: the run tables are in the sweep file
    path.write_text(f"[sweep]\n{BASE}\n{SPACE}")
    spec = load_sweep(path)
    assert (spec.searcher, spec.trials, spec.concurrency, spec.scheduler) == ("random", 8, None, "fifo")
    assert spec.metric == "daily_log_sharpe" and spec.cpus_per_trial == 1 and spec.gpus_per_trial == 0
    assert [p.name for p in spec.parameters] == ["pool.chunk_period", "strategy.memory_days", "strategy.k_per_day"]
    assert spec.base.train.n_iterations == 4 and spec.base.backend == BACKEND


def test_trial_specs_keep_memories_in_days_across_chunk_periods(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, ""))
    base_units = human_units(spec.base.strategy, 1440)
    pool, strategy, train = trial_specs(spec.base, {"pool.chunk_period": 720, "train.learning_rate": 0.1,
                                                    "train.smoothing.gate_temperature": 2.0})
    assert pool.chunk_period == 720 and strategy.chunk_period == 720
    assert train.learning_rate == 0.1 and train.smoothing.gate_temperature == 2.0
    assert human_units(strategy, 720) == pytest.approx(base_units, rel=1e-9)
    _, strategy, _ = trial_specs(spec.base, {"strategy.memory_days": 7.0, "strategy.params.log_k": [1.0, 2.0]})
    assert human_units(strategy, 1440)["memory_days"] == pytest.approx(7.0)
    assert strategy.params["log_k"].tolist() == [1.0, 2.0]
    _, other, _ = trial_specs(spec.base, {"strategy.name": "anti_momentum"})
    assert other.name == "anti_momentum" and human_units(other, 1440) == pytest.approx(base_units, rel=1e-9)


def test_sweep_folder_refused_unless_resumed_with_the_same_files(tmp_path, capsys):
    path = write_sweep(tmp_path, "trials = 2")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.toml").write_text(path.read_text())  # a sweep started here
    (out / "base.toml").write_text(BASE)
    assert main(["sweep", "--config", str(path), "--out", str(out)]) == 1
    assert "already holds a sweep; continue it with --resume" in capsys.readouterr().err
    path.write_text(path.read_text().replace("trials = 2", "trials = 3"))
    assert main(["sweep", "--config", str(path), "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "its sweep file differs" in err and "(in sweep)" in err
    assert main(["sweep", "--config", str(path), "--out", str(tmp_path / "empty"), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err


# --- the optional extra ---------------------------------------------------------------------------------

def test_missing_extra_says_what_to_install(tmp_path, monkeypatch, capsys):
    for name in ("ray", "ray.tune", "optuna"):
        monkeypatch.setitem(sys.modules, name, None)  # import of these now fails
    path = write_sweep(tmp_path, "")
    assert main(["sweep", "--config", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'tfmm[sweep]'" in err
    assert not (tmp_path / "out").exists()


def test_import_tfmm_does_not_import_ray():
    code = "import sys, tfmm; print(callable(tfmm.sweep), 'ray' in sys.modules, 'optuna' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]
