"""Ray Tune machinery of ``tfmm sweep``: search space, searcher, scheduler, the trial function, the ledger.

Imported only when a sweep runs (it imports Ray). Layout of a sweep folder ``OUT``:

- ``OUT/trials/<trial id>/``: one ordinary training run folder per trial (what ``tfmm train`` writes), plus
  ``trial.json``: the trial's parameters, status (running, finished, failed, stopped, interrupted), metrics,
  error message, attempts and wall time. Written by the trial itself.
- ``OUT/trials.json``: every trial Ray Tune knows, with its Tune status and last result (the ledger,
  written by the driver when a trial ends and when the run ends).
- ``OUT/tune/``: Ray Tune's experiment state, which ``--resume`` restores (``Tuner.restore``).

Trials report ``validation`` (the best exact-mode validation objective so far, ``validation_best`` of the
training's evaluations table) and ``step`` at the training's evaluation cadence, so ASHA can stop them; the
final report adds ``test`` and ``finished``. A resumed trial continues its training from the run folder's
checkpoint; a finished one is never trained again, and a failed one fails again with its recorded error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
from ray import tune

from tfmm.sweep.report import read_json
from tfmm.sweep.spec import SweepSpec, trial_specs

TRIALS = "trials"
EXPERIMENT = "tune"
RECORD = "trial.json"
LEDGER = "trials.json"
METRIC = "validation"  # the key trials report; the objective it holds is SweepSpec.metric
TIME_ATTR = "step"


class TrialFailed(RuntimeError):
    """A trial that failed before, failing again on resume with its recorded message (never retrained)."""


def write_json(path: Path, obj: Any) -> None:
    """Atomically (temporary file and rename), NaN and infinities as null."""
    from tfmm.training import json_ready

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json_ready(obj), indent=2, allow_nan=False))
    os.replace(tmp, path)


# --- search space, searcher, scheduler ------------------------------------------------------------------

def domain(p: Any) -> Any:
    """The Tune domain of a :class:`~tfmm.sweep.spec.Parameter`; integer fields sample [low, high] inclusive."""
    if p.kind in ("grid", "choice"):
        values = list(range(len(p.values))) if p.encoded else list(p.values)
        return tune.grid_search(values) if p.kind == "grid" else tune.choice(values)
    if p.integer:
        high = int(p.high) + 1
        return tune.randint(int(p.low), high) if p.kind == "uniform" else tune.lograndint(int(p.low), high)
    return tune.uniform(p.low, p.high) if p.kind == "uniform" else tune.loguniform(p.low, p.high)


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """Flat: dotted field name -> Tune domain."""
    return {p.name: domain(p) for p in spec.parameters}


def search_alg(spec: SweepSpec) -> Any:
    """Grid and random: Tune's variant generator (seeded); tpe: Optuna's TPE (seeded)."""
    if spec.searcher == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(seed=spec.seed)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.concurrency or 0)


def scheduler(spec: SweepSpec) -> Any:
    """FIFO, or ASHA on the training step (``grace_period`` steps before a first stop)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler == "fifo":
        return FIFOScheduler()
    # max_t one past the last step: ASHA stops any trial whose time reaches max_t, a finished one included
    return ASHAScheduler(time_attr=TIME_ATTR, max_t=spec.max_steps + 1, grace_period=spec.grace_period,
                         reduction_factor=spec.reduction_factor)


# --- the trial ------------------------------------------------------------------------------------------

def _reporter(active: bool, last_step: int) -> Callable[[dict[str, Any]], None] | None:
    """The training's ``on_evaluation`` callback: each evaluation to Tune (when the metric is the objective),
    but the one at ``last_step``, which the final report carries (so a scheduler never stops a trial
    between its last step and its outputs)."""
    if not active:
        return None

    def report(row: dict[str, Any]) -> None:
        if int(row["step"]) < last_step:
            tune.report({METRIC: float(row["validation_best"]), TIME_ATTR: int(row["step"])})

    return report


def _final_metrics(record: dict[str, Any]) -> dict[str, Any]:
    nan = float("nan")
    value = record.get("validation")
    test = record.get("test")
    return {METRIC: nan if value is None else value, "test": nan if test is None else test,
            TIME_ATTR: int(record.get("steps") or 0), "finished": True}


def run_trial(config: dict[str, Any], spec: SweepSpec, out: str) -> None:
    """One trial (runs in a Ray worker): the base run with the sampled values, trained into
    ``OUT/trials/<trial id>``; ``trial.json`` records how it went (status, metrics, error, attempts)."""
    run_dir = Path(out) / TRIALS / tune.get_context().get_trial_id()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RECORD
    record = read_json(path) or {}
    if record.get("status") == "finished":  # finished before an interruption: report, never retrain
        tune.report(_final_metrics(record))
        return
    if record.get("status") == "failed":
        raise TrialFailed(record.get("error", "failed before"))
    values = {p.name: p.decode(config[p.name]) for p in spec.parameters}
    record.update(trial=run_dir.name, params=values, status="running", attempts=int(record.get("attempts", 0)) + 1,
                  started=record.get("started", time.time()))
    write_json(path, record)
    if spec.gpus_per_trial and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in os.environ:
        # several trials share a GPU: JAX must not take 75% of its memory each (set before JAX starts)
        os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{min(0.9, 0.9 * spec.gpus_per_trial):.3f}"
    t0, spent = time.perf_counter(), float(record.get("wall_time_s") or 0.0)

    def finish(status: str, **extra: Any) -> None:
        record.update(status=status, wall_time_s=spent + time.perf_counter() - t0, ended=time.time(), **extra)
        write_json(path, record)

    try:
        metrics = train_trial(spec, values, run_dir)
    except SystemExit:  # Tune stops the trial (ASHA) from inside a report
        finish("stopped")
        raise
    except KeyboardInterrupt:
        finish("interrupted")
        raise
    except Exception as exc:
        finish("failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise
    finish("finished", **metrics)
    tune.report(_final_metrics(record))


def train_trial(spec: SweepSpec, values: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train one trial into ``run_dir`` (continuing its checkpoint if it has one), reporting each
    evaluation to Tune; returns its validation and test ``spec.metric``, steps, early stop and best set."""
    import tfmm
    from tfmm.backend import default_backend_name
    from tfmm.training import CHECKPOINT

    pool, strategy, config = trial_specs(spec.base, values)
    resume = run_dir if (run_dir / CHECKPOINT).exists() else None
    with tfmm.use(spec.base.backend or default_backend_name()):
        result = tfmm.train(spec.base.prices, strategy, pool, config, run_dir=run_dir, resume=resume,
                            overwrite=resume is None, progress=False,
                            on_evaluation=_reporter(config.objective == spec.metric, config.n_iterations))
    return {"validation": result.validation.get(spec.metric), "test": result.test.get(spec.metric),
            "steps": int(result.evaluations["step"].max()) if len(result.evaluations) else 0,
            "stopped_early": bool(result.stopped_early), "best_set": int(result.best_set)}


# --- the driver's ledger ------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            return str(value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def error_text(out: Path, trial: Any) -> str:
    """A failed trial's message: its ``trial.json`` error, else the last line of Tune's error file."""
    record = read_json(out / TRIALS / trial.trial_id / RECORD) or {}
    if record.get("error"):
        return record["error"]
    try:
        text = trial.get_error() or ""
    except Exception:  # noqa: BLE001 - an unreadable error file still leaves the trial failed
        text = ""
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"see {trial.error_file or 'the Ray Tune trial folder'}"


class Ledger(tune.Callback):
    """Writes ``OUT/trials.json`` (every trial's Tune status, config, last result) when trials end, and prints
    one line per trial started and ended (failures always, on stderr)."""

    def __init__(self, out: str, metric: str, total: int, progress: bool,
                 choices: dict[str, list[Any]] | None = None) -> None:
        self.out, self.metric, self.total, self.progress = out, metric, total, progress
        self.choices = choices or {}  # encoded choices: name -> values (the searcher samples their index)

    def _write(self, trials: list[Any]) -> None:
        rows = []
        for t in trials:
            last = t.last_result or {}
            rows.append({"trial": t.trial_id, "tune_status": t.status, "config": _plain(dict(t.config)),
                         METRIC: _plain(last.get(METRIC)), TIME_ATTR: _plain(last.get(TIME_ATTR)),
                         "error": error_text(Path(self.out), t) if t.status == "ERROR" else None})
        write_json(Path(self.out) / LEDGER, rows)

    def _ended(self, trials: list[Any], trial: Any) -> int:
        """Trials ended, ``trial`` included (Tune calls the hooks before it updates the trial's status)."""
        return 1 + sum(t.status in ("TERMINATED", "ERROR") for t in trials if t is not trial)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self.progress:
            config = {k: self.choices[k][int(v)] if k in self.choices else v for k, v in trial.config.items()}
            values = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in config.items())
            print(f"trial {trial.trial_id} started: {values}", flush=True)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials)
        if not self.progress:
            return
        record = read_json(Path(self.out) / TRIALS / trial.trial_id / RECORD) or {}
        value = record.get("validation") if record.get("status") == "finished" else (trial.last_result or {}).get(METRIC)
        how = "finished" if record.get("status") == "finished" else \
            f"stopped by the scheduler at step {(trial.last_result or {}).get(TIME_ATTR)}"
        wall = record.get("wall_time_s")
        print(f"trial {self._ended(trials, trial)}/{self.total} {trial.trial_id} {how}: validation {self.metric} "
              f"{_fmt(value)}, test {_fmt(record.get('test'))}" + (f" ({wall:.1f} s)" if wall else ""), flush=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._write(trials)
        message = error_text(Path(self.out), trial).replace("\n", "\n  ")
        print(f"trial {self._ended(trials, trial)}/{self.total} {trial.trial_id} failed: {message}", file=sys.stderr,
              flush=True)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._write(trials)


def _fmt(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


# --- running ------------------------------------------------------------------------------------------

def _trainable(spec: SweepSpec, out: Path) -> Any:
    resources = {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec, out=str(out)), resources)


def can_resume(out: Path) -> bool:
    """True when ``OUT/tune`` holds Ray Tune experiment state to restore."""
    return tune.Tuner.can_restore(str((out / EXPERIMENT).resolve()))


def make_tuner(spec: SweepSpec, out: Path, *, resume: bool, progress: bool, callbacks: Sequence[Any]) -> Any:
    """A new Tuner, or the restored one (unfinished trials resumed, errored ones re-run: a failed trial
    fails again at once with its recorded error, a Ctrl-C'd one continues from its checkpoint)."""
    out = out.resolve()
    if resume and can_resume(out):
        return tune.Tuner.restore(str(out / EXPERIMENT), trainable=_trainable(spec, out), resume_unfinished=True,
                                  resume_errored=True)
    num_samples = spec.trials // spec.grid_size if spec.searcher == "grid" else spec.trials
    # grid/random: the variant generator limits concurrency itself; Optuna through Tune's ConcurrencyLimiter
    limit = spec.concurrency if spec.searcher == "tpe" else None
    tune_config = tune.TuneConfig(metric=METRIC, mode="max", search_alg=search_alg(spec), scheduler=scheduler(spec),
                                  num_samples=num_samples, max_concurrent_trials=limit, reuse_actors=True)
    run_config = tune.RunConfig(
        name=EXPERIMENT, storage_path=str(out), verbose=0,
        failure_config=tune.FailureConfig(max_failures=0),
        callbacks=[Ledger(str(out), spec.metric, spec.trials, progress,
                          {p.name: list(p.values) for p in spec.parameters if p.encoded}), *callbacks])
    return tune.Tuner(_trainable(spec, out), param_space=param_space(spec), tune_config=tune_config,
                      run_config=run_config)


def start_ray(address: str | None) -> bool:
    """Start (or join, with ``address``) Ray unless it is running; True when this call started it."""
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             configure_logging=True)
    return True


def cluster_summary() -> str:
    """"N CPUs, M GPUs" of the Ray cluster."""
    res = ray.cluster_resources()
    text = f"{res.get('CPU', 0):g} CPUs"
    return text + (f", {res['GPU']:g} GPUs" if res.get("GPU") else "")


def run(spec: SweepSpec, out: Path, *, address: str | None, resume: bool, progress: bool,
        callbacks: Sequence[Any] = ()) -> None:
    """Run (or resume) the sweep with Ray Tune; Ray is started here and shut down after unless it was running."""
    started = start_ray(address)
    try:
        if progress:
            where = f"Ray cluster at {address}" if address else "local Ray"
            print(f"{where}: {cluster_summary()}", flush=True)
        tuner = make_tuner(spec, out, resume=resume, progress=progress, callbacks=callbacks)
        # Tune's own reporter stays silent (its new output engine prints a banner even at verbose=0): the Ledger
        # prints one line per trial started and ended
        quiet = {"RAY_AIR_NEW_OUTPUT": "0"}
        saved = {k: os.environ.get(k) for k in quiet}
        os.environ.update(quiet)
        # a failed trial is reported by the Ledger in one line (its traceback is in trial.json): no Tune traceback
        tune_logger = logging.getLogger("ray.tune")
        level = tune_logger.level
        tune_logger.setLevel(logging.CRITICAL)
        try:
            tuner.fit()
        finally:
            tune_logger.setLevel(level)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        if started:
            ray.shutdown()
