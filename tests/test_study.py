"""The stability study (bench/study_stability.py, ``tfmm study stability``) on a tiny configuration."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("optax")

ROOT = Path(__file__).resolve().parent.parent


def _study():
    spec = importlib.util.spec_from_file_location("study_stability", ROOT / "bench" / "study_stability.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = {"n_seeds": 2, "n_iterations": 2, "bout_days": 3, "batch_size": 1, "probe_size": 1, "eval_every": 1}


def test_tiny_study_writes_the_table_and_runs_naive_and_stabilised(tmp_path):
    study = _study()
    results = study.run_study(tmp_path, sizes=TINY, cases=["btc_eth_momentum"], configs=["naive", "stabilised"],
                              log=lambda line: None)
    rows = results["rows"]
    assert [r["config"] for r in rows] == ["naive", "stabilised"]
    for r in rows:
        assert r["error"] is None
        assert 0.0 <= r["finite"] <= 1.0 and 0.0 < r["within_10pct_of_best"] <= 1.0  # the best run is within
        assert np.isfinite(r["validation_median"]) and np.isfinite(r["test_median"]) and r["wall_s"] > 0
        assert len(r["curves"]["steps"]) == TINY["n_iterations"] + 1  # step 0 and every step
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[0].startswith("| case | config | runs | finite | within 10% of best |")
    assert len(table) == 2 + len(rows)
    import pandas as pd

    frame = pd.read_csv(tmp_path / "table.csv")
    assert list(frame.columns) == study.COLUMNS
    assert json.loads((tmp_path / "results.json").read_text())["sizes"] == TINY
    assert (tmp_path / "curves_btc_eth_momentum.png").stat().st_size > 0


def test_naive_trainer_applies_the_rate_twice():
    study = _study()
    import tfmm

    cfg = tfmm.TrainConfig(learning_rate=0.05)
    trainer_lr = 0.05 ** 2
    with tfmm.use("jax"):
        data = study.load_case("btc_eth_momentum")
        from tfmm.api import make_request

        req = make_request(data["prices"], data["strategy"], data["pool"], start=[15 * 1440], length=3 * 1440,
                           mode="exact")
        trainer = study.make_naive_trainer(tfmm.get_backend().engine, req, cfg, data["strategy"], 0.5, 0)
    assert trainer.learning_rate(0, None)[0] == pytest.approx(trainer_lr, rel=1e-12)  # lr x lr, not lr


def test_unknown_case_or_config_is_refused(tmp_path):
    study = _study()
    with pytest.raises(ValueError, match="unknown case"):
        study.run_study(tmp_path, cases=["nope"])
    with pytest.raises(ValueError, match="unknown configuration"):
        study.run_study(tmp_path, configs=["nope"])


def test_cli_has_the_study_subcommand():
    from tfmm.cli import build_parser

    args = build_parser().parse_args(["study", "stability", "--quick", "--out", "x"])
    assert (args.study, args.quick, args.out) == ("stability", True, "x")
