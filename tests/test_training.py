"""tfmm.train: optimizer chain, sampling, NaN policy, resume, reproducibility, learning."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm import training
from tfmm.data import synthetic_prices

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
from tfmm.backends.jax.optim import make_optimizer  # noqa: E402

DAY = 1440


@pytest.fixture(autouse=True)
def _jax_backend():
    with tfmm.use("jax"):
        yield


def _tree(x):
    return {"log_k": jax.numpy.asarray(x, dtype=jax.numpy.float64)}


def test_learning_rate_applied_exactly_once():
    lr = 0.037
    opt = make_optimizer(tfmm.TrainConfig(learning_rate=lr, clip_norm=None))
    params = _tree([0.0, 0.0, 0.0])
    grads = _tree([0.3, -2.0, 1e-3])
    updates, _ = opt.update(grads, opt.init(params), params, value=0.0)
    g = np.asarray(grads["log_k"])
    # Adam's first step with bias correction: m_hat = g, v_hat = g^2.
    expected = -lr * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(np.asarray(updates["log_k"]), expected, rtol=1e-12)


def test_clipping_is_applied_before_adam_and_bounds_the_gradient():
    lr, c = 0.1, 0.5
    params = _tree([0.0, 0.0])
    small, huge = _tree([0.01, -0.02]), _tree([300.0, 400.0])  # |huge| = 500
    clipped = make_optimizer(tfmm.TrainConfig(learning_rate=lr, clip_norm=c))
    plain = optax.adam(lr)
    s1, s2 = clipped.init(params), plain.init(params)
    _, s1 = clipped.update(small, s1, params, value=0.0)
    _, s2 = plain.update(small, s2, params)
    u_clipped, _ = clipped.update(huge, s1, params, value=0.0)
    u_manual, _ = plain.update(_tree(np.array([300.0, 400.0]) * c / 500.0), s2, params)
    u_unclipped, _ = plain.update(huge, s2, params)
    np.testing.assert_allclose(np.asarray(u_clipped["log_k"]), np.asarray(u_manual["log_k"]), rtol=1e-12)
    assert not np.allclose(np.asarray(u_clipped["log_k"]), np.asarray(u_unclipped["log_k"]))


def test_plateau_reduction_scales_the_step():
    cfg = tfmm.TrainConfig(learning_rate=0.1, clip_norm=None, plateau_patience=2, plateau_factor=0.5)
    opt = make_optimizer(cfg)
    params = _tree([0.0])
    state = opt.init(params)
    grads = _tree([1.0])
    steps = []
    for _ in range(8):  # the loss never improves: a plateau
        u, state = opt.update(grads, state, params, value=1.0)
        steps.append(float(np.abs(np.asarray(u["log_k"]))[0]))
    # Adam with a constant gradient gives lr every step; the plateau must have reduced it.
    assert steps[0] == pytest.approx(0.1, rel=1e-6)
    assert steps[-1] <= 0.05 + 1e-9


def test_sampled_starts_on_chunk_boundaries_inside_train_period():
    prices = synthetic_prices(n_assets=2, n_minutes=60 * DAY, seed=1)
    pool = tfmm.Pool(chunk_period=60)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=2, chunk_period=60)
    cfg = tfmm.TrainConfig(bout_length=3 * DAY, burn_in=1000, batch_size=16, sampling="stratified")
    periods = training.make_periods(prices.n_rows, strategy, pool, cfg)
    cand = training.candidate_starts(periods, 60, cfg.bout_length)
    for step in range(5):
        for sampling in ("uniform", "stratified"):
            s = training.sample_starts(cand, 16, step, 0, sampling)
            assert np.all(s % 60 == 0)
            assert np.all(s >= periods.train[0]) and np.all(s + cfg.bout_length - 1 <= periods.train[1])
    np.testing.assert_array_equal(training.sample_starts(cand, 8, 3, 7, "uniform"),
                                  training.sample_starts(cand, 8, 3, 7, "uniform"))


def test_data_too_short_says_rows_needed():
    prices = synthetic_prices(n_assets=2, n_minutes=5 * DAY, seed=1)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2)
    with pytest.raises(ValueError, match=r"data too short.*rows are needed"):
        training.make_periods(prices.n_rows, strategy, tfmm.Pool(), tfmm.TrainConfig(bout_length=10 * DAY))


def _small_setup(seed=0, drift=(0.0, 0.0), n_days=40, vol=0.6):
    prices = synthetic_prices(n_assets=2, n_minutes=n_days * DAY, seed=seed, drift=list(drift), vol=vol)
    pool = tfmm.Pool(fee=0.003, chunk_period=60, max_change=1e-3)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1.0, k_per_day=2.0, chunk_period=60)
    return prices, pool, strategy


def _cfg(**kw):
    base = dict(bout_length=3 * DAY, batch_size=2, n_sets=2, n_iterations=6, eval_every=3, burn_in=2 * DAY,
                learning_rate=0.05, checkpoint_every=2, seed=3)
    base.update(kw)
    return tfmm.TrainConfig(**base)


def test_forced_nan_stops_with_report():
    prices, pool, strategy = _small_setup()
    # An absurd learning rate drives log_k to ~1e4 after one step: k = 2^log_k overflows to inf. The update
    # of step 0 that does it is caught at once (the parameters leave their range), not at step 1's NaN.
    cfg = _cfg(learning_rate=1e4, clip_norm=None, n_sets=1)
    with pytest.raises(training.TrainingDivergedError) as info:
        tfmm.train(prices, strategy, pool, cfg, progress=False)
    report = info.value.report
    assert report["step"] >= 0 and report["set"] == 0
    assert len(report["starts"]) == cfg.batch_size
    assert "first non-finite quantity" in str(info.value)
    assert report["first_nonfinite"]


def test_skip_policy_recovers_with_reset_state():
    prices, pool, strategy = _small_setup()
    # Set 1 starts with lambda = sigmoid(-700) ~ 1e-304 (in range: > 0 in float64): its pool barely moves, so
    # its objective is finite, but the gradient through log(lambda) is not; every step of it must be skipped,
    # with its optimizer state reset, while set 0 trains normally. (k = 2^2000 = inf, the old way to force
    # this, is now refused when the strategy is built.)
    params = {k: np.stack([v, v]) for k, v in strategy.params.items()}
    params["logit_lambda"][1] = -700.0
    cfg = _cfg(n_sets=2, nan_policy="skip", n_iterations=4)
    result = tfmm.train(prices, strategy.with_params(params), pool, cfg, progress=False)
    hist = result.history
    assert (hist["skipped_sets"] == 1).all()
    assert np.isfinite(hist["objective_set0"]).all() and np.isfinite(hist["grad_norm_set0"]).all()
    assert not np.isfinite(hist["grad_norm_set1"]).any()
    assert result.extras["updates_applied"].tolist() == [4, 0]
    assert np.isfinite(result.test["daily_log_sharpe"])
    # the skipped set's parameters were never moved by a non-finite update
    assert result.strategies_per_set[1].params["logit_lambda"][0] == -700.0


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A run of ``_cfg()`` (6 steps, checkpoints every 2) interrupted by Ctrl-C during step 5: its folder
    holds the checkpoint of step 4. Returns (folder, prices, pool, strategy, cfg)."""
    prices, pool, strategy = _small_setup()
    cfg = _cfg()
    folder = tmp_path_factory.mktemp("interrupted") / "run"
    original = training.sample_starts

    def interrupt_at_step_5(candidates, batch_size, step, seed, sampling):
        if step == 5:
            raise KeyboardInterrupt
        return original(candidates, batch_size, step, seed, sampling)

    training.sample_starts = interrupt_at_step_5
    try:
        with tfmm.use("jax"), pytest.raises(training.TrainingInterrupted) as info:
            tfmm.train(prices, strategy, pool, cfg, run_dir=folder, progress=False)
    finally:
        training.sample_starts = original
    assert isinstance(info.value, KeyboardInterrupt)
    assert (info.value.step, info.value.checkpoint_step) == (5, 4)
    assert "last checkpoint (step 4)" in str(info.value) and str(folder) in str(info.value)
    return folder, prices, pool, strategy, cfg


def test_same_seed_same_result_and_resume(interrupted_run):
    folder, prices, pool, strategy, cfg = interrupted_run
    a = tfmm.train(prices, strategy, pool, cfg, progress=False)
    b = tfmm.train(prices, strategy, pool, cfg, progress=False)
    for k in a.strategy.params:
        np.testing.assert_array_equal(a.strategy.params[k], b.strategy.params[k])
    np.testing.assert_array_equal(a.history["objective"].to_numpy(), b.history["objective"].to_numpy())
    # the interrupted run resumes from its step-4 checkpoint to the result of the uninterrupted one
    assert training.read_checkpoint(folder / "checkpoint.npz")["step"] == 4
    resumed = tfmm.train(prices, strategy, pool, cfg, run_dir=folder, resume=folder, progress=False)
    # a resumed run repeats the same computations on the same inputs: bit for bit (subnormals flush alike)
    np.testing.assert_allclose(resumed.history["objective"].to_numpy(), a.history["objective"].to_numpy(), rtol=0, atol=0)
    for k in a.strategy.params:
        np.testing.assert_array_equal(a.strategy.params[k], resumed.strategy.params[k])
    assert training.read_checkpoint(folder / "checkpoint.npz")["step"] == 6


def test_run_dir_contents(tmp_path):
    prices, pool, strategy = _small_setup()
    result = tfmm.train(prices, strategy, pool, _cfg(n_iterations=3), run_dir=tmp_path / "r", progress=False)
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert {"config.toml", "log.csv", "best_params.toml", "metrics.json", "training.png", "weights.png",
            "value.png", "checkpoint.npz"} <= names
    back = tfmm.load_config(tmp_path / "r" / "best_params.toml")["strategy"]
    np.testing.assert_array_equal(back.params["log_k"], result.strategy.params["log_k"])
    assert {"step", "objective", "grad_norm", "learning_rate", "grad_norm_log_k", "objective_set0"} <= set(result.history.columns)


def test_training_on_trending_series_raises_validation_objective():
    # Asset 1 trends up strongly, asset 0 down: a momentum pool should learn to tilt toward asset 1.
    prices, pool, strategy = _small_setup(seed=5, drift=(-8.0, 8.0), n_days=60, vol=0.3)
    cfg = _cfg(n_iterations=30, eval_every=5, n_sets=1, learning_rate=0.1, objective="returns",
               bout_length=5 * DAY, batch_size=4, split=(0.6, 0.4, 0.0))
    periods = training.make_periods(prices.n_rows, strategy, pool, cfg)
    start, stop = periods.validation
    before = tfmm.metrics(tfmm.simulate(prices, strategy, pool, start=start, length=stop - start + 1))["returns"]
    result = tfmm.train(prices, strategy, pool, cfg, progress=False)
    assert result.validation["returns"] > before + 0.05
    assert (result.strategy.params["log_k"] > strategy.params["log_k"]).all()  # learned to follow the trend harder


# --- issue 14: non-finite states, run folders, checkpoints -------------------------------------------------

def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_huge_learning_rate_never_makes_out_of_range_params_best(tmp_path):
    """lr = 1e6 throws every update to logit_lambda = +-1e6 or log_k = +-1e6: lambda = 0 or k = inf give NaN
    weights with finite values, and such parameters used to be written to best_params.toml. Now each such
    update counts as non-finite: skipped (reverted) under nan_policy="skip", never the best."""
    from tfmm.specs import parameter_problems

    prices, pool, strategy = _small_setup()
    cfg = _cfg(learning_rate=1e6, nan_policy="skip", n_iterations=3, eval_every=1)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.toml").write_text("# an older run\n")
    (folder / "evaluations.csv").write_text("stale\n")
    result = tfmm.train(prices, strategy, pool, cfg, run_dir=folder, progress=False, overwrite=True)
    assert (result.history["skipped_sets"] == cfg.n_sets).all()
    assert result.extras["updates_applied"].tolist() == [0, 0]
    for s in result.strategies_per_set:
        assert parameter_problems(s.name, s.params, pool.chunk_period, s.max_memory_days) == [None]
        assert np.all(np.abs(s.params["logit_lambda"]) < 10) and np.all(np.abs(s.params["log_k"]) < 10)
    best = tfmm.load_config(folder / "best_params.toml")["strategy"]  # builds (validates) the strategy
    np.testing.assert_array_equal(best.params["logit_lambda"], result.strategy.params["logit_lambda"])
    assert (folder / "evaluations.csv").read_text() != "stale\n"  # the old run's files were replaced
    import json

    metrics = json.loads((folder / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert metrics["selected_on"] == "validation" and np.isfinite(metrics["validation"]["daily_log_sharpe"])


def test_huge_learning_rate_raise_names_the_parameter():
    prices, pool, strategy = _small_setup()
    cfg = _cfg(learning_rate=1e6, n_sets=1, n_iterations=2)
    with pytest.raises(training.TrainingDivergedError, match=r"step 0, parameter set 0.*params\['log") as info:
        tfmm.train(prices, strategy, pool, cfg, progress=False)
    assert info.value.report["step"] == 0 and "invalid" in info.value.report["first_nonfinite"]


def test_nonfinite_validation_is_never_best():
    """A set whose validation simulation is non-finite (lambda = sigmoid(-120) rounds to 0 in float32) gets
    -inf, so it can never become the best; under nan_policy="raise" it stops training."""
    prices, pool, strategy = _small_setup()
    params = {"log_k": np.array([[1.0, 1.0], [1.0, 1.0]]), "logit_lambda": np.array([[3.0, 3.0], [-120.0, -120.0]])}
    cfg = _cfg(nan_policy="skip", dtype="float32")
    found = []
    values = training._validate_sets(_validation_run(prices, strategy, pool, cfg, params), params, 3, found)
    assert np.isfinite(values[0]) and values[1] == -np.inf
    assert found == [{"step": 3, "set": 1, "reason": found[0]["reason"]}] and "non-finite weights" in found[0]["reason"]
    raising = _validation_run(prices, strategy, pool, _cfg(dtype="float32"), params)
    with pytest.raises(training.TrainingDivergedError, match="non-finite validation at step 3, parameter set 1"):
        training._validate_sets(raising, params, 3, [])


def _validation_run(prices, strategy, pool, cfg, params):
    """The parts of a :class:`training.TrainingRun` that validation reads, on the JAX backend."""
    periods = training.make_periods(prices.n_rows, strategy, pool, cfg)
    template = strategy.with_params(params)
    scenario = training.validation_scenario(tfmm.get_backend("jax"), prices, template, pool, cfg, periods)
    return training.TrainingRun(prices=prices, strategy=strategy, pool=pool, config=cfg, periods=periods,
                                candidates=np.zeros(0, dtype=np.int64), probe=np.zeros(0, dtype=np.int64),
                                trainer=None, static_inputs=(), validation=scenario, fingerprint={}, run_path=None)


def test_a_folder_holding_a_run_is_refused_and_left_untouched(tmp_path):
    prices, pool, strategy = _small_setup()
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "log.csv").write_text("step,objective\n0,1.0\n")
    (folder / "notes.txt").write_text("mine")
    before = _snapshot(folder)
    with pytest.raises(FileExistsError, match=r"already holds a training run \(log.csv\).*overwrite"):
        tfmm.train(prices, strategy, pool, _cfg(), run_dir=folder, progress=False)
    assert _snapshot(folder) == before
    # split (1, 0, 0) says that the parameters are then selected on the training period (checked first)
    with pytest.warns(UserWarning, match="selected on the training period"), pytest.raises(FileExistsError):
        tfmm.train(prices, strategy, pool, _cfg(split=(1.0, 0.0, 0.0)), run_dir=folder, progress=False)
    assert _snapshot(folder) == before


def test_resume_checks_prices_strategy_pool_and_config(interrupted_run, tmp_path):
    import shutil

    folder, prices, pool, strategy, cfg = interrupted_run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    before = _snapshot(copy)
    other_prices = synthetic_prices(n_assets=2, n_minutes=prices.n_rows, seed=99, vol=0.6)
    other_strategy = strategy.with_params({k: v + 0.1 for k, v in strategy.params.items()})
    cases = [
        ((other_prices, strategy, pool, cfg), "prices"),
        ((prices, other_strategy, pool, cfg), "strategy"),
        ((prices, strategy, tfmm.Pool(fee=0.001, chunk_period=60, max_change=1e-3), cfg), "pool"),
        ((prices, strategy, pool, _cfg(learning_rate=0.5)), r"TrainConfig \(learning_rate\)"),
    ]
    for args, what in cases:
        with pytest.raises(training.CheckpointError, match=f"cannot resume from .*checkpoint.npz: it was written "
                                                           f"for other {what}"):
            tfmm.train(*args, run_dir=copy, resume=copy, progress=False)
        assert _snapshot(copy) == before  # a rejected resume writes nothing


def test_corrupt_or_pickled_checkpoint_is_a_clear_error(interrupted_run, tmp_path):
    import shutil

    folder, prices, pool, strategy, cfg = interrupted_run
    copy = tmp_path / "run"
    shutil.copytree(folder, copy)
    ckpt = copy / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(training.CheckpointError, match=f"checkpoint {ckpt} is corrupt or not a tfmm checkpoint"):
        tfmm.train(prices, strategy, pool, cfg, run_dir=copy, resume=copy, progress=False)
    np.savez(ckpt, meta=np.array('{"format": "something else"}'))
    with pytest.raises(training.CheckpointError, match="corrupt or not a tfmm checkpoint"):
        training.read_checkpoint(ckpt)
    ckpt.unlink()
    (copy / "checkpoint.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(training.CheckpointError, match=r"checkpoint.pkl is a pickle .*not loaded"):
        tfmm.train(prices, strategy, pool, cfg, run_dir=copy, resume=copy, progress=False)
    (copy / "checkpoint.pkl").unlink()
    with pytest.raises(training.CheckpointError, match="no checkpoint to resume from"):
        tfmm.train(prices, strategy, pool, cfg, run_dir=copy, resume=copy, progress=False)


# --- the probe: a fixed batch of training bouts, logged every eval_every steps --------------------------------

def test_probe_size_is_validated():
    with pytest.raises(ValueError, match="probe_size=-1 is invalid"):
        tfmm.TrainConfig(probe_size=-1)
    with pytest.raises(TypeError, match="probe_size must be an integer"):
        tfmm.TrainConfig(probe_size=2.5)
    assert tfmm.TrainConfig().to_dict().get("probe_size") is None  # the default leaves old fingerprints alone
    assert training.probe_size(tfmm.TrainConfig(batch_size=5)) == 5


def test_probe_starts_come_from_the_seed_alone():
    prices, pool, strategy = _small_setup()
    cfg = _cfg(probe_size=6)
    periods = training.make_periods(prices.n_rows, strategy, pool, cfg)
    cand = training.candidate_starts(periods, pool.chunk_period, cfg.bout_length)
    a = training.probe_starts(cand, cfg)
    np.testing.assert_array_equal(a, training.probe_starts(cand, cfg))
    assert a.size == 6 and np.isin(a, cand).all()
    assert not np.array_equal(a, training.probe_starts(cand, _cfg(probe_size=6, seed=4)))
    assert training.probe_starts(cand, _cfg(probe_size=0)).size == 0


@pytest.mark.parametrize("probe", [4, 3])  # 4: batches of batch_size through the step; 3: one batch of its own
def test_probe_logged_at_eval_steps_and_equals_value_and_grad(probe):
    prices, pool, strategy = _small_setup()
    cfg = _cfg(probe_size=probe, n_iterations=5, eval_every=2)
    result = tfmm.train(prices, strategy, pool, cfg, progress=False)
    ev = result.evaluations
    assert ev["step"].tolist() == [0, 2, 4, 5]
    assert {f"probe_set{i}" for i in range(cfg.n_sets)} | {"probe_mean"} <= set(ev.columns)
    starts = result.extras["probe_starts"]
    assert starts.size == probe
    params0 = training.initial_param_sets(strategy, cfg.n_sets, cfg.seed, 0.5)
    for row, params in ((0, params0), (len(ev) - 1, result.extras["final_params"])):
        value, _ = tfmm.value_and_grad(prices, strategy.with_params(params), pool, start=starts,
                                       length=cfg.bout_length, objective=cfg.objective, mode=cfg.mode,
                                       smoothing=cfg.smoothing)
        logged = ev.loc[row, [f"probe_set{i}" for i in range(cfg.n_sets)]].to_numpy(float)
        # other compiled graphs (the training step, batches of the probe averaged): equal to rounding
        np.testing.assert_allclose(logged, np.asarray(value), rtol=1e-9, atol=1e-12)
        assert ev.loc[row, "probe_mean"] == pytest.approx(np.mean(logged), rel=1e-12)  # the mean of those


def test_no_probe_columns_with_probe_size_0():
    prices, pool, strategy = _small_setup()
    result = tfmm.train(prices, strategy, pool, _cfg(probe_size=0, n_iterations=3), progress=False)
    assert not [c for c in result.evaluations.columns if c.startswith("probe")]


def test_probe_is_resume_safe(interrupted_run):
    folder, prices, pool, strategy, cfg = interrupted_run
    whole = tfmm.train(prices, strategy, pool, cfg, progress=False)
    resumed = tfmm.train(prices, strategy, pool, cfg, resume=folder, progress=False)
    cols = [c for c in whole.evaluations.columns if c.startswith("probe")]
    assert cols
    # the same bouts and parameters, the same computations: bit for bit
    np.testing.assert_array_equal(resumed.evaluations[cols].to_numpy(), whole.evaluations[cols].to_numpy())
    np.testing.assert_array_equal(resumed.extras["probe_starts"], whole.extras["probe_starts"])


def test_training_png_draws_probe_and_running_mean(tmp_path):
    from tfmm.plots import running_mean

    np.testing.assert_allclose(running_mean([1.0, 3.0, np.nan, 5.0], 2), [1.0, 2.0, 3.0, 5.0])  # exact halves
    prices, pool, strategy = _small_setup()
    tfmm.train(prices, strategy, pool, _cfg(n_iterations=3), run_dir=tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "training.png").stat().st_size > 0
    assert "probe_mean" in (tmp_path / "r" / "evaluations.csv").read_text().splitlines()[0]


def test_plateau_cuts_the_rate_when_a_positive_objective_is_flat():
    # the trainer feeds minus the objective: a flat objective of +1 is a value of -1 at every step; with
    # optax's relative test (rtol 1e-4, atol 0) -1 < (1 - 1e-4) (-1) counted as an improvement forever
    cfg = tfmm.TrainConfig(learning_rate=0.1, clip_norm=None, plateau_patience=2, plateau_factor=0.5)
    opt = make_optimizer(cfg)
    params = _tree([0.0])
    state = opt.init(params)
    steps = []
    for _ in range(8):
        u, state = opt.update(_tree([1.0]), state, params, value=-1.0)
        steps.append(float(np.abs(np.asarray(u["log_k"]))[0]))
    assert steps[0] == pytest.approx(0.1, rel=1e-6)  # Adam's first step is the rate (eps = 1e-8 relative)
    assert steps[-1] <= 0.05 + 1e-9  # at least one cut; 1e-9: float rounding of Adam's normalised step
