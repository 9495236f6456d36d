"""Spec validation (every rule, with its message), TOML round trip, memory-day conversions."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm.core import memory
from tfmm.specs import STRATEGY_PARAMETERS, check_compatible, from_toml, load_config, to_toml


# --- Pool ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"fee": 1.0}, r"fee=1\.0 is invalid: allowed values in \[0\.0, 1\.0\)"),
        ({"fee": -0.1}, r"fee=-0\.1 is invalid"),
        ({"fee": np.array([0.001, 1.5])}, r"fee=1\.5 is invalid"),
        ({"fee": float("nan")}, r"fee=nan is invalid: allowed a finite number"),
        ({"fee": "0.3%"}, r"fee must be a number"),
        ({"gas": -1.0}, r"gas=-1\.0 is invalid: allowed values in >= 0"),
        ({"arb_fee": 1.0}, r"arb_fee=1\.0 is invalid"),
        ({"initial_value": 0.0}, r"initial_value=0\.0 is invalid: allowed > 0"),
        ({"min_weight": 0.6}, r"min_weight=0\.6 is invalid"),
        ({"max_change": 0.0}, r"max_change=0\.0 is invalid: allowed > 0"),
        ({"chunk_period": 0}, r"chunk_period=0 is invalid: allowed an integer >= 1"),
        ({"chunk_period": 60.5}, r"chunk_period must be an integer"),
        ({"interpolation_period": 0}, r"interpolation_period=0 is invalid"),
        ({"chunk_period": 60, "interpolation_period": 61}, r"interpolation_period=61 is invalid: allowed 0 < interpolation_period <= chunk_period \(60\)"),
        ({"interpolation": "cubic"}, r"interpolation='cubic' is invalid: allowed one of 'linear', 'approx_optimal'"),
        ({"signatures": "some"}, r"signatures='some' is invalid"),
    ],
)
def test_pool_rejects(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        tfmm.Pool(**kwargs)


def test_pool_defaults_and_derived():
    pool = tfmm.Pool()
    assert pool.fee == 0.003 and pool.interpolation_minutes == 1440 and pool.has_fees
    assert pool.weight_bounds(2) == (0.05, 0.95)
    assert pool.signature_set(3) == "all" and pool.signature_set(7) == "pairwise"
    assert not tfmm.Pool(fee=0.0).has_fees
    assert tfmm.Pool(fee=0.0, gas=1.0).has_fees


def test_min_weight_times_n_checked_when_assets_known():
    pool = tfmm.Pool(min_weight=0.3)
    assert pool.weight_bounds(3) == (0.3, pytest.approx(0.4))
    with pytest.raises(ValueError, match=r"min_weight=0\.3 is invalid: allowed min_weight \* n_assets < 1 \(n_assets=4\)"):
        pool.weight_bounds(4)


# --- Strategy --------------------------------------------------------------------------------------

def test_unknown_strategy_lists_known():
    with pytest.raises(ValueError, match=r"name='momentun' is invalid: allowed one of 'momentum', 'anti_momentum'"):
        tfmm.Strategy("momentun", {})


def test_missing_and_unknown_params_named():
    with pytest.raises(ValueError, match=r"missing \['logit_lambda'\], unknown \['lambda'\]"):
        tfmm.Strategy("momentum", {"log_k": [1.0, 1.0], "lambda": [0.5, 0.5]})


@pytest.mark.parametrize("value", [[[[1.0, 2.0]]], [], 3.0])
def test_param_shape(value):
    with pytest.raises(ValueError, match=r"params\['log_k'\].*allowed shape \(n_assets,\) or \(n_sets, n_assets\)"):
        tfmm.Strategy("momentum", {"log_k": value, "logit_lambda": [0.1, 0.1]})


def test_param_shapes_must_agree_and_be_finite():
    with pytest.raises(ValueError, match="one shape"):
        tfmm.Strategy("momentum", {"log_k": [1.0, 1.0], "logit_lambda": [0.1, 0.1, 0.1]})
    with pytest.raises(ValueError, match="finite"):
        tfmm.Strategy("momentum", {"log_k": [1.0, np.inf], "logit_lambda": [0.1, 0.1]})


@pytest.mark.parametrize("weights", [[0.6, 0.6], [1.2, -0.2], [1.0], [[0.5, 0.5]], [0.5, float("nan")]])
def test_initial_weights_validated(weights):
    with pytest.raises(ValueError, match="initial_weights"):
        tfmm.Strategy("balancer", {}, initial_weights=weights)


def test_initial_weights_match_params():
    with pytest.raises(ValueError, match="params have 2 assets but initial_weights has 3"):
        tfmm.Strategy("momentum", {"log_k": [1.0, 1.0], "logit_lambda": [0.1, 0.1]}, [0.2, 0.3, 0.5])


def test_parameter_sets_and_from_memory_days():
    s = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=10, k_per_day=20, chunk_period=1440)
    assert s.params["logit_lambda"] == pytest.approx([0.7554299808] * 2, rel=1e-9)
    assert s.params["log_k"] == pytest.approx([np.log2(20)] * 2)
    assert s.n_sets is None and s.n_assets == 2
    sets = tfmm.Strategy.from_memory_days("power_channel", n_assets=3, n_sets=4)
    assert sets.n_sets == 4 and sets.params["raw_exponent"].shape == (4, 3)
    # q = sp(raw_exponent) recovers the requested exponent 2
    assert memory.squareplus(sets.params["raw_exponent"][0, 0]) == pytest.approx(2.0)
    assert sets.param_set(1).params["log_k"].shape == (3,)
    for name, names in STRATEGY_PARAMETERS.items():
        built = tfmm.Strategy.from_memory_days(name, n_assets=2)
        assert set(built.params) == set(names)


def test_beta_and_memory_cap_validated():
    with pytest.raises(ValueError, match=r"beta=0\.0 is invalid"):
        tfmm.Strategy("balancer", {}, [0.5, 0.5], beta=0.0)
    with pytest.raises(ValueError, match=r"max_memory_days=-1\.0 is invalid"):
        tfmm.Strategy("balancer", {}, [0.5, 0.5], max_memory_days=-1.0)


def test_check_compatible():
    s = tfmm.Strategy("balancer", {}, [0.5, 0.5])
    with pytest.raises(ValueError, match="strategy has 2 assets but prices have 3 columns"):
        check_compatible(10, 3, s, tfmm.Pool())
    with pytest.raises(ValueError, match="fee is a per-minute array of length 5; prices have 10 rows"):
        check_compatible(10, 2, s, tfmm.Pool(fee=np.full(5, 0.001)))


# --- Smoothing, TrainConfig --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"gate_temperature": 0.0}, r"gate_temperature=0\.0 is invalid: allowed > 0"),
        ({"selection_temperature": -1.0}, r"selection_temperature=-1\.0 is invalid"),
        ({"selection": "argmax"}, r"selection='argmax' is invalid: allowed one of 'softmax', 'straight_through', 'hard'"),
        ({"weight_temperature": 0}, r"weight_temperature=0\.0 is invalid"),
    ],
)
def test_smoothing_rejects(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        tfmm.Smoothing(**kwargs)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"objective": "profit"}, r"objective='profit' is invalid: allowed one of 'daily_log_sharpe'"),
        ({"split": (0.5, 0.5, 0.5)}, r"split=\(0\.5, 0\.5, 0\.5\) is invalid: allowed fractions summing to 1"),
        ({"split": (0.0, 0.5, 0.5)}, r"split=.* is invalid: allowed three fractions"),
        ({"bout_length": 2}, r"bout_length=2 is invalid: allowed an integer >= 3"),
        ({"batch_size": 0}, r"batch_size=0 is invalid"),
        ({"n_sets": 0}, r"n_sets=0 is invalid"),
        ({"n_iterations": 0}, r"n_iterations=0 is invalid"),
        ({"optimizer": "sgd"}, r"optimizer='sgd' is invalid: allowed one of 'adam', 'adamw'"),
        ({"learning_rate": 0.0}, r"learning_rate=0\.0 is invalid: allowed > 0"),
        ({"schedule": "linear"}, r"schedule='linear' is invalid"),
        ({"clip_norm": -1.0}, r"clip_norm=-1\.0 is invalid: allowed None or > 0"),
        ({"eval_every": 0}, r"eval_every=0 is invalid"),
        ({"patience": 0}, r"patience=0 is invalid"),
        ({"nan_policy": "reinit"}, r"nan_policy='reinit' is invalid: allowed one of 'raise', 'skip'"),
        ({"dtype": "float16"}, r"dtype='float16' is invalid"),
        ({"burn_in": -5}, r"burn_in=-5 is invalid"),
        ({"smoothing": {"gate_temperature": 1.0}}, r"smoothing must be a tfmm.Smoothing"),
    ],
)
def test_train_config_rejects(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        tfmm.TrainConfig(**kwargs)


# --- TOML ------------------------------------------------------------------------------------------

def test_toml_round_trip(tmp_path):
    pool = tfmm.Pool(fee=0.001, gas=2.5, min_weight=0.05, chunk_period=60, interpolation_period=30,
                     interpolation="approx_optimal", signatures="pairwise")
    strategy = tfmm.Strategy.from_memory_days("mean_reversion_channel", n_assets=3, n_sets=2, beta=0.7)
    smoothing = tfmm.Smoothing(gate_temperature=0.5, selection="straight_through")
    train = tfmm.TrainConfig(clip_norm=None, n_sets=2, split=(0.5, 0.25, 0.25), patience=3, smoothing=smoothing)
    path = tmp_path / "run.toml"
    path.write_text(to_toml(pool=pool, strategy=strategy, smoothing=smoothing, train=train, data={"assets": ["A", "B", "C"]}))
    back = load_config(path)
    assert back["pool"].to_dict() == pool.to_dict()
    assert back["strategy"].to_dict() == strategy.to_dict()
    assert back["smoothing"] == smoothing
    assert back["train"] == train and back["train"].clip_norm is None
    assert back["data"] == {"assets": ["A", "B", "C"]}
    np.testing.assert_array_equal(back["strategy"].params["log_k"], strategy.params["log_k"])


def test_toml_rejects_bad_values():
    with pytest.raises(ValueError, match="fee=2.0 is invalid"):
        from_toml("[pool]\nfee = 2.0\n")


# --- memory days (math.md 5) ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "days, chunk, lam",
    [(10, 1440, 0.680360711885), (1, 1440, 0.019630362526), (365, 1440, 0.990076220832), (10, 60, 0.984933761243)],
)
def test_lambda_from_memory_days_reference(days, chunk, lam):
    # docs/math.md gives 12 digits; its last digit for m=365 and (m=10, c=60) is off by ~1e-12 (checked against
    # a 50-digit Newton solve), so compare at rel 1e-11.
    assert memory.lambda_from_memory_days(days, chunk) == pytest.approx(lam, rel=1e-11)
    assert memory.memory_days_from_lambda(memory.lambda_from_memory_days(days, chunk), chunk) == pytest.approx(days, rel=1e-12)


def test_logit_reference_and_round_trip():
    assert memory.logit_lambda_from_memory_days(10) == pytest.approx(0.7554299808, rel=1e-10)
    lams = np.linspace(0.01, 0.999, 50)
    days = memory.memory_days_from_lambda(lams, 60)
    np.testing.assert_allclose(memory.lambda_from_memory_days(days, 60), lams, rtol=1e-10)


def test_memory_days_rejects_nonpositive():
    with pytest.raises(ValueError, match="memory_days must be finite and > 0"):
        memory.lambda_from_memory_days(0.0)
    with pytest.raises(ValueError, match="k_per_day must be finite and > 0"):
        memory.log_k_from_k_per_day(-1.0)
