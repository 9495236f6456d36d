"""`tfmm simulate | train | evaluate | diagnose` on run files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import tfmm
from tfmm.cli import main
from tfmm.data import synthetic_prices

DAY = 1440


@pytest.fixture
def run_file(tmp_path):
    prices = synthetic_prices(n_assets=2, n_minutes=30 * DAY, seed=4, vol=0.6)
    paths = []
    for i, name in enumerate(["AAA", "BBB"]):
        path = tmp_path / f"{name}.csv"
        pd.DataFrame({"timestamp": prices.timestamps, "close": prices.values[:, i]}).to_csv(path, index=False)
        paths.append(str(path))
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=1e-3)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=4, chunk_period=60)
    train = tfmm.TrainConfig(bout_length=3 * DAY, batch_size=2, n_iterations=2, eval_every=1, burn_in=DAY)
    text = tfmm.to_toml(pool=pool, strategy=strategy, train=train, data={"paths": paths},
                        run={"start": 2 * DAY, "length": 4 * DAY, "backend": "jax"})
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path, prices, pool, strategy


def test_simulate_writes_parquet_and_metrics(run_file, tmp_path, capsys):
    path, prices, pool, strategy = run_file
    out = tmp_path / "sim"
    assert main(["simulate", "--config", str(path), "--out", str(out), "--backend", "reference"]) == 0
    frame = pd.read_parquet(out / "simulation.parquet")
    assert len(frame) == 4 * DAY - 1 and {"value", "weight_AAA", "reserve_BBB"} <= set(frame.columns)
    metrics = json.loads((out / "metrics.json").read_text())
    with tfmm.use("reference"):
        direct = tfmm.metrics(tfmm.simulate(prices, strategy, pool, start=2 * DAY, length=4 * DAY))
    assert metrics["returns"] == pytest.approx(direct["returns"], rel=1e-12)
    np.testing.assert_allclose(frame["value"].to_numpy()[-1] / frame["value"].to_numpy()[0] - 1, direct["returns"])
    assert "returns_over_hodl" in capsys.readouterr().out


def test_train_evaluate_and_diagnose(run_file, tmp_path, capsys):
    path, *_ = run_file
    out = tmp_path / "train"
    assert main(["train", "--config", str(path), "--out", str(out), "--quiet"]) == 0
    assert {"log.csv", "best_params.toml", "metrics.json", "value.png"} <= {p.name for p in out.iterdir()}
    assert main(["evaluate", "--config", str(path), "--params", str(out / "best_params.toml"),
                 "--out", str(tmp_path / "eval")]) == 0
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(evaluation) == {"momentum", "HODL", "50/50 balancer"}
    assert evaluation["HODL"]["returns_over_hodl"] == pytest.approx(0.0, abs=1e-12)
    capsys.readouterr()
    assert main(["diagnose", "--config", str(path), "--bouts", "2", "--objective", "returns"]) == 0
    text = capsys.readouterr().out
    assert "autodiff vs central finite differences" in text and "logit_lambda" in text and "boundary" in text


def test_missing_table_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[pool]\nfee = 0.003\n")
    assert main(["simulate", "--config", str(path)]) == 1
    assert "needs a [strategy] table" in capsys.readouterr().err
