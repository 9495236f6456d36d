"""Hyper-parameter sweeps on Ray Tune: many training runs of one base run file, over a space of its fields.

``tfmm.sweep(config, out)`` (``tfmm sweep --config sweep.toml --out sweeps/NAME``) reads a sweep file
(:mod:`tfmm.sweep.spec`: the base run file, the space, the searcher), runs each trial as an ordinary
training run folder under ``out/trials/`` on Ray Tune (:mod:`tfmm.sweep.tuning`), and writes the results
table and plots (:mod:`tfmm.sweep.report`). Trials are ranked by the exact-mode validation objective
(maximised); the test objective is reported beside it, never used to choose.

Needs the optional extra ``sweep`` (Ray Tune, Optuna): ``pip install 'tfmm[sweep]'``. Importing this
package does not import Ray; running a sweep does. ``tfmm.sweep`` is the function :func:`sweep`: import this
package's other names with ``from tfmm.sweep import ...``.
"""

from __future__ import annotations

import importlib
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from tfmm.sweep.report import MARKDOWN, TABLE, best_row, build_table, write_report
from tfmm.sweep.spec import KINDS, SEARCHERS, Parameter, SweepSpec, load_sweep, trial_specs

if TYPE_CHECKING:
    import pandas as pd

SWEEP_FILE = "sweep.toml"  # copies of the sweep file and of its base run file, kept in the sweep folder
BASE_FILE = "base.toml"
EXTRA_HINT = "pip install 'tfmm[sweep]'"


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped before every trial ended (Ctrl-C): ``result`` holds what ended, ``out`` can be
    resumed (``tfmm.sweep(config, out, resume=True)``). Still a KeyboardInterrupt."""

    def __init__(self, message: str, result: "SweepResult") -> None:
        super().__init__(message)
        self.result = result


@dataclass
class SweepResult:
    """What :func:`sweep` returns: the results table (one row per trial, as ``results.parquet``), the
    metric that ranks trials, the best finished trial's row (None when none finished) and the folder."""

    out: Path
    table: pd.DataFrame
    metric: str
    best: dict[str, Any] | None
    wall_time_s: float

    @property
    def best_run_dir(self) -> Path | None:
        """The best trial's training run folder."""
        return None if self.best is None else self.out / self.best["run_dir"]

    def count(self, status: str) -> int:
        """Trials with ``status`` (finished, stopped, failed, unfinished)."""
        return int((self.table["status"] == status).sum())


def require_extra(*modules: str) -> None:
    """Import ``modules``; if one is missing, ImportError saying which extra to install (one line)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing = getattr(exc, "name", None) or name
            raise ImportError(f"tfmm sweep needs Ray Tune and Optuna ({missing} is not installed): "
                              f"{EXTRA_HINT}") from None


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    return sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))


def prepare_folder(spec: SweepSpec, out: Path, resume: bool) -> None:
    """A new sweep needs a folder without one; ``resume`` needs the sweep (same sweep and base files) in it.
    The sweep and base files are copied into the folder (``sweep.toml``, ``base.toml``)."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    saved = out / SWEEP_FILE
    if resume:
        if not saved.exists():
            raise FileNotFoundError(f"nothing to resume: {out} holds no sweep (no {SWEEP_FILE}); start it without "
                                    f"--resume")
        for name, document, label in ((SWEEP_FILE, spec.document, "sweep file"),
                                      (BASE_FILE, spec.base.document, "base run file")):
            old = tomllib.loads((out / name).read_text())
            differ = _differences(old, document)
            if differ:
                raise ValueError(f"cannot resume {out}: its {label} differs from {spec.base.path if name == BASE_FILE else spec.path} "
                                 f"(in {', '.join(differ)}); resume needs the files the sweep started with "
                                 f"({out / name})")
        return
    if saved.exists() or (out / "tune").exists():
        raise FileExistsError(f"{out} already holds a sweep; continue it with --resume (resume=True), or choose "
                              f"another folder")
    import tomli_w

    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(spec.path.read_text())
    (out / BASE_FILE).write_text(tomli_w.dumps(spec.base.document))


def _summary(spec: SweepSpec) -> str:
    names = ", ".join(p.name for p in spec.parameters)
    at_once = spec.concurrency or "as resources allow"
    gpus = f", {spec.gpus_per_trial:g} GPU" if spec.gpus_per_trial else ""
    return (f"sweep {spec.path.name}: {spec.trials} trials of {spec.base.path.name} over {names}; searcher "
            f"{spec.searcher}, scheduler {spec.scheduler}, {at_once} at once, {spec.cpus_per_trial:g} CPU{gpus} "
            f"per trial; metric: validation {spec.metric} (max)")


def sweep(config: str | Path | SweepSpec, out: str | Path, *, address: str | None = None, resume: bool = False,
          progress: bool = True, callbacks: Sequence[Any] = ()) -> SweepResult:
    """Run the sweep of ``config`` into the folder ``out``: one training run per trial on Ray Tune, ranked by
    the exact-mode validation objective, then the results table and plots (docs/sweep.md).

    Args:
      config: a sweep file (TOML: ``[sweep]``, ``[space.*]``) or a :class:`SweepSpec` from :func:`load_sweep`.
      out: the sweep folder; a new sweep needs one that holds no sweep.
      address: an existing Ray cluster to join (``ray.init(address=...)``; ``out`` must then be a folder every
        node sees); default: a local Ray on this machine's cores, shut down at the end (a Ray this process
        already started is used and left running).
      resume: continue the sweep in ``out`` (same sweep and base files): ended trials are kept, never trained
        again; unfinished ones continue from their training checkpoints.
      progress: one line per trial started and ended (failures are reported on stderr either way).
      callbacks: extra ``ray.tune.Callback`` objects (a resumed sweep keeps those it started with).

    Returns:
      A :class:`SweepResult` (also written: ``results.parquet``, ``results.md``, plots). A failed trial is a row
      with status ``failed`` and its error message. Raises :class:`SweepInterrupted` (a KeyboardInterrupt)
      after writing the table of what ended when Ctrl-C stopped the sweep, ValueError for a bad sweep file
      (before Ray starts) and ImportError naming the extra to install without Ray Tune or Optuna.
    """
    require_extra("ray.tune")
    spec = config if isinstance(config, SweepSpec) else load_sweep(config)
    if spec.searcher == "tpe":
        require_extra("optuna", "ray.tune.search.optuna")
    out = Path(out)
    prepare_folder(spec, out, resume)
    from tfmm.sweep import tuning

    if progress:
        print(_summary(spec), flush=True)
    t0 = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    try:
        tuning.run(spec, out, address=address, resume=resume, progress=progress, callbacks=callbacks)
    except KeyboardInterrupt as exc:  # a second Ctrl-C: Tune's own handler is gone
        interrupted = exc
    wall = time.perf_counter() - t0
    table = build_table(spec, out)
    write_report(table, spec, out, wall)
    result = SweepResult(out=out, table=table, metric=spec.metric, best=best_row(table, spec.metric),
                         wall_time_s=wall)
    unfinished = spec.trials - sum(result.count(s) for s in ("finished", "stopped", "failed"))
    if interrupted is not None or unfinished > 0:
        raise SweepInterrupted(
            f"sweep interrupted with {unfinished} of {spec.trials} trials unfinished; the results so far are in "
            f"{out / MARKDOWN}; resume with tfmm sweep --config {spec.path} --out {out} --resume "
            f"(tfmm.sweep(..., resume=True))", result)
    return result


__all__ = ["sweep", "load_sweep", "trial_specs", "SweepSpec", "SweepResult", "SweepInterrupted", "Parameter",
           "KINDS", "SEARCHERS", "TABLE", "MARKDOWN"]
