"""Training policy, backend-neutral: periods, bout sampling, evaluation, NaN guard, logging, checkpoints.

The stability fixes of tfmm (docs/stability.md measures each), all on by default:

- one learning-rate schedule applied once inside the optimizer (the backend adapter builds
  ``chain(clip_by_global_norm, adam(schedule), reduce_on_plateau)``), global-norm clipping on;
- bout starts sampled on chunk boundaries inside the training period (math.md 1);
- one dtype end to end (params, prices and optimizer state);
- a NaN or Inf in the objective or a gradient stops training (``nan_policy="raise"``) with a report
  naming the step, the parameter set, the bout starts and the first non-finite quantity, or, with
  ``nan_policy="skip"``, drops that set's update and resets its optimizer state. Never a silent
  re-initialisation. An update that takes a set's parameters out of range (lambda rounding to 0, k above
  2^40 or infinite: :func:`tfmm.specs.parameter_problems`) counts as non-finite too, and so does a
  validation whose simulation or objective is non-finite: such a set is never selected as the best;
- logged per step: objective (mean and per set), global and per-parameter gradient norms, learning rate,
  skipped sets; every ``eval_every`` steps also the fraction of arbitrage phases of the step's first bout
  whose gate or candidate selection lies within its temperature of the boundary (NaN on other steps: it
  needs an extra exact-path pass);
- every ``eval_every`` steps: exact-mode metrics on the validation period for every parameter set,
  best parameters kept per set, early stopping on ``patience``; final exact-mode test metrics;
- a training-progress signal beside validation: the training objective (training mode) of every parameter
  set on a fixed *probe* batch of ``probe_size`` training bouts, drawn once from the seed (so a resumed run
  probes the same bouts), at step 0 and every ``eval_every`` steps (evaluations columns ``probe_set{i}``,
  ``probe_mean``). Unlike the per-step objective it is not confounded by the changing batch.

Run folders: a folder holding a run is refused unless resumed or ``overwrite=True``; everything (inputs,
a resumed checkpoint and its fingerprint of prices, strategy, pool and TrainConfig) is validated before
anything is written; checkpoints are ``checkpoint.npz`` (arrays and JSON, no pickle); Ctrl-C raises
:class:`TrainingInterrupted` naming the last checkpoint. ``docs/errors.md`` lists every refusal.

Structure: :func:`train` validates, builds a :class:`TrainingRun` (what stays fixed: data, periods, the
compiled trainer, the validation scenario transferred to the backend once) and a :class:`TrainState` (what
changes, and what a checkpoint holds: ``init`` / ``resume`` / ``save``), then repeats
:func:`train_one_step`: :func:`sample_step`, :func:`update_step` (the backend's pure per-step update, then
:func:`on_nonfinite`), :func:`log_row`, and on their cadences :func:`evaluate_and_keep_best` and
``TrainState.save``.

Periods: ``burn_in`` rows warm the estimators; the rows after it are split in time order into
train / validation / test by ``config.split``. A training bout ``[s, s + B - 1)`` lies inside the
training period; validation and test are each one exact-mode bout covering their whole period
(estimators warmed by every row before it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tfmm.api import NonFiniteSimulationError, check_objective_length, make_request, simulate
from tfmm.backend import get_backend
from tfmm.core.memory import MINUTES_PER_DAY, memory_days_from_lambda
from tfmm.data import Prices, as_prices
from tfmm.specs import Pool, Strategy, TrainConfig, parameter_problems, to_toml


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
    exact-mode metrics of ``strategy``; run_dir: where the run was written (or None); extras: also
    ``final_params`` (every set's parameters after the last step, numpy) and ``probe_starts``.
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


PROBE_STREAM = 2_000_003  # the probe's random stream, apart from the per-step draws and the initialisation


def probe_size(config: TrainConfig) -> int:
    """Bouts of the probe batch (``config.probe_size``, None -> ``batch_size``; 0: no probe)."""
    return config.batch_size if config.probe_size is None else config.probe_size


def probe_starts(candidates: np.ndarray, config: TrainConfig) -> np.ndarray:
    """The probe batch: ``probe_size`` training-bout starts, one from each of as many equal strata of the
    candidates (drawn with replacement when there are fewer candidates), from the seed alone."""
    size = probe_size(config)
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    return sample_starts(candidates, size, PROBE_STREAM, config.seed, "stratified")


def probe_objective(trainer: Any, params: Any, opt_state: Any, static_inputs: tuple, starts: np.ndarray,
                    batch_size: int) -> np.ndarray:
    """Per-set training objective of ``params`` on the probe ``starts`` (mean over the bouts), nothing
    updated. A probe whose size is a multiple of ``batch_size`` runs in batches of that size through the
    trainer's compiled step (the mean of equal batches' means is the mean); otherwise in one batch."""
    chunk = batch_size if starts.size % batch_size == 0 else starts.size
    parts = [np.asarray(trainer.objective(params, opt_state, static_inputs + (trainer.starts(starts[i:i + chunk]),)),
                        dtype=np.float64) for i in range(0, starts.size, chunk)]
    return np.mean(parts, axis=0)


def _probe_row(values: np.ndarray | None) -> dict[str, float]:
    if values is None:
        return {}
    finite = np.isfinite(values)
    row = {f"probe_set{i}": float(v) for i, v in enumerate(values)}
    row["probe_mean"] = float(np.mean(values[finite])) if finite.any() else float("nan")
    return row


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
    report["params"] = {k: v[set_index].tolist() for k, v in params_np.items()}
    objective_value = float(np.asarray(stats["objective"])[set_index])
    report["objective"] = objective_value
    try:
        single = strategy.with_params({k: v[set_index] for k, v in params_np.items()})
        simulate(prices, single, pool, start=np.asarray(starts), length=config.bout_length,
                 mode=config.mode, smoothing=config.smoothing, dtype=config.dtype)
    except NonFiniteSimulationError as exc:
        report["first_nonfinite"] = (f"{exc.quantity} at bout row {exc.row} of the bout starting at row "
                                     f"{exc.start}")
        return report
    except Exception as exc:  # noqa: BLE001 - report whatever stopped the re-run
        report["first_nonfinite"] = f"simulation raised {type(exc).__name__}: {exc}"
        return report
    if not math.isfinite(objective_value):
        report["first_nonfinite"] = f"objective {config.objective} (simulation finite)"
        return report
    bad_groups = [k for k, v in stats["group_norms"].items() if not np.isfinite(np.asarray(v)[set_index])]
    report["first_nonfinite"] = f"gradient of {', '.join(bad_groups) or 'parameters'}"
    return report


# --- run folders and checkpoints ----------------------------------------------------------------------
#
# A checkpoint is one ``checkpoint.npz`` (numpy's zip of arrays, loaded with allow_pickle=False, so a run
# folder from elsewhere cannot run code): the parameters, optimizer-state leaves, best parameters and
# values, the log as columns, and a JSON text entry ``meta`` (format, step, column names, fingerprints
# of the prices, strategy, pool and TrainConfig). It is written to a temporary file and renamed.

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_FORMAT = "tfmm-checkpoint"
CHECKPOINT_VERSION = 1
# files a training run writes; a folder holding any of the first six holds a run
RUN_MARKERS = ("config.toml", CHECKPOINT, "checkpoint.pkl", "log.csv", "best_params.toml", "metrics.json")
RUN_FILES = RUN_MARKERS + ("evaluations.csv", "training.png", "weights.png", "value.png")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to another run; the message names the file."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: ``step`` reached, ``checkpoint_step`` of the last checkpoint written
    (None when none was) and ``run_dir``. Still a KeyboardInterrupt."""

    def __init__(self, message: str, step: int, checkpoint_step: int | None, run_dir: Path | None) -> None:
        super().__init__(message)
        self.step, self.checkpoint_step, self.run_dir = step, checkpoint_step, run_dir


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def prices_fingerprint(prices: Prices) -> str:
    """sha256 of the prices (values, timestamps, asset names)."""
    return _sha256(np.ascontiguousarray(prices.values, dtype="<f8").tobytes(),
                   np.ascontiguousarray(prices.timestamps, dtype="<i8").tobytes(),
                   "\x1f".join(prices.assets).encode())


def _dict_fingerprint(d: Any) -> str:
    return _sha256(json.dumps(d, sort_keys=True, default=float).encode())


def run_fingerprint(prices: Prices, strategy: Strategy, pool: Pool, config: TrainConfig) -> dict[str, str]:
    """What a resumed run must share with the run it continues: hashes of the prices, the (initial)
    strategy, the pool and the TrainConfig."""
    return {"prices": prices_fingerprint(prices), "strategy": _dict_fingerprint(strategy.to_dict()),
            "pool": _dict_fingerprint(pool.to_dict()), "config": _dict_fingerprint(config.to_dict())}


def holds_run(folder: str | Path) -> list[str]:
    """The run files (:data:`RUN_MARKERS`) present in ``folder`` (empty: it holds no run)."""
    folder = Path(folder)
    return [name for name in RUN_MARKERS if (folder / name).exists()] if folder.is_dir() else []


def _tree_leaves(tree: Any) -> list[Any]:
    """Leaves of a pytree of dicts (sorted keys), lists, tuples and NamedTuples; None has none."""
    if tree is None:
        return []
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _tree_leaves(tree[k])]
    if isinstance(tree, (list, tuple)):
        return [leaf for child in tree for leaf in _tree_leaves(child)]
    return [tree]


def _tree_rebuild(template: Any, leaves: list[Any]) -> Any:
    """``template``'s structure with ``leaves`` (consumed in :func:`_tree_leaves` order)."""
    it = iter(leaves)

    def build(t: Any) -> Any:
        if t is None:
            return None
        if isinstance(t, dict):
            return {k: v for k, v in ((k, build(t[k])) for k in sorted(t))}
        if isinstance(t, tuple) and hasattr(t, "_fields"):
            return type(t)(*[build(c) for c in t])
        if isinstance(t, (list, tuple)):
            return type(t)(build(c) for c in t)
        return next(it)

    return build(template)


def _write_checkpoint(path: Path, state: dict[str, Any]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for k, v in state["params"].items():
        arrays[f"params/{k}"] = np.asarray(v)
    for k, v in state["best_params"].items():
        arrays[f"best_params/{k}"] = np.asarray(v)
    leaves = _tree_leaves(state["opt_state"])
    for i, leaf in enumerate(leaves):
        arrays[f"opt_state/{i}"] = np.asarray(leaf)
    arrays["best_value"] = np.asarray(state["best_value"], dtype=np.float64)
    arrays["updates_applied"] = np.asarray(state["updates_applied"], dtype=np.int64)
    columns = {}
    for table in ("history", "evaluations"):
        rows = state[table]
        names = list(rows[0]) if rows else []
        columns[table] = names
        for j, name in enumerate(names):
            arrays[f"{table}/{j}"] = np.asarray([row.get(name, np.nan) for row in rows])
    meta = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "step": int(state["step"]),
        "evals_since_improvement": int(state["evals_since_improvement"]), "fingerprint": state["fingerprint"],
        "config": state["config"], "param_names": list(state["params"]), "n_opt_leaves": len(leaves),
        "columns": columns,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def checkpoint_path(resume: str | Path) -> Path:
    """The checkpoint file of ``resume`` (a run folder or the file itself); errors name what is missing."""
    path = Path(resume)
    if path.is_dir():
        if not (path / CHECKPOINT).exists():
            if (path / "checkpoint.pkl").exists():
                raise CheckpointError(
                    f"{path / 'checkpoint.pkl'} is a pickle written by an older tfmm; pickles are not loaded "
                    f"(loading one can run code): start a new run")
            raise CheckpointError(f"no checkpoint to resume from in {path} (no {CHECKPOINT})")
        return path / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"no checkpoint to resume from: {path} does not exist")
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train` as plain arrays and JSON (``opt_state`` as a list of leaves).
    Raises :class:`CheckpointError` naming the file if it is unreadable or not a tfmm checkpoint."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        if meta.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"version {meta.get('version')!r}, this tfmm reads version {CHECKPOINT_VERSION}")
        names = meta["param_names"]
        state: dict[str, Any] = {
            "step": int(meta["step"]), "config": meta["config"], "fingerprint": meta["fingerprint"],
            "evals_since_improvement": int(meta["evals_since_improvement"]),
            "params": {k: data[f"params/{k}"] for k in names},
            "best_params": {k: data[f"best_params/{k}"].copy() for k in names},
            "opt_state": [data[f"opt_state/{i}"] for i in range(int(meta["n_opt_leaves"]))],
            "best_value": data["best_value"].copy(), "updates_applied": data["updates_applied"].copy(),
        }
        for table in ("history", "evaluations"):
            cols = meta["columns"][table]
            values = [data[f"{table}/{j}"].tolist() for j in range(len(cols))]
            n = len(values[0]) if values else 0
            state[table] = [{c: values[j][i] for j, c in enumerate(cols)} for i in range(n)]
    except CheckpointError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a tfmm checkpoint ({type(exc).__name__}: {exc}); delete it "
            f"and start a new run") from None
    return state


def _check_resume(path: Path, state: dict[str, Any], fingerprint: dict[str, str], config: TrainConfig) -> None:
    """The checkpoint must come from a run with the same prices, strategy, pool and TrainConfig."""
    saved = state["fingerprint"]
    differ = [k for k in ("prices", "strategy", "pool", "config") if saved.get(k) != fingerprint[k]]
    if not differ:
        return
    details = []
    for k in differ:
        if k == "config":
            now = config.to_dict()
            keys = sorted(f for f in set(now) | set(state["config"]) if now.get(f) != state["config"].get(f))
            details.append(f"TrainConfig ({', '.join(keys) or 'values'})")
        else:
            details.append(k)
    raise CheckpointError(
        f"cannot resume from {path}: it was written for other {', '.join(details)}; resume needs the same "
        f"prices, strategy, pool and TrainConfig as the run it continues (nothing was written)")


def _prepare_run_dir(run_path: Path, resuming_here: bool, overwrite: bool) -> None:
    """Refuse a folder that holds another run (unless ``overwrite``), or a path that is not a folder."""
    if run_path.exists() and not run_path.is_dir():
        raise NotADirectoryError(f"run folder {run_path} exists and is not a folder")
    present = holds_run(run_path)
    if present and not resuming_here and not overwrite:
        raise FileExistsError(
            f"{run_path} already holds a training run ({', '.join(present)}); continue it with resume "
            f"(tfmm train --resume), replace it with overwrite=True (tfmm train --overwrite), or choose another "
            f"folder")
    parent = run_path if run_path.exists() else next((p for p in run_path.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write the run folder {run_path}: {parent} is not writable")


def json_ready(value: Any) -> Any:
    """numpy and non-finite floats made valid JSON: NaN and +-inf become null, arrays lists."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (no bare NaN or Infinity: non-finite numbers are written as null)."""
    Path(path).write_text(json.dumps(json_ready(obj), indent=2, allow_nan=False))


# --- the training state and its named steps --------------------------------------------------------

@dataclass
class TrainState:
    """What a run carries from one step to the next; a checkpoint holds all of it but the non-finite log.

    ``step`` counts completed steps; ``params`` / ``opt_state`` are the trainer's arrays (leading axis:
    parameter sets); ``best_value`` (sets,) is each set's best validation objective so far and
    ``best_params`` its parameters (numpy); ``updates_applied`` (sets,) counts each set's updates since its
    last reset; ``history`` / ``evaluations`` are the rows of the log and evaluations tables.
    """

    step: int
    params: Any
    opt_state: Any
    best_value: np.ndarray
    best_params: dict[str, np.ndarray]
    updates_applied: np.ndarray
    evals_since_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_validations: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    last_checkpoint: int | None = None

    @classmethod
    def init(cls, trainer: Any, params0: dict[str, np.ndarray], config: TrainConfig) -> "TrainState":
        """Step 0: the initial parameter sets, a fresh optimizer state, no best yet."""
        params = trainer.from_numpy(params0, config.dtype)
        return cls(step=0, params=params, opt_state=trainer.init(params),
                   best_value=np.full(config.n_sets, -np.inf), best_params={k: v.copy() for k, v in params0.items()},
                   updates_applied=np.zeros(config.n_sets, dtype=np.int64))

    @classmethod
    def resume(cls, trainer: Any, path: Path, saved: dict[str, Any], params0: dict[str, np.ndarray],
               config: TrainConfig) -> "TrainState":
        """The state of checkpoint ``path`` (read by :func:`read_checkpoint`), checked against this run's
        parameter shapes and optimizer; :class:`CheckpointError` names what does not match."""
        shapes = {k: np.shape(v) for k, v in params0.items()}
        saved_shapes = {k: np.shape(v) for k, v in saved["params"].items()}
        if saved_shapes != shapes:
            raise CheckpointError(f"checkpoint {path} holds parameters of shapes {saved_shapes}, this run needs {shapes}")
        params = trainer.from_numpy(saved["params"], config.dtype)
        template = trainer.to_numpy(trainer.init(params))
        expected = [np.shape(leaf) for leaf in _tree_leaves(template)]
        if [np.shape(leaf) for leaf in saved["opt_state"]] != expected:
            raise CheckpointError(f"checkpoint {path} holds an optimizer state that does not match this "
                                  f"optimizer ({len(saved['opt_state'])} arrays, expected {len(expected)})")
        return cls(step=saved["step"], params=params,
                   opt_state=trainer.from_numpy(_tree_rebuild(template, saved["opt_state"]), config.dtype),
                   best_value=saved["best_value"], best_params=saved["best_params"],
                   updates_applied=saved["updates_applied"], evals_since_improvement=saved["evals_since_improvement"],
                   history=saved["history"], evaluations=saved["evaluations"], last_checkpoint=saved["step"])

    def save(self, path: Path, trainer: Any, config: TrainConfig, fingerprint: dict[str, str]) -> None:
        """Write the checkpoint (atomically) and remember its step."""
        _write_checkpoint(path, {
            "config": config.to_dict(), "fingerprint": fingerprint, "step": self.step,
            "params": trainer.to_numpy(self.params), "opt_state": trainer.to_numpy(self.opt_state),
            "history": self.history, "evaluations": self.evaluations, "best_value": self.best_value,
            "best_params": self.best_params, "evals_since_improvement": self.evals_since_improvement,
            "updates_applied": self.updates_applied,
        })
        self.last_checkpoint = self.step


@dataclass(frozen=True, eq=False)
class TrainingRun:
    """What stays fixed during a run: inputs, periods, the compiled trainer and its static inputs, the probe
    bouts, the validation scenario (prices transferred once) and where the run is written."""

    prices: Prices
    strategy: Strategy
    pool: Pool
    config: TrainConfig
    periods: Periods
    candidates: np.ndarray
    probe: np.ndarray
    trainer: Any
    static_inputs: tuple
    validation: Callable[[dict[str, np.ndarray]], Any]
    fingerprint: dict[str, str]
    run_path: Path | None
    on_evaluation: Callable[[dict[str, Any]], None] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.strategy.params)


def validation_scenario(bk: Any, prices: Prices, template: Strategy, pool: Pool, config: TrainConfig,
                        periods: Periods) -> Callable[[dict[str, np.ndarray]], Any]:
    """``params -> exact-mode Simulation`` of the one bout covering the validation period (the training
    period when there is none), validated and transferred to the backend once."""
    start, stop = periods.validation if periods.validation[1] > periods.validation[0] else periods.train
    request = make_request(prices, template, pool, start=start, length=stop - start + 1, mode="exact",
                           dtype=config.dtype)
    return bk.simulator_for(request)


def sample_step(run: TrainingRun, step: int) -> np.ndarray:
    """The bout starts of ``step`` (a pure function of the seed and the step, so resuming repeats them)."""
    return sample_starts(run.candidates, run.config.batch_size, step, run.config.seed, run.config.sampling)


def update_step(run: TrainingRun, state: TrainState, starts: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """One optimizer update of every set on the bouts ``starts``; returns the step's statistics and which
    sets' updates were applied (the others are handled by :func:`on_nonfinite`)."""
    trainer = run.trainer
    previous = state.params
    state.params, state.opt_state, stats = trainer.step(state.params, state.opt_state,
                                                        run.static_inputs + (trainer.starts(starts),))
    stats = trainer.to_numpy(stats)
    finite = on_nonfinite(run, state, previous, starts, stats)
    state.updates_applied = np.where(finite, state.updates_applied + 1, 0)
    return stats, finite


def on_nonfinite(run: TrainingRun, state: TrainState, previous: Any, starts: np.ndarray,
                 stats: dict[str, Any]) -> np.ndarray:
    """Which sets' updates stand: not those with a non-finite objective or gradient (the trainer kept their
    parameters), nor those the update took out of range (reverted here). Under ``nan_policy="raise"`` the
    first such set stops training with a :class:`TrainingDivergedError` that localises it."""
    config, trainer = run.config, run.trainer
    finite = np.asarray(stats["finite"]).copy()
    if not finite.all() and config.nan_policy == "raise":
        bad_set = int(np.argmin(finite))
        report = _localise_nonfinite(run.prices, run.strategy, run.pool, config, starts, bad_set,
                                     trainer.to_numpy(state.params), stats)
        report["step"] = state.step
        raise TrainingDivergedError(
            f"non-finite objective or gradient at step {state.step}, parameter set {bad_set}, bout starts "
            f"{report['starts']}: first non-finite quantity: {report['first_nonfinite']} "
            f"(nan_policy='raise'; use nan_policy='skip' to drop such updates)", report)
    # parameters out of the usable range (lambda rounding to 0, k above 2^40 ...) count as non-finite: the
    # simulation would have NaN weights with finite values
    params_np = trainer.to_numpy(state.params)
    problems = parameter_problems(run.strategy.name, params_np, run.pool.chunk_period, run.strategy.max_memory_days)
    out_of_range = np.array([p is not None for p in problems]) & finite
    if not out_of_range.any():
        return finite
    bad_set = int(np.argmax(out_of_range))
    if config.nan_policy == "raise":
        report = {"set": bad_set, "starts": [int(s) for s in starts], "step": state.step,
                  "params": {k: v[bad_set].tolist() for k, v in params_np.items()},
                  "objective": float(np.asarray(stats["objective"])[bad_set]),
                  "first_nonfinite": f"parameters after the update: {problems[bad_set]}"}
        raise TrainingDivergedError(
            f"non-finite state at step {state.step}, parameter set {bad_set}, bout starts {report['starts']}: "
            f"first non-finite quantity: {report['first_nonfinite']} (nan_policy='raise'; use "
            f"nan_policy='skip' to drop such updates)", report)
    state.params, state.opt_state = _revert_sets(trainer, config, previous, params_np, state.opt_state, out_of_range)
    return finite & ~out_of_range


def log_row(run: TrainingRun, step: int, stats: dict[str, Any], finite: np.ndarray, lr: np.ndarray) -> dict[str, Any]:
    """The log table's row of ``step``: mean and per-set objective and gradient norms over the sets whose
    update was applied, per-parameter gradient norms, learning rate, skipped sets (boundary columns NaN
    until :func:`evaluate_and_keep_best` fills them)."""
    objective = np.asarray(stats["objective"], dtype=np.float64)
    grad_norm = np.asarray(stats["grad_norm"])
    any_finite = bool(finite.any())
    row: dict[str, Any] = {
        "step": step,
        "objective": float(np.nanmean(np.where(finite, objective, np.nan))) if any_finite else float("nan"),
        "grad_norm": float(np.mean(grad_norm[finite])) if any_finite else float("nan"),
        "learning_rate": float(np.mean(lr)),
        "skipped_sets": int((~finite).sum()),
    }
    for i in range(run.config.n_sets):
        row[f"objective_set{i}"] = float(objective[i])
        row[f"grad_norm_set{i}"] = float(grad_norm[i])
    for k in run.names:
        row[f"grad_norm_{k}"] = float(np.mean(np.asarray(stats["group_norms"][k])))
    row["gate_near_boundary"] = row["selection_near_boundary"] = float("nan")
    return row


def evaluate_and_keep_best(run: TrainingRun, state: TrainState, starts: np.ndarray | None = None,
                           row: dict[str, Any] | None = None) -> None:
    """Validate every set (exact mode), keep each set's best parameters, count evaluations without
    improvement (early stopping on ``patience``), append the evaluations row (with the probe objective)
    and send it to ``on_evaluation``; with ``row``, also fill the step's boundary columns on ``starts[0]``."""
    config = run.config
    params_np = run.trainer.to_numpy(state.params)
    val = _validate_sets(run, params_np, state.step, state.nonfinite_validations)
    improved = val > state.best_value
    for i in np.flatnonzero(improved):
        state.best_value[i] = val[i]
        for k in run.names:
            state.best_params[k][i] = params_np[k][i]
    if state.step > 0:
        state.evals_since_improvement = 0 if improved.any() else state.evals_since_improvement + 1
    if row is not None:
        row.update(_boundary_row(run.prices, run.strategy, run.pool, config, starts[0], params_np))
    state.evaluations.append({"step": state.step, **{f"validation_set{i}": float(v) for i, v in enumerate(val)},
                              "validation_best": float(np.max(state.best_value)), **_probe_row(_probe(run, state))})
    if run.on_evaluation is not None:
        run.on_evaluation(dict(state.evaluations[-1]))
    if config.patience is not None and state.evals_since_improvement >= config.patience:
        state.stopped_early = True


def _probe(run: TrainingRun, state: TrainState) -> np.ndarray | None:
    """The training objective of every set on the probe bouts (None without a probe)."""
    if run.probe.size == 0:
        return None
    return probe_objective(run.trainer, state.params, state.opt_state, run.static_inputs, run.probe,
                           run.config.batch_size)


def train_one_step(run: TrainingRun, state: TrainState) -> dict[str, Any]:
    """Sample, update, log; evaluate on the evaluation cadence; checkpoint on the checkpoint cadence."""
    config = run.config
    step = state.step
    starts = sample_step(run, step)
    lr = run.trainer.learning_rate(step, state.opt_state)
    stats, finite = update_step(run, state, starts)
    row = log_row(run, step, stats, finite, lr)
    state.history.append(row)
    state.step = step + 1
    done = state.step == config.n_iterations
    if state.step % config.eval_every == 0 or done:
        evaluate_and_keep_best(run, state, starts, row)
    if run.run_path is not None and (state.step % config.checkpoint_every == 0 or done or state.stopped_early):
        state.save(run.run_path / CHECKPOINT, run.trainer, config, run.fingerprint)
    return row


def run_steps(run: TrainingRun, state: TrainState, progress: bool) -> None:
    """Steps until ``n_iterations`` or early stopping, with a progress bar; Ctrl-C raises
    :class:`TrainingInterrupted` naming the last checkpoint."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc=f"train {run.strategy.name}", unit="step", initial=state.step, total=run.config.n_iterations)
    try:
        while state.step < run.config.n_iterations and not state.stopped_early:
            row = train_one_step(run, state)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{row['objective']:.4g}", grad=f"{row['grad_norm']:.3g}")
    except KeyboardInterrupt:
        if run.run_path is not None and state.last_checkpoint is not None:
            where = (f"the last checkpoint (step {state.last_checkpoint}) is in {run.run_path}: resume with "
                     f"resume={str(run.run_path)!r}")
        else:
            where = "no checkpoint was written"
        raise TrainingInterrupted(f"training interrupted at step {state.step}; {where}", state.step,
                                  state.last_checkpoint, run.run_path) from None
    finally:
        if bar is not None:
            bar.close()


# --- training ------------------------------------------------------------------------------------

def _check_train_inputs(prices: Any, strategy: Strategy, pool: Pool, config: TrainConfig | None) -> tuple[Prices, TrainConfig]:
    """Types and trainability of the inputs of :func:`train`; the prices as :class:`Prices`."""
    config = TrainConfig() if config is None else config
    for name, value, kind in (("strategy", strategy, Strategy), ("pool", pool, Pool), ("config", config, TrainConfig)):
        if not isinstance(value, kind):
            raise TypeError(f"{name} must be a tfmm.{kind.__name__}, got {type(value).__name__}")
    prices = as_prices(prices)
    if not strategy.is_trainable:
        raise ValueError(f"strategy {strategy.name!r} has no trainable parameters")
    check_objective_length(config.objective, config.bout_length)
    return prices, config


def _start_state(trainer: Any, params0: dict[str, np.ndarray], config: TrainConfig, resume: str | Path | None,
                 fingerprint: dict[str, str], run_path: Path | None, overwrite: bool) -> tuple[TrainState, bool]:
    """The initial or resumed state (validated), and whether the run resumes in its own folder; refuses a
    run folder that holds another run. Writes nothing."""
    resuming_here = False
    state = None
    if resume is not None:
        ckpt = checkpoint_path(resume)
        saved = read_checkpoint(ckpt)
        _check_resume(ckpt, saved, fingerprint, config)
        resuming_here = run_path is not None and run_path.resolve() == ckpt.parent.resolve()
    if run_path is not None:
        _prepare_run_dir(run_path, resuming_here, overwrite)
    if resume is not None:
        state = TrainState.resume(trainer, ckpt, saved, params0, config)
    return (state if state is not None else TrainState.init(trainer, params0, config)), resuming_here


def _open_run_dir(run_path: Path, resuming_here: bool, overwrite: bool, strategy: Strategy, pool: Pool,
                  config: TrainConfig) -> None:
    """Create the run folder (clearing another run's files under ``overwrite``) and write config.toml."""
    run_path.mkdir(parents=True, exist_ok=True)
    if overwrite and not resuming_here:
        for name in RUN_FILES:
            (run_path / name).unlink(missing_ok=True)
    (run_path / "config.toml").write_text(to_toml(pool=pool, strategy=strategy, train=config))


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
    overwrite: bool = False,
    on_evaluation: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``strategy``'s parameters on ``prices`` with the current backend (jax or torch; see the module
    docstring for what each step does).

    Args:
      prices: minute prices (as :func:`tfmm.simulate`); split in time into train / validation / test.
      strategy: the rule and its initial parameters (a parameter-set axis, or ``config.n_sets`` sets drawn
        around them with ``init_noise``, the standard deviation in unconstrained units).
      pool: the pool trained in.
      config: optimiser, schedule, bouts, objective and policies (:class:`tfmm.TrainConfig`).
      run_dir: write config, log CSV, checkpoints, best parameters, metrics and plots there. A folder that
        already holds a run is refused unless ``overwrite=True`` (its run files are then replaced) or it is
        the folder being resumed. Every input, and a resumed checkpoint, is validated before anything is
        written, so a rejected run leaves the folder as it was.
      resume: a run folder (or checkpoint file) to continue from, giving the same result as an
        uninterrupted run; it must have been written for the same prices, strategy, pool and TrainConfig.
      progress: show a progress bar.
      on_evaluation: called with a copy of each new row of the evaluations table (``step``,
        ``validation_set{i}``, ``validation_best``: the best exact-mode validation objective so far, probe
        columns) right after it is computed: at step 0 and every ``eval_every`` steps (a resumed run sends
        only the rows it adds). For progress reports (``tfmm sweep`` feeds them to Ray Tune); an exception
        it raises stops training.

    Returns:
      A :class:`TrainResult`: the best strategy (selected by exact-mode validation), every set's best, the
      log and evaluations tables, exact-mode validation and test metrics. Ctrl-C raises
      :class:`TrainingInterrupted` (a KeyboardInterrupt) saying where the last checkpoint is; a non-finite
      objective or gradient under ``nan_policy="raise"`` raises :class:`TrainingDivergedError`.
    """
    prices, config = _check_train_inputs(prices, strategy, pool, config)
    bk = get_backend()
    if not hasattr(bk, "make_trainer"):
        raise ValueError(f"backend {bk.name!r} cannot train; use tfmm.use('jax') or tfmm.use('torch')")
    periods = make_periods(prices.n_rows, strategy, pool, config)
    candidates = candidate_starts(periods, pool.chunk_period, config.bout_length)
    params0 = initial_param_sets(strategy, config.n_sets, config.seed, init_noise)
    template = strategy.with_params(params0)
    request = make_request(prices, template, pool, start=candidates[:1], length=config.bout_length,
                           mode=config.mode, smoothing=config.smoothing, dtype=config.dtype)
    if periods.validation[1] <= periods.validation[0]:
        warnings.warn(
            f"split={config.split} has no validation period: the best parameters are selected on the training "
            f"period itself (in-sample), and the reported validation metrics are empty", UserWarning, stacklevel=2)
    fingerprint = run_fingerprint(prices, strategy, pool, config)
    run_path = Path(run_dir) if run_dir is not None else None
    trainer = bk.make_trainer(request, config)
    state, resuming_here = _start_state(trainer, params0, config, resume, fingerprint, run_path, overwrite)
    # everything is validated: only now touch the run folder
    if run_path is not None:
        _open_run_dir(run_path, resuming_here, overwrite, strategy, pool, config)
    run = TrainingRun(prices=prices, strategy=strategy, pool=pool, config=config, periods=periods,
                      candidates=candidates, probe=probe_starts(candidates, config), trainer=trainer,
                      static_inputs=trainer.static_inputs(request),
                      validation=validation_scenario(bk, prices, template, pool, config, periods),
                      fingerprint=fingerprint, run_path=run_path, on_evaluation=on_evaluation)
    if state.step == 0 and not state.evaluations:
        # the initial parameters are candidates too: training never returns worse on validation than its start
        evaluate_and_keep_best(run, state)
    t0 = time.perf_counter()
    run_steps(run, state, progress)
    result = _result(run, state, time.perf_counter() - t0)
    if run_path is not None:
        write_run(result, prices, pool, config)
    return result


def _result(run: TrainingRun, state: TrainState, wall_time_s: float) -> TrainResult:
    """The :class:`TrainResult`: the best set by validation, its exact-mode validation and test metrics."""
    import pandas as pd

    if not np.isfinite(state.best_value).any():
        raise TrainingDivergedError("no parameter set reached a finite validation objective",
                                    {"best_value": state.best_value.tolist(), "nonfinite": state.nonfinite_validations})
    prices, pool, periods, dtype = run.prices, run.pool, run.periods, run.config.dtype
    best_set = int(np.argmax(state.best_value))
    per_set = [run.strategy.with_params({k: state.best_params[k][i] for k in run.names})
               for i in range(run.config.n_sets)]
    best = per_set[best_set]
    has = lambda period: period[1] > period[0]  # noqa: E731
    return TrainResult(
        strategy=best, strategies_per_set=per_set, history=pd.DataFrame(state.history),
        evaluations=pd.DataFrame(state.evaluations),
        validation=_exact_metrics(prices, best, pool, periods.validation, dtype) if has(periods.validation) else {},
        test=_exact_metrics(prices, best, pool, periods.test, dtype) if has(periods.test) else {},
        periods=periods, best_set=best_set, stopped_early=state.stopped_early, wall_time_s=wall_time_s,
        run_dir=run.run_path,
        extras={"updates_applied": state.updates_applied,
                "selected_on": "validation" if has(periods.validation) else "train",
                "nonfinite_validations": state.nonfinite_validations,
                "final_params": run.trainer.to_numpy(state.params), "probe_starts": run.probe},
    )


def _revert_sets(trainer, config, previous, params_np, opt_state, bad) -> tuple[Any, Any]:
    """Undo the update of the sets in ``bad`` (parameters back to ``previous``, optimizer state reset), as
    the trainer itself does for a non-finite objective or gradient under ``nan_policy="skip"``."""
    old = trainer.to_numpy(previous)
    fixed = {k: np.where(bad.reshape((-1,) + (1,) * (np.ndim(v) - 1)), old[k], v) for k, v in params_np.items()}
    params = trainer.from_numpy(fixed, config.dtype)
    state_np = trainer.to_numpy(opt_state)
    reset_np = trainer.to_numpy(trainer.init(params))
    leaves = []
    for leaf, fresh in zip(_tree_leaves(state_np), _tree_leaves(reset_np)):
        leaf = np.asarray(leaf)
        if leaf.ndim >= 1 and leaf.shape[0] == bad.size:
            leaf = np.where(bad.reshape((-1,) + (1,) * (leaf.ndim - 1)), np.asarray(fresh), leaf)
        leaves.append(leaf)
    return params, trainer.from_numpy(_tree_rebuild(state_np, leaves), config.dtype)


def _boundary_row(prices, strategy, pool, config, start, params_np) -> dict[str, float]:
    """Gate / selection boundary fractions on the step's first bout, mean over sets (exact path)."""
    from tfmm.diagnostics import boundary_statistics

    gate, sel = [], []
    for i in range(config.n_sets):
        try:
            single = strategy.with_params({k: v[i] for k, v in params_np.items()})
            b = boundary_statistics(prices, single, pool, int(start), config.bout_length, config.smoothing)
        except (ValueError, FloatingPointError):
            continue
        gate.append(b["gate_near_boundary"])
        sel.append(b["selection_near_boundary"])
    if not gate:
        return {}
    return {"gate_near_boundary": float(np.mean(gate)), "selection_near_boundary": float(np.mean(sel))}


def _validate_sets(run: TrainingRun, params_np: dict[str, np.ndarray], step: int, nonfinite: list) -> np.ndarray:
    """Exact-mode validation objective of every parameter set (one simulation with a set axis, on the run's
    validation scenario).

    A set whose parameters are out of range, whose simulation is non-finite or whose objective is not
    finite gets -inf, so it can never become the best; under ``nan_policy="raise"`` it stops training
    (:class:`TrainingDivergedError`). Each such case is appended to ``nonfinite``.
    """
    from tfmm.api import check_finite, metrics

    config, strategy = run.config, run.strategy
    n = config.n_sets
    values = np.full(n, -np.inf)
    reasons: list[str | None] = list(parameter_problems(strategy.name, params_np, run.pool.chunk_period,
                                                        strategy.max_memory_days))
    ok = [i for i in range(n) if reasons[i] is None]

    def objective_of(indices: list[int]) -> np.ndarray:
        sim = run.validation({k: np.asarray(v)[indices] for k, v in params_np.items()})
        check_finite(sim)
        return np.asarray(metrics(sim)[config.objective], dtype=np.float64).reshape(-1)

    if ok:
        try:
            values[ok] = objective_of(ok)
        except NonFiniteSimulationError:
            for i in ok:  # find which sets fail
                try:
                    values[i] = objective_of([i])[0]
                except NonFiniteSimulationError as exc:
                    reasons[i] = f"non-finite {exc.quantity} at row {exc.row} of the validation bout"
    for i in range(n):
        if reasons[i] is None and not math.isfinite(values[i]):
            reasons[i] = f"validation {config.objective} = {values[i]!r}"
        if reasons[i] is not None:
            values[i] = -np.inf
            nonfinite.append({"step": int(step), "set": i, "reason": reasons[i]})
            if config.nan_policy == "raise":
                raise TrainingDivergedError(
                    f"non-finite validation at step {step}, parameter set {i}: {reasons[i]} (nan_policy='raise'; "
                    f"with nan_policy='skip' such a set is never selected as best)",
                    {"step": int(step), "set": i, "first_nonfinite": reasons[i]})
    return values


def write_run(result: TrainResult, prices: Prices, pool: Pool, config: TrainConfig) -> None:
    """Log CSV, best parameters (TOML), validation/test metrics (JSON) and PNG plots in ``result.run_dir``."""
    run = result.run_dir
    result.history.to_csv(run / "log.csv", index=False)
    result.evaluations.to_csv(run / "evaluations.csv", index=False)
    (run / "best_params.toml").write_text(to_toml(strategy=result.strategy))
    summary = {"best_set": result.best_set, "selected_on": result.extras.get("selected_on", "validation"),
               "validation": result.validation, "test": result.test,
               "periods": dataclasses.asdict(result.periods), "stopped_early": result.stopped_early,
               "wall_time_s": result.wall_time_s}
    write_json(run / "metrics.json", summary)
    from tfmm.plots import plot_run

    plot_run(result, prices, pool, run)
