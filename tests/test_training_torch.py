"""tfmm.train under tfmm.use("torch"): the torch trainer against JAX's, NaN guard, resume, schedule, plateau."""

from __future__ import annotations

import numpy as np
import pytest

import tfmm
from tfmm import training
from tfmm.api import make_request

torch = pytest.importorskip("torch")
from tfmm.backends.torch.optim import (TRAIN_PLATEAU_ATOL, TRAIN_PLATEAU_RTOL, plateau_init,  # noqa: E402
                                      plateau_update, schedule_multiplier)

DAY = 1440
POOL = tfmm.Pool(fee=0.003, chunk_period=DAY)


def _prices(days: int = 20) -> tfmm.Prices:
    """The first ``days`` of the bundled BTC/ETH minutes."""
    full = tfmm.data.example_prices()
    n = days * DAY
    return tfmm.Prices(full.values[:n], full.timestamps[:n], full.assets)


def _strategy() -> tfmm.Strategy:
    return tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=3, k_per_day=20, chunk_period=DAY)


def _cfg(**kw) -> tfmm.TrainConfig:
    base = dict(bout_length=3 * DAY, batch_size=2, n_sets=2, n_iterations=4, eval_every=2, burn_in=5 * DAY,
                learning_rate=0.05, checkpoint_every=2, seed=3)
    base.update(kw)
    return tfmm.TrainConfig(**base)


def _trainer(prices, strategy, cfg):
    """The current backend's trainer, built as tfmm.train builds it; also the candidate starts and params0."""
    periods = training.make_periods(prices.n_rows, strategy, POOL, cfg)
    candidates = training.candidate_starts(periods, POOL.chunk_period, cfg.bout_length)
    params0 = training.initial_param_sets(strategy, cfg.n_sets, cfg.seed, 0.5)
    request = make_request(prices, strategy.with_params(params0), POOL, start=candidates[:1],
                           length=cfg.bout_length, mode=cfg.mode, smoothing=cfg.smoothing, dtype=cfg.dtype)
    return tfmm.get_backend().make_trainer(request, cfg), candidates, params0


def _inputs(trainer, candidates, cfg, step):
    starts = training.sample_starts(candidates, cfg.batch_size, step, cfg.seed, cfg.sampling)
    return trainer.static_inputs() + (trainer.starts(starts),)


# --- (1) training on the bundled data ----------------------------------------------------------------

def test_torch_training_is_finite_and_never_worse_than_its_start():
    prices, strategy, cfg = _prices(), _strategy(), _cfg()
    with tfmm.use("torch"):
        result = tfmm.train(prices, strategy, POOL, cfg, progress=False)
    hist, evals = result.history, result.evaluations
    assert len(hist) == cfg.n_iterations and (hist["skipped_sets"] == 0).all()
    assert np.isfinite(hist[["objective", "grad_norm", "learning_rate"]].to_numpy()).all()
    assert result.extras["updates_applied"].tolist() == [cfg.n_iterations] * cfg.n_sets
    sets = [f"validation_set{i}" for i in range(cfg.n_sets)]
    assert np.isfinite(evals[sets].to_numpy()).all()
    # the parameters moved: later validations differ from step 0's
    assert not np.array_equal(evals[sets].iloc[-1].to_numpy(), evals[sets].iloc[0].to_numpy())
    assert evals["validation_best"].iloc[-1] >= evals[sets].iloc[0].max()
    assert np.isfinite(result.validation["daily_log_sharpe"]) and np.isfinite(result.test["daily_log_sharpe"])


# --- (2), (3) JAX and torch: same starts, same updates ---------------------------------------------------

PAIRED_STEPS = 4


class _Recorder:
    """A trainer that records each step's starts and parameters (before, after), and raises Ctrl-C when
    asked for one step more than ``stop``, so tfmm.train ends before its final evaluations."""

    def __init__(self, trainer, log: list, stop: int) -> None:
        self._trainer, self._log, self._stop = trainer, log, stop

    def __getattr__(self, name):
        return getattr(self._trainer, name)

    def step(self, params, state, inputs):
        if len(self._log) == self._stop:
            raise KeyboardInterrupt
        t = self._trainer
        new_params, new_state, stats = t.step(params, state, inputs)
        self._log.append({"starts": np.asarray(t.to_numpy(inputs[-1])), "before": t.to_numpy(params),
                          "after": t.to_numpy(new_params), "grad_norm": t.to_numpy(stats)["grad_norm"]})
        return new_params, new_state, stats


@pytest.fixture(scope="module")
def paired_runs():
    """The first PAIRED_STEPS steps of one tfmm.train config on JAX and on torch: adam, per-set clipping that
    is active for some steps and sets, a warmup_cosine schedule. Returns (config, {backend: log})."""
    pytest.importorskip("jax")
    prices, strategy = _prices(), _strategy()
    cfg = _cfg(n_iterations=PAIRED_STEPS + 2, eval_every=100, schedule="warmup_cosine", warmup_steps=2,
               clip_norm=1.0)
    logs = {}
    for name in ("jax", "torch"):
        log: list = []
        with tfmm.use(name), pytest.MonkeyPatch.context() as mp:
            bk = tfmm.get_backend()
            make = bk.make_trainer
            mp.setattr(bk, "make_trainer", lambda request, config, make=make, log=log:
                       _Recorder(make(request, config), log, PAIRED_STEPS))
            with pytest.raises(training.TrainingInterrupted):
                tfmm.train(prices, strategy, POOL, cfg, progress=False)
        logs[name] = log
    return cfg, logs


def test_same_seed_same_starts_on_jax_and_torch(paired_runs):
    cfg, logs = paired_runs
    jax_starts = [r["starts"] for r in logs["jax"]]
    torch_starts = [r["starts"] for r in logs["torch"]]
    assert len(jax_starts) == len(torch_starts) == PAIRED_STEPS
    periods = training.make_periods(_prices().n_rows, _strategy(), POOL, cfg)
    candidates = training.candidate_starts(periods, POOL.chunk_period, cfg.bout_length)
    for step, (a, b) in enumerate(zip(jax_starts, torch_starts)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(b, training.sample_starts(candidates, cfg.batch_size, step, cfg.seed,
                                                                cfg.sampling))
    assert len({tuple(s) for s in torch_starts}) > 1  # the steps draw different bouts


def test_first_updates_equal_jax_adam_clipped_warmup_cosine(paired_runs):
    cfg, logs = paired_runs
    norms = np.array([r["grad_norm"] for r in logs["jax"]])  # (steps, sets), before clipping
    clipped = norms > cfg.clip_norm
    # the comparison can tell per-set from joint clipping only if, at some step with lr > 0, one set is
    # clipped and another is not
    assert (clipped[1:].any(axis=1) & ~clipped[1:].all(axis=1)).any(), norms
    for step, (a, b) in enumerate(zip(logs["jax"], logs["torch"])):
        for k in a["after"]:
            update_jax = a["after"][k] - a["before"][k]
            update_torch = b["after"][k] - b["before"][k]
            if step == 0:  # warmup from 0: the first learning rate is 0 on both
                assert not update_jax.any() and not update_torch.any()
                continue
            # optax evaluates warmup_cosine in float32 (lr off by ~1.5e-8 relative) and the two backends'
            # simulations agree to ~1e-9 relative; 1e-6 leaves margin yet catches any clipping or lr change
            np.testing.assert_allclose(update_torch, update_jax, rtol=1e-6, err_msg=f"{k} at step {step}")
            np.testing.assert_allclose(b["after"][k], a["after"][k], rtol=1e-6)  # same reasons as above


# --- (4) a non-finite set ------------------------------------------------------------------------------

def test_nonfinite_set_is_not_updated_and_does_not_poison_the_others():
    """Set 1 gets lambda = sigmoid(-700) ~ 1e-304 at step 2: a finite objective, a non-finite gradient.
    Its parameters must stay, its whole optimizer state (Adam and plateau) reset; set 0 must get exactly
    the update of a clean step."""
    prices, strategy = _prices(), _strategy()
    cfg = _cfg(plateau_patience=1, nan_policy="skip")
    with tfmm.use("torch"):
        trainer, candidates, params0 = _trainer(prices, strategy, cfg)
        params = trainer.from_numpy(params0, cfg.dtype)
        state = trainer.init(params)
        for step in range(2):
            params, state, _ = trainer.step(params, state, _inputs(trainer, candidates, cfg, step))
        assert trainer.to_numpy(state)["step"].tolist() == [2, 2]  # a state worth resetting
        clean_params, clean_state, clean_stats = trainer.step(params, state, _inputs(trainer, candidates, cfg, 2))
        bad = trainer.to_numpy(params)
        bad["logit_lambda"][1] = -700.0
        new_params, new_state, stats = trainer.step(trainer.from_numpy(bad, cfg.dtype), state,
                                                    _inputs(trainer, candidates, cfg, 2))
        fresh = trainer.to_numpy(trainer.init(params))
    stats, clean_stats = trainer.to_numpy(stats), trainer.to_numpy(clean_stats)
    assert clean_stats["finite"].tolist() == [True, True]
    assert stats["finite"].tolist() == [True, False] and np.isfinite(stats["objective"][1])
    new_params, clean_params = trainer.to_numpy(new_params), trainer.to_numpy(clean_params)
    for k in bad:
        np.testing.assert_array_equal(new_params[k][1], bad[k][1])
        # set 0 is computed independently of set 1 (vmap over sets, per-set clipping and optimizer): bit for bit
        np.testing.assert_array_equal(new_params[k][0], clean_params[k][0])
    new_leaves = training._tree_leaves(trainer.to_numpy(new_state))
    clean_leaves = training._tree_leaves(trainer.to_numpy(clean_state))
    for new, clean, init in zip(new_leaves, clean_leaves, training._tree_leaves(fresh)):
        np.testing.assert_array_equal(new[1], init[1])
        np.testing.assert_array_equal(new[0], clean[0])


def test_skip_policy_on_torch_keeps_training_the_finite_set():
    prices, strategy = _prices(), _strategy()
    params = {k: np.stack([v, v]) for k, v in strategy.params.items()}
    params["logit_lambda"][1] = -700.0  # finite objective, non-finite gradient, every step
    cfg = _cfg(nan_policy="skip", n_iterations=3, eval_every=3)
    with tfmm.use("torch"):
        result = tfmm.train(prices, strategy.with_params(params), POOL, cfg, progress=False)
    hist = result.history
    assert (hist["skipped_sets"] == 1).all()
    assert np.isfinite(hist["objective_set0"]).all() and not np.isfinite(hist["grad_norm_set1"]).any()
    assert result.extras["updates_applied"].tolist() == [3, 0]
    assert result.strategies_per_set[1].params["logit_lambda"][0] == -700.0


# --- (5) checkpoint and resume ----------------------------------------------------------------------------

def test_resume_on_torch_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    prices, strategy = _prices(), _strategy()
    cfg = _cfg(plateau_patience=1, clip_norm=0.5)  # plateau state in the checkpoint too
    folder = tmp_path / "interrupted"
    original = training.sample_starts

    def interrupt_at_step_3(candidates, batch_size, step, seed, sampling):
        if step == 3:
            raise KeyboardInterrupt
        return original(candidates, batch_size, step, seed, sampling)

    with tfmm.use("torch"):
        monkeypatch.setattr(training, "sample_starts", interrupt_at_step_3)
        with pytest.raises(training.TrainingInterrupted) as info:
            tfmm.train(prices, strategy, POOL, cfg, run_dir=folder, progress=False)
        monkeypatch.setattr(training, "sample_starts", original)
        assert info.value.checkpoint_step == 2
        saved = training.read_checkpoint(folder / training.CHECKPOINT)
        resumed = tfmm.train(prices, strategy, POOL, cfg, run_dir=folder, resume=folder, progress=False)
        whole = tfmm.train(prices, strategy, POOL, cfg, run_dir=tmp_path / "whole", progress=False)
    assert saved["step"] == 2
    # step 2's objective falls below step 1's, so the plateau (patience 1) cuts step 3's rate; a resumed run
    # does the same only if the checkpoint restored the plateau's best value (a fresh state would not cut)
    assert whole.history["learning_rate"].iloc[2] == cfg.learning_rate > whole.history["learning_rate"].iloc[3]
    # a resumed run repeats the same computations on the same inputs: bit for bit
    for column in whole.history.columns:
        np.testing.assert_array_equal(resumed.history[column].to_numpy(), whole.history[column].to_numpy(),
                                      err_msg=column)
    np.testing.assert_array_equal(resumed.evaluations.to_numpy(), whole.evaluations.to_numpy())
    a = training.read_checkpoint(folder / training.CHECKPOINT)
    b = training.read_checkpoint(tmp_path / "whole" / training.CHECKPOINT)
    assert a["step"] == b["step"] == cfg.n_iterations
    for k in b["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k])
    assert len(a["opt_state"]) == len(b["opt_state"])
    for x, y in zip(a["opt_state"], b["opt_state"]):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


# --- float32 ---------------------------------------------------------------------------------------------

def test_float32_keeps_one_dtype_and_follows_float64():
    prices, strategy = _prices(), _strategy()
    out = {}
    for dtype in ("float64", "float32"):
        cfg = _cfg(dtype=dtype, plateau_patience=2)
        with tfmm.use("torch"):
            trainer, candidates, params0 = _trainer(prices, strategy, cfg)
            params = trainer.from_numpy(params0, dtype)
            state = trainer.init(params)
            for step in range(3):
                params, state, _ = trainer.step(params, state, _inputs(trainer, candidates, cfg, step))
        floats = [x for x in training._tree_leaves({"p": params, "s": state}) if x.is_floating_point()]
        assert {x.dtype for x in floats} == {getattr(torch, dtype)}
        out[dtype] = {k: trainer.to_numpy(v) for k, v in params.items()}
    for k in out["float64"]:
        moved = out["float64"][k] - params0[k]
        assert np.abs(moved).min() > 0
        # float32 gradients differ from float64's by ~1e-3 relative here (the objective by ~3e-4: BTC prices of
        # 1e5 in float32), moving Adam's steps of ~lr = 0.05 by ~1e-5 each; 2e-4 is 0.4% of one step
        np.testing.assert_allclose(out["float32"][k], out["float64"][k], rtol=0, atol=2e-4)


# --- (6) schedule and plateau, against optax ---------------------------------------------------------------

@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine", "exponential"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_lambda_lr_reproduces_the_optax_schedule(schedule, warmup):
    pytest.importorskip("optax")
    tfmm.get_backend("jax")  # loading the JAX backend turns on float64 in JAX
    from tfmm.backends.jax.optim import learning_rate_schedule

    cfg = tfmm.TrainConfig(learning_rate=0.07, schedule=schedule, warmup_steps=warmup, n_iterations=20,
                           decay_rate=0.9)
    optimizer = torch.optim.Adam([torch.zeros(1, dtype=torch.float64)], lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_multiplier(cfg))
    reference = learning_rate_schedule(cfg)
    for step in range(25):  # past the end of the schedule too
        lr = optimizer.param_groups[0]["lr"]
        # optax evaluates warmup_cosine and exponential in float32 even with x64 on: rel 1e-7 is that
        # rounding; abs 1e-12 only matters at the warmup's exact 0
        assert lr == pytest.approx(float(reference(step)), rel=1e-7, abs=1e-12), step
        optimizer.step()
        scheduler.step()


def test_plateau_scale_matches_optax_reduce_on_plateau():
    optax = pytest.importorskip("optax")
    jax = pytest.importorskip("jax")
    tfmm.get_backend("jax")  # loading the JAX backend turns on float64 in JAX
    jnp = jax.numpy
    # four sets of values (lower is better): improving then flat; improvements below rtol = 1e-4 relative; a
    # noisy walk; flat and negative, which optax's test value < (1 - rtol) best - atol counts as an improvement
    # at every step when atol = 0, as in training (matched: JAX training feeds it minus the objective)
    t = np.arange(60, dtype=np.float64)
    values = np.stack([
        np.where(t < 10, 20.0 - t, 11.0),
        5.0 * (1 - 5e-5 * (t % 7)),
        np.random.default_rng(0).normal(0.0, 1.0, t.size).cumsum() * 0.1,
        np.full(t.size, -9.0),
    ], axis=1)
    n = values.shape[1]
    for kwargs in (dict(factor=0.5, patience=3),
                   dict(factor=0.3, patience=2, cooldown=2, accumulation_size=3, min_scale=0.05, atol=0.01),
                   dict(factor=0.5, patience=3, rtol=TRAIN_PLATEAU_RTOL, atol=TRAIN_PLATEAU_ATOL)):  # as trained
        reference = optax.contrib.reduce_on_plateau(**kwargs)
        ref_update = jax.jit(jax.vmap(lambda u, s, v, ref=reference: ref.update(u, s, value=v)))
        ref_state = jax.vmap(reference.init)(jnp.zeros((n, 1)))
        state = plateau_init(n, torch.float64)
        scales = []
        for row in values:
            _, ref_state = ref_update(jnp.ones((n, 1)), ref_state, jnp.asarray(row))
            state = plateau_update(state, torch.as_tensor(row), **kwargs)
            for name, leaf in state.items():
                # the same float64 operations in the same order: equal bit for bit
                np.testing.assert_array_equal(leaf.numpy(), np.asarray(getattr(ref_state, name)), err_msg=name)
            scales.append(state["scale"].numpy().copy())
        scales = np.array(scales)
        assert (scales[-1, :3] < 1).all()
        assert (scales[:, 3] == 1).all() == (kwargs.get("atol", 0.0) == 0.0)
        assert len({tuple(column) for column in scales[:, :3].T}) == 3  # each set at its own steps


# --- the probe and the plateau arguments, as on JAX -------------------------------------------------------------

def test_both_trainers_pass_the_same_plateau_tolerances():
    pytest.importorskip("jax")
    from tfmm.backends.jax.optim import PLATEAU_ATOL, PLATEAU_RTOL

    assert (TRAIN_PLATEAU_RTOL, TRAIN_PLATEAU_ATOL) == (PLATEAU_RTOL, PLATEAU_ATOL)
    state = plateau_init(1, torch.float64)
    for _ in range(4):  # a flat positive objective (value -1): no improvement after the first, so a cut
        state = plateau_update(state, torch.tensor([-1.0], dtype=torch.float64), factor=0.5, patience=3,
                               rtol=TRAIN_PLATEAU_RTOL, atol=TRAIN_PLATEAU_ATOL)
    assert float(state["scale"][0]) == 0.5


def test_probe_on_torch_equals_value_and_grad():
    prices, strategy = _prices(), _strategy()
    cfg = _cfg(n_iterations=3, probe_size=3)
    with tfmm.use("torch"):
        result = tfmm.train(prices, strategy, POOL, cfg, progress=False)
        ev = result.evaluations
        assert ev["step"].tolist() == [0, 2, 3]
        starts = result.extras["probe_starts"]
        value, _ = tfmm.value_and_grad(prices, strategy.with_params(result.extras["final_params"]), POOL,
                                       start=starts, length=cfg.bout_length, objective=cfg.objective,
                                       mode=cfg.mode, smoothing=cfg.smoothing)
    logged = ev.iloc[-1][[f"probe_set{i}" for i in range(cfg.n_sets)]].to_numpy(float)
    # the trainer's value-and-gradient function and the public one run the same eager ops: equal to rounding
    np.testing.assert_allclose(logged, np.asarray(value.detach()), rtol=1e-9, atol=1e-12)
