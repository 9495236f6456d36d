"""The results of a sweep: a table of trials (parquet and markdown) and two plots, from the sweep folder.

Read from files only (``OUT/trials.json`` and each ``OUT/trials/<id>/trial.json``), so a finished,
interrupted or resumed sweep is reported the same way, without Ray.

Status of a trial: ``finished`` (trained to the end), ``stopped`` (stopped early by the ASHA scheduler;
its validation is the last one reported), ``failed`` (its error message in ``error``), ``unfinished``
(the sweep was interrupted before it ended; ``--resume`` runs it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tfmm.sweep.spec import SweepSpec

if TYPE_CHECKING:
    import pandas as pd

STATUSES = ("finished", "stopped", "failed", "unfinished")
TABLE = "results.parquet"
MARKDOWN = "results.md"
PLOT_PARAMETERS = "validation_by_parameter.png"
PLOT_BEST = "best_so_far.png"


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def trial_status(record: dict[str, Any], tune_status: str | None) -> str:
    """One of :data:`STATUSES` from the trial's own record and Ray Tune's status of it."""
    own = record.get("status")
    if own in ("finished", "failed"):
        return own
    if tune_status == "ERROR":
        return "failed"
    if tune_status == "TERMINATED":
        return "stopped"
    return "unfinished"


def _cell(value: Any) -> Any:
    """Parameter values as table cells: lists as text (parquet columns keep one type)."""
    return str(value) if isinstance(value, (list, tuple, dict)) else value


def build_table(spec: SweepSpec, out: Path) -> pd.DataFrame:
    """One row per trial, in the order the trials first started (then those that never did): trial, status, the swept fields, validation and
    test ``metric``, steps trained, wall time (s), error, run folder (relative to ``out``), ended (unix s)."""
    import pandas as pd

    ledger = read_json(out / "trials.json") or []
    folders = sorted(p.name for p in (out / "trials").iterdir() if p.is_dir()) if (out / "trials").is_dir() else []
    by_id = {row["trial"]: row for row in ledger}
    records = {tid: read_json(out / "trials" / tid / "trial.json") or {} for tid in set(by_id) | set(folders)}
    order = {tid: i for i, tid in enumerate(list(by_id) + folders)}
    ids = sorted(records, key=lambda t: (records[t].get("started", math.inf), order[t]))
    names = [p.name for p in spec.parameters]
    rows = []
    for tid in ids:
        record = records[tid]
        entry = by_id.get(tid, {})
        status = trial_status(record, entry.get("tune_status"))
        params = record.get("params")
        if params is None:  # never started: decode what the searcher sampled
            config = entry.get("config", {})
            params = {p.name: p.decode(config[p.name]) if p.name in config else None for p in spec.parameters}
        value = record.get("validation") if status == "finished" else entry.get("validation")
        error = (record.get("error") or entry.get("error") or "") if status == "failed" else ""
        rows.append({
            "trial": tid, "status": status, **{n: _cell(params.get(n)) for n in names},
            f"validation_{spec.metric}": _number(value),
            f"test_{spec.metric}": _number(record.get("test") if status == "finished" else None),
            "steps": int(record.get("steps") or entry.get("step") or 0),
            "wall_time_s": _number(record.get("wall_time_s")),
            "error": error,
            "run_dir": f"trials/{tid}" if (out / "trials" / tid).is_dir() else "",
            "ended": _number(record.get("ended") if status != "unfinished" else None),
        })
    columns = ["trial", "status", *names, f"validation_{spec.metric}", f"test_{spec.metric}", "steps",
               "wall_time_s", "error", "run_dir", "ended"]
    table = pd.DataFrame(rows, columns=columns)
    numbers = [f"validation_{spec.metric}", f"test_{spec.metric}", "wall_time_s", "ended"]
    table[numbers] = table[numbers].astype(float)  # also when there are no rows yet
    table["steps"] = table["steps"].astype(int)
    for n in names:  # one type per column (a choice of numbers and text becomes text)
        kinds = {type(v) for v in table[n] if v is not None}
        if len(kinds) > 1 and not kinds <= {int, float}:
            table[n] = table[n].map(lambda v: None if v is None else str(v))
    return table


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def best_row(table: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    """The finished trial with the highest validation ``metric`` (None when none finished)."""
    done = table[(table["status"] == "finished") & np.isfinite(table[f"validation_{metric}"])]
    if done.empty:
        return None
    return done.loc[done[f"validation_{metric}"].idxmax()].to_dict()


def _md(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.5g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(table: pd.DataFrame, spec: SweepSpec, name: str, wall_time_s: float | None) -> str:
    """The table as markdown, under a header naming the sweep, the searcher and the best trial."""
    metric = spec.metric
    counts = ", ".join(f"{int((table['status'] == s).sum())} {s}" for s in STATUSES if (table["status"] == s).any())
    best = best_row(table, metric)
    lines = [f"# sweep {name}", "",
             f"- base run: `{spec.base.path.name}`; searcher {spec.searcher}, scheduler {spec.scheduler}, "
             f"{spec.trials} trials ({counts or 'none yet'})",
             f"- metric: exact-mode validation {metric} (maximised); test {metric} on the held-out test period"]
    if best is not None:
        params = ", ".join(f"{p.name}={_md(best[p.name])}" for p in spec.parameters)
        lines.append(f"- best: trial {best['trial']} ({params}): validation {_md(best[f'validation_{metric}'])}, "
                     f"test {_md(best[f'test_{metric}'])}; run folder `{best['run_dir']}`")
    if wall_time_s is not None:
        lines.append(f"- wall time of this run of the sweep: {wall_time_s:.1f} s")
    shown = [c for c in table.columns if c != "ended"]
    lines += ["", "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_md(row[c]) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def _axis_values(values: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """Numeric x positions of parameter values; categorical values get 0, 1, ... and their labels."""
    import pandas as pd

    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and not values.map(lambda v: isinstance(v, bool)).any():
        return numeric.to_numpy(dtype=np.float64), None
    labels = sorted({str(v) for v in values})
    return np.array([labels.index(str(v)) for v in values], dtype=np.float64), labels


def plot_by_parameter(table: pd.DataFrame, spec: SweepSpec, path: Path) -> None:
    """Validation objective against each swept field (finished: filled; stopped early: hollow; best: star)."""
    from matplotlib.ticker import NullFormatter

    from tfmm.plots import _pyplot

    plt = _pyplot()
    metric = f"validation_{spec.metric}"
    shown = table[table["status"].isin(["finished", "stopped"]) & np.isfinite(table[metric])]
    n = len(spec.parameters)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    best = best_row(table, spec.metric)
    for ax, p in zip(axes.flat, spec.parameters):
        if not shown.empty:
            x, labels = _axis_values(shown[p.name])
            done = (shown["status"] == "finished").to_numpy()
            y = shown[metric].to_numpy()
            ax.scatter(x[done], y[done], s=22, color="C0", label="finished")
            if (~done).any():
                ax.scatter(x[~done], y[~done], s=22, facecolors="none", edgecolors="C0", label="stopped early")
            if best is not None:
                is_best = (shown["trial"] == best["trial"]).to_numpy()
                ax.scatter(x[is_best], y[is_best], marker="*", s=160, color="C3", zorder=3, label="best")
            if labels is not None:
                ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 3 else 0, fontsize=8)
            elif p.kind == "log-uniform" or (p.kind in ("grid", "choice") and np.all(x > 0) and x.max() / x.min() > 50):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel=p.name, ylabel=f"validation {spec.metric}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    failed = int((table["status"] == "failed").sum())
    title = f"validation {spec.metric} by parameter ({len(shown)} trials" + (f"; {failed} failed, not shown)" if failed else ")")
    fig.suptitle(title, fontsize=10)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_best_so_far(table: pd.DataFrame, spec: SweepSpec, path: Path) -> None:
    """Each trial's validation objective in the order trials ended, and the best finished one so far;
    failed trials as red crosses on the axis."""
    from tfmm.plots import _pyplot

    plt = _pyplot()
    metric = f"validation_{spec.metric}"
    ended = table[table["status"] != "unfinished"].sort_values("ended", kind="stable")
    x = np.arange(1, len(ended) + 1)
    y = ended[metric].to_numpy(dtype=np.float64)
    finished = (ended["status"] == "finished").to_numpy() & np.isfinite(y)
    best = np.maximum.accumulate(np.where(finished, y, -np.inf)) if len(y) else y
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.scatter(x[finished], y[finished], s=20, color="C0", label="trial (finished)")
    stopped = (ended["status"] == "stopped").to_numpy() & np.isfinite(y)
    if stopped.any():
        ax.scatter(x[stopped], y[stopped], s=20, facecolors="none", edgecolors="C0", label="trial (stopped early)")
    ok = np.isfinite(best)
    if ok.any():
        ax.step(x[ok], best[ok], where="post", color="C3", lw=1.6, label="best so far")
    failed = (ended["status"] == "failed").to_numpy()
    if failed.any():
        ax.scatter(x[failed], np.full(failed.sum(), 0.02), marker="x", color="red", transform=ax.get_xaxis_transform(),
                   label="failed", clip_on=False)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="trials ended", ylabel=f"validation {spec.metric}",
           title=f"best validation {spec.metric} so far ({spec.searcher} search)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(table: pd.DataFrame, spec: SweepSpec, out: Path, wall_time_s: float | None) -> None:
    """results.parquet, results.md and the two plots into ``out``."""
    table.to_parquet(out / TABLE, index=False)
    (out / MARKDOWN).write_text(markdown(table, spec, out.name, wall_time_s))
    plot_by_parameter(table, spec, out / PLOT_PARAMETERS)
    plot_best_so_far(table, spec, out / PLOT_BEST)
