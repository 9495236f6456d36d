"""Training policy, backend-neutral: periods, bout sampling, evaluation, NaN guard, logging, checkpoints.

DESIGN.md section 7, all on by default:

- one learning-rate schedule applied once inside the optimizer (the backend adapter builds
  ``chain(clip_by_global_norm, adam(schedule), reduce_on_plateau)``), global-norm clipping on;
- bout starts sampled on chunk boundaries inside the training period (MATH 1);
- one dtype end to end (params, prices and optimizer state);
- a NaN or Inf in the objective or a gradient stops training (``nan_policy="raise"``) with a report
  naming the step, the parameter set, the bout starts and the first non-finite quantity, or, with
  ``nan_policy="skip"``, drops that set's update and resets its optimizer state. Never a silent
  re-initialisation;
- logged per step: objective (mean and per set), global and per-parameter gradient norms, learning rate,
  skipped sets; every ``eval_every`` steps also the fraction of arbitrage phases of the step's first bout
  whose gate or candidate selection lies within its temperature of the boundary (NaN on other steps: it
  needs an extra exact-path pass);
- every ``eval_every`` steps: exact-mode metrics on the validation period for every parameter set,
  best parameters kept per set, early stopping on ``patience``; final exact-mode test metrics.

Periods: ``burn_in`` rows warm the estimators; the rows after it are split in time order into
train / validation / test by ``config.split``. A training bout ``[s, s + B - 1)`` lies inside the
training period; validation and test are each one exact-mode bout covering their whole period
(estimators warmed by every row before it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tfmm.api import check_objective_length, make_request, simulate
from tfmm.backend import get_backend
from tfmm.core.memory import MINUTES_PER_DAY, memory_days_from_lambda
from tfmm.data import Prices, as_prices
from tfmm.specs import Pool, Strategy, TrainConfig, to_toml


class TrainingDivergedError(FloatingPointError):
    """A non-finite objective or gradient under ``nan_policy="raise"``; ``.report`` has the details."""

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Periods:
    """Row ranges [start, stop) of the burn-in and the three periods."""

    burn_in: int
    train: tuple[int, int]
    validation: tuple[int, int]
    test: tuple[int, int]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    strategy: best parameters by validation objective (a single set); strategies_per_set: the best of
    every set; history: one row per step; evaluations: one row per validation pass; validation, test:
    exact-mode metrics of ``strategy``; run_dir: where the run was written (or None).
    """

    strategy: Strategy
    strategies_per_set: list[Strategy]
    history: Any
    evaluations: Any
    validation: dict[str, float]
    test: dict[str, float]
    periods: Periods
    best_set: int
    stopped_early: bool
    wall_time_s: float
    run_dir: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)


# --- periods and sampling ---------------------------------------------------------------------------

def strategy_memory_days(strategy: Strategy, chunk_period: int) -> float:
    """Largest memory length (days) among the strategy's lambdas (0 for constant strategies)."""
    days = 0.0
    for name in ("logit_lambda", "logit_lambda_2"):
        if name in strategy.params:
            lam = 1.0 / (1.0 + np.exp(-np.asarray(strategy.params[name], dtype=np.float64)))
            days = max(days, float(np.max(memory_days_from_lambda(lam, chunk_period))))
    return min(days, strategy.max_memory_days)


def default_burn_in(strategy: Strategy, pool: Pool, n_rows: int) -> int:
    """About three memory lengths of the initial strategy, at most a quarter of the data, on a chunk boundary."""
    c = pool.chunk_period
    wanted = int(math.ceil(3.0 * strategy_memory_days(strategy, c) * MINUTES_PER_DAY))
    burn_in = min(wanted, n_rows // 4)
    return (burn_in // c) * c


def make_periods(n_rows: int, strategy: Strategy, pool: Pool, config: TrainConfig) -> Periods:
    """Split rows after the burn-in by ``config.split``; errors say how many rows would be needed."""
    burn_in = default_burn_in(strategy, pool, n_rows) if config.burn_in is None else config.burn_in
    usable = n_rows - burn_in
    if usable <= 0:
        raise ValueError(f"burn_in={burn_in} leaves no rows (prices have {n_rows})")
    f_train, f_val, _ = config.split
    train_stop = burn_in + int(usable * f_train)
    val_stop = train_stop + int(usable * f_val)
    periods = Periods(burn_in, (burn_in, train_stop), (train_stop, val_stop), (val_stop, n_rows))
    c, B = pool.chunk_period, config.bout_length
    first = _first_chunk_start(burn_in, c)
    needed_train = (first - burn_in) + B - 1
    min_eval = 2 * MINUTES_PER_DAY + 1 if config.objective.startswith("daily") else 2
    need_total = burn_in + int(math.ceil(max(needed_train / f_train,
                                             (min_eval / f_val) if f_val > 0 else 0,
                                             (min_eval / config.split[2]) if config.split[2] > 0 else 0))) + 1
    if train_stop - first < B - 1:
        raise ValueError(
            f"data too short: the training period has {train_stop - burn_in} rows but a bout of length "
            f"{B} starting on a chunk boundary needs {needed_train}; about {need_total} rows are needed "
            f"(prices have {n_rows}); shorten bout_length or burn_in"
        )
    for name, (a, b), frac in (("validation", periods.validation, f_val), ("test", periods.test, config.split[2])):
        if frac > 0 and b - a < min_eval:
            raise ValueError(
                f"data too short: the {name} period has {b - a} rows but objective {config.objective!r} needs "
                f"at least {min_eval}; about {need_total} rows are needed (prices have {n_rows})"
            )
    return periods


def _first_chunk_start(row: int, chunk_period: int) -> int:
    return -(-row // chunk_period) * chunk_period


def candidate_starts(periods: Periods, chunk_period: int, bout_length: int) -> np.ndarray:
    """Every chunk-boundary start s with the bout's rows [s, s + B - 1) inside the training period."""
    lo, hi = periods.train
    first = _first_chunk_start(lo, chunk_period)
    last = hi - (bout_length - 1)
    return np.arange(first, last + 1, chunk_period, dtype=np.int64)


def sample_starts(candidates: np.ndarray, batch_size: int, step: int, seed: int, sampling: str) -> np.ndarray:
    """``batch_size`` starts for ``step``, reproducible from (seed, step) alone (so resume is exact).

    uniform: independent uniform draws; stratified: one draw from each of ``batch_size`` equal strata.
    """
    rng = np.random.default_rng([seed, step])
    n = candidates.size
    if sampling == "stratified" and n >= batch_size:
        edges = np.linspace(0, n, batch_size + 1)
        idx = np.array([rng.integers(int(edges[i]), max(int(edges[i]) + 1, int(edges[i + 1]))) for i in range(batch_size)])
    else:
        idx = rng.integers(0, n, size=batch_size)
    return np.sort(candidates[idx])


def initial_param_sets(strategy: Strategy, n_sets: int, seed: int, noise: float) -> dict[str, np.ndarray]:
    """(n_sets, n) parameters: the strategy's own set(s) first, further sets perturbed by N(0, noise^2)
    in the unconstrained space (seeded)."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in strategy.params.items()}
    if strategy.n_sets is not None:
        if strategy.n_sets != n_sets:
            raise ValueError(f"strategy has {strategy.n_sets} parameter sets but n_sets={n_sets}")
        return params
    rng = np.random.default_rng([seed, 1_000_003])
    out = {}
    for k, v in params.items():
        stacked = np.repeat(v[None], n_sets, axis=0)
        stacked[1:] += rng.normal(0.0, noise, size=stacked[1:].shape)
        out[k] = stacked
    return out


# --- the loop -------------------------------------------------------------------------------------

def _exact_metrics(prices: Prices, strategy: Strategy, pool: Pool, period: tuple[int, int], dtype: str):
    """Exact-mode metrics of one bout covering the rows [start, stop) of ``period`` (per set when batched)."""
    from tfmm.api import metrics

    start, stop = period
    return metrics(simulate(prices, strategy, pool, start=start, length=stop - start + 1, mode="exact", dtype=dtype))


def _localise_nonfinite(prices, strategy, pool, config, starts, set_index, params_np, stats) -> dict[str, Any]:
    """Re-run the failing set on the failing bouts and name the first non-finite quantity."""
    report: dict[str, Any] = {"set": int(set_index), "starts": [int(s) for s in starts]}
    single = strategy.with_params({k: v[set_index] for k, v in params_np.items()})
    report["params"] = {k: v[set_index].tolist() for k, v in params_np.items()}
    objective_value = float(np.asarray(stats["objective"])[set_index])
    report["objective"] = objective_value
    try:
        sim = simulate(prices, single, pool, start=np.asarray(starts), length=config.bout_length,
                       mode=config.mode, smoothing=config.smoothing, dtype=config.dtype).to_numpy()
    except Exception as exc:  # noqa: BLE001 - report whatever stopped the re-run
        report["first_nonfinite"] = f"simulation raised {type(exc).__name__}: {exc}"
        return report
    for name in ("weights", "reserves", "values"):
        arr = getattr(sim, name)
        bad = ~np.isfinite(arr)
        if bad.any():
            where = np.argwhere(bad)[0]
            bout, row = int(where[0]), int(where[1])
            report["first_nonfinite"] = f"{name} at bout row {row} of the bout starting at row {int(starts[bout])}"
            return report
    if not math.isfinite(objective_value):
        report["first_nonfinite"] = f"objective {config.objective} (simulation finite)"
        return report
    bad_groups = [k for k, v in stats["group_norms"].items() if not np.isfinite(np.asarray(v)[set_index])]
    report["first_nonfinite"] = f"gradient of {', '.join(bad_groups) or 'parameters'}"
    return report


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def train(
    prices: Any,
    strategy: Strategy,
    pool: Pool,
    config: TrainConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    init_noise: float = 0.5,
) -> TrainResult:
    """Train ``strategy``'s parameters on ``prices`` with the current backend (see module docstring).

    run_dir: write config, log CSV, checkpoints, best parameters, metrics and plots there;
    resume: a run folder (or checkpoint file) to continue from, giving the same result as an
    uninterrupted run with the same config and seed.
    """
    import pandas as pd

    config = TrainConfig() if config is None else config
    prices = as_prices(prices)
    if not strategy.is_trainable:
        raise ValueError(f"strategy {strategy.name!r} has no trainable parameters")
    check_objective_length(config.objective, config.bout_length)
    bk = get_backend()
    if not hasattr(bk, "make_trainer"):
        raise ValueError(f"backend {bk.name!r} cannot train; use tfmm.use('jax')")
    periods = make_periods(prices.n_rows, strategy, pool, config)
    candidates = candidate_starts(periods, pool.chunk_period, config.bout_length)
    params0 = initial_param_sets(strategy, config.n_sets, config.seed, init_noise)
    template = strategy.with_params(params0)
    request = make_request(prices, template, pool, start=candidates[:1], length=config.bout_length,
                           mode=config.mode, smoothing=config.smoothing, dtype=config.dtype)
    trainer = bk.make_trainer(request, config)
    run_path = Path(run_dir) if run_dir is not None else None
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        (run_path / "config.toml").write_text(to_toml(pool=pool, strategy=strategy, train=config))

    state_np: dict[str, Any] | None = None
    if resume is not None:
        ckpt = Path(resume)
        ckpt = ckpt / "checkpoint.pkl" if ckpt.is_dir() else ckpt
        state_np = pickle.loads(ckpt.read_bytes())
        if state_np["config"] != config.to_dict():
            raise ValueError(f"checkpoint {ckpt} was written with another TrainConfig; resume needs the same one")
    if state_np is None:
        params = trainer.from_numpy(params0, config.dtype)
        opt_state = trainer.init(params)
        start_step, history_rows, eval_rows = 0, [], []
        best_value = np.full(config.n_sets, -np.inf)
        best_params = {k: v.copy() for k, v in params0.items()}
        evals_since_improvement = 0
        updates_applied = np.zeros(config.n_sets, dtype=np.int64)
    else:
        params = trainer.from_numpy(state_np["params"], config.dtype)
        opt_state = trainer.from_numpy(state_np["opt_state"], config.dtype)
        start_step = state_np["step"]
        history_rows, eval_rows = state_np["history"], state_np["evaluations"]
        best_value, best_params = state_np["best_value"], state_np["best_params"]
        evals_since_improvement = state_np["evals_since_improvement"]
        updates_applied = state_np["updates_applied"]

    if state_np is None:
        # the initial parameters are candidates too: training never returns worse on validation than its start
        val0 = _validate_sets(prices, strategy, pool, config, periods, params0)
        best_value = val0.copy()
        eval_rows.append({"step": 0, **{f"validation_set{i}": float(v) for i, v in enumerate(val0)},
                          "validation_best": float(np.max(best_value))})
    static_inputs = trainer.static_inputs(request)
    t0 = time.perf_counter()
    stopped_early = False
    steps = range(start_step, config.n_iterations)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(steps, desc=f"train {strategy.name}", unit="step", initial=start_step, total=config.n_iterations)
        steps = bar
    names = list(params0)
    for step in steps:
        starts = sample_starts(candidates, config.batch_size, step, config.seed, config.sampling)
        lr = trainer.learning_rate(step, opt_state)
        params, opt_state, stats = trainer.step(params, opt_state, static_inputs + (trainer.starts(starts),))
        stats = trainer.to_numpy(stats)
        finite = np.asarray(stats["finite"])
        if not finite.all():
            bad_set = int(np.argmin(finite))
            if config.nan_policy == "raise":
                report = _localise_nonfinite(prices, strategy, pool, config, starts, bad_set,
                                             trainer.to_numpy(params), stats)
                report["step"] = step
                raise TrainingDivergedError(
                    f"non-finite objective or gradient at step {step}, parameter set {bad_set}, bout starts "
                    f"{report['starts']}: first non-finite quantity: {report['first_nonfinite']} "
                    f"(nan_policy='raise'; use nan_policy='skip' to drop such updates)", report)
        objective = np.asarray(stats["objective"], dtype=np.float64)
        updates_applied = np.where(finite, updates_applied + 1, 0)
        row: dict[str, Any] = {
            "step": step,
            "objective": float(np.nanmean(np.where(finite, objective, np.nan))) if finite.any() else float("nan"),
            "grad_norm": float(np.mean(np.asarray(stats["grad_norm"])[finite])) if finite.any() else float("nan"),
            "learning_rate": float(np.mean(lr)),
            "skipped_sets": int((~finite).sum()),
        }
        for i in range(config.n_sets):
            row[f"objective_set{i}"] = float(objective[i])
            row[f"grad_norm_set{i}"] = float(np.asarray(stats["grad_norm"])[i])
        for k in names:
            row[f"grad_norm_{k}"] = float(np.mean(np.asarray(stats["group_norms"][k])))
        row["gate_near_boundary"] = row["selection_near_boundary"] = float("nan")
        history_rows.append(row)
        if bar is not None:
            bar.set_postfix(objective=f"{row['objective']:.4g}", grad=f"{row['grad_norm']:.3g}")

        done = step + 1 == config.n_iterations
        if (step + 1) % config.eval_every == 0 or done:
            params_np = trainer.to_numpy(params)
            val = _validate_sets(prices, strategy, pool, config, periods, params_np)
            improved = val > best_value
            for i in np.flatnonzero(improved):
                best_value[i] = val[i]
                for k in names:
                    best_params[k][i] = params_np[k][i]
            evals_since_improvement = 0 if improved.any() else evals_since_improvement + 1
            row.update(_boundary_row(prices, strategy, pool, config, starts[0], params_np))
            eval_rows.append({"step": step + 1, **{f"validation_set{i}": float(v) for i, v in enumerate(val)},
                              "validation_best": float(np.max(best_value))})
            if config.patience is not None and evals_since_improvement >= config.patience:
                stopped_early = True
        if run_path is not None and ((step + 1) % config.checkpoint_every == 0 or done or stopped_early):
            snapshot = {
                "config": config.to_dict(), "step": step + 1, "params": trainer.to_numpy(params),
                "opt_state": trainer.to_numpy(opt_state), "history": history_rows, "evaluations": eval_rows,
                "best_value": best_value, "best_params": best_params,
                "evals_since_improvement": evals_since_improvement, "updates_applied": updates_applied,
            }
            _atomic_write(run_path / "checkpoint.pkl", pickle.dumps(snapshot))
        if stopped_early:
            break
    if bar is not None:
        bar.close()

    if not np.isfinite(best_value).any():
        raise TrainingDivergedError("no parameter set reached a finite validation objective",
                                    {"best_value": best_value.tolist()})
    best_set = int(np.argmax(best_value))
    per_set = [strategy.with_params({k: best_params[k][i] for k in names}) for i in range(config.n_sets)]
    best = per_set[best_set]
    validation = _exact_metrics(prices, best, pool, periods.validation, config.dtype) if periods.validation[1] > periods.validation[0] else {}
    test = _exact_metrics(prices, best, pool, periods.test, config.dtype) if periods.test[1] > periods.test[0] else {}
    result = TrainResult(
        strategy=best, strategies_per_set=per_set, history=pd.DataFrame(history_rows),
        evaluations=pd.DataFrame(eval_rows), validation=validation, test=test, periods=periods,
        best_set=best_set, stopped_early=stopped_early, wall_time_s=time.perf_counter() - t0, run_dir=run_path,
        extras={"updates_applied": updates_applied},
    )
    if run_path is not None:
        write_run(result, prices, pool, config)
    return result


def _boundary_row(prices, strategy, pool, config, start, params_np) -> dict[str, float]:
    """Gate / selection boundary fractions on the step's first bout, mean over sets (exact path)."""
    from tfmm.diagnostics import boundary_statistics

    gate, sel = [], []
    for i in range(config.n_sets):
        single = strategy.with_params({k: v[i] for k, v in params_np.items()})
        try:
            b = boundary_statistics(prices, single, pool, int(start), config.bout_length, config.smoothing)
        except (ValueError, FloatingPointError):
            continue
        gate.append(b["gate_near_boundary"])
        sel.append(b["selection_near_boundary"])
    if not gate:
        return {}
    return {"gate_near_boundary": float(np.mean(gate)), "selection_near_boundary": float(np.mean(sel))}


def _validate_sets(prices, strategy, pool, config, periods, params_np) -> np.ndarray:
    """Exact-mode validation objective of every parameter set (one simulation with a set axis)."""
    period = periods.validation if periods.validation[1] > periods.validation[0] else periods.train
    values = _exact_metrics(prices, strategy.with_params(params_np), pool, period, config.dtype)[config.objective]
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return np.where(np.isfinite(values), values, -np.inf)


def write_run(result: TrainResult, prices: Prices, pool: Pool, config: TrainConfig) -> None:
    """Log CSV, best parameters (TOML), validation/test metrics (JSON) and PNG plots in ``result.run_dir``."""
    run = result.run_dir
    result.history.to_csv(run / "log.csv", index=False)
    result.evaluations.to_csv(run / "evaluations.csv", index=False)
    (run / "best_params.toml").write_text(to_toml(strategy=result.strategy))
    summary = {"best_set": result.best_set, "validation": result.validation, "test": result.test,
               "periods": dataclasses.asdict(result.periods), "stopped_early": result.stopped_early,
               "wall_time_s": result.wall_time_s}
    (run / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    from tfmm.plots import plot_run

    plot_run(result, prices, pool, run)
