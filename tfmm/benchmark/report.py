"""Writing a benchmark's results: JSON (every field), a markdown report and PNG plots (matplotlib, Agg).

Files, for a stem such as ``cpu-amd-epyc-quick`` or ``nvidia-h200``: ``<stem>.json``, ``<stem>.md``,
``<stem>-batch.png`` (throughput vs batch) and ``<stem>-bout.png`` (throughput vs bout length).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

from tfmm.benchmark.inputs import DAY, bout_label as bout

CALL_LABELS = {"forward": "forward", "gradient": "forward + gradient"}


# ------------------------------------------------------------------------------------------ formatting

def rate(value: float | None) -> str:
    """Million pool-minutes per second, three significant digits ("-" for none)."""
    return "-" if value is None else f"{value / 1e6:.3g}"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def mebibytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f}"


def _row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: list[Sequence[Any]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


# ---------------------------------------------------------------------------------------------- tables

def summary_tables(measurements: list[dict[str, Any]]) -> list[str]:
    """One table per (assets, fee): rows (bout, batch, dtype), a column per backend path, cells
    "forward / forward+gradient" in million pool-minutes per second."""
    paths = list(dict.fromkeys(_path(m) for m in measurements))
    lines: list[str] = []
    groups = list(dict.fromkeys((m["n_assets"], m["fee"]) for m in measurements))
    for n, fee in sorted(groups):
        group = [m for m in measurements if (m["n_assets"], m["fee"]) == (n, fee)]
        used = [p for p in paths if any(_path(m) == p for m in group)]
        shapes = sorted({(m["minutes"], m["sets"], m["bouts"], m["dtype"]) for m in group},
                        key=lambda s: (s[0], s[1] * s[2], s[3] != "float64"))
        rows = []
        for minutes, sets, bouts, dtype in shapes:
            cells = []
            for p in used:
                hits = {m["call"]: m for m in group if _path(m) == p and (m["minutes"], m["sets"], m["bouts"],
                                                                          m["dtype"]) == (minutes, sets, bouts, dtype)}
                cells.append(" / ".join(_cell(hits.get(call)) for call in ("forward", "gradient")
                                        if call in hits or call == "forward"))
            rows.append([bout(minutes), f"{sets * bouts} ({sets}x{bouts})", dtype, *cells])
        lines += [f"### {n} assets, fee {fee * 100:g}%", "",
                  *_table(["bout", "batch (sets x bouts)", "dtype", *used], rows), ""]
    return lines


def _path(m: dict[str, Any]) -> str:
    return m["backend"] if m["fee_path"] is None else f"{m['backend']} {m['fee_path']}"


def _cell(m: dict[str, Any] | None) -> str:
    if m is None:
        return "-"
    if m["status"] == "ok":
        return rate(m["pool_minutes_per_s"])
    return "oom" if "out of memory" in m["status"] else ("skip" if m["status"].startswith("skipped") else "error")


def train_table(steps: list[dict[str, Any]]) -> list[str]:
    rows = []
    for t in steps:
        shape = f"{t['n_sets']} x {t['batch_size']} x {bout(round(t['bout_days'] * DAY))}"
        if t["status"] != "ok":
            rows.append([t["backend"], shape, seconds(t["first_call_s"]), "-", "-", "-", t["status"]])
            continue
        rows.append([t["backend"], shape, seconds(t["first_call_s"]), seconds(t["call_s"]), seconds(t["step_s"]),
                     rate(t["pool_minutes_per_s"]), "ok"])
    return _table(["backend", "sets x bouts x bout", "first run (1 step)", "warm run (1 step)", "one more step",
                   "M pool-min/s per step", "status"], rows)


def detail_table(measurements: list[dict[str, Any]]) -> list[str]:
    rows = [[_path(m), m["n_assets"], f"{m['fee'] * 100:g}%", bout(m["minutes"]), f"{m['sets']}x{m['bouts']}",
             m["dtype"], m["call"], rate(m["pool_minutes_per_s"]), seconds(m["median_s"]), seconds(m["first_call_s"]),
             mebibytes(m["host_peak_rss_delta_bytes"]), mebibytes(m["device_peak_bytes"]), m["status"]]
            for m in measurements]
    return _table(["path", "n", "fee", "bout", "sets x bouts", "dtype", "call", "M pool-min/s", "median",
                   "first call", "host peak delta MiB", "device peak MiB", "status"], rows)


def markdown(record: dict[str, Any]) -> str:
    """The report: where and how, the summary tables, the training steps, every measurement."""
    env, settings = record["environment"], record["settings"]
    libs = env["libraries"]
    git = env["git"]
    commit = (git["commit"] or "unknown")[:12] + (" (modified)" if git.get("dirty") else "")
    versions = ", ".join(f"{k} {libs[k]}" for k in ("tfmm", "python", "numpy", "numba", "jax", "torch") if k in libs)
    load = lambda key: "/".join(f"{x:.1f}" for x in env.get(key) or []) or "-"  # noqa: E731
    driver = f", driver {env['driver']}" if env.get("driver") else ""
    measurements = record["measurements"]
    counts = Counter("ok" if m["status"] == "ok" else m["status"].split(":")[0] for m in measurements)
    lines = [
        f"# tfmm bench: {env['device_model']} ({env['device']}{driver})", "",
        f"{env['date']}, commit {commit}; {versions}. Host: {env['cpu_model']}, {env['cpu_count']} CPUs, load "
        f"average {load('load_average_start')} at the start, {load('load_average_end')} at the end. "
        f"Grid: {settings['grid_name']}, {record['wall_s']:.0f} s; "
        f"{counts.get('ok', 0)} cases measured, {counts.get('skipped', 0)} skipped, {counts.get('error', 0)} failed.",
        "",
        f"Million pool-minutes per second (sets x bouts x minutes / median of {settings['repeats']} warm calls; "
        f"first calls, with compilation, in the last table). Cells: forward (`tfmm.simulate`, exact) / forward + "
        f"gradient (`tfmm.value_and_grad` of {settings['objective']}, smooth). Momentum, daily weight updates; "
        f"batches are parameter sets x bout starts. oom / skip / error: see the status column below.", "",
        "## Throughput", "", *summary_tables(measurements),
    ]
    if record["train_steps"]:
        lines += ["## One training step (`tfmm.train`, 2 assets, fee 0.3%, float64, default backend options)", "",
                  *train_table(record["train_steps"]), ""]
    lines += ["## Every case", "", *detail_table(measurements), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- plots

def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _reference_group(ok: list[dict[str, Any]]) -> tuple[int, float] | None:
    """(assets, fee) of the plots: the fewest assets, the highest fee."""
    if not ok:
        return None
    n = min(m["n_assets"] for m in ok)
    return n, max(m["fee"] for m in ok if m["n_assets"] == n)


def _most_common(values: list[Any], prefer_high: bool) -> Any:
    counts = Counter(values)
    best = max(counts.values())
    tied = [v for v, c in counts.items() if c == best]
    return max(tied) if prefer_high else min(tied)


def plot_scaling(measurements: list[dict[str, Any]], x_key: str, path: Path) -> Path:
    """Throughput against ``x_key`` ("batch" or "bout"), one panel per call, one colour per backend path
    (solid float64, dashed float32); the other shape fixed (bout: the most measured one, longest on ties;
    batch: the smallest)."""
    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ok, title = _plotted(measurements, x_key)
    colours = {p: f"C{i % 10}" for i, p in enumerate(sorted({_path(m) for m in ok}))}
    xs_all = sorted({_x(m, x_key) for m in ok})
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    for ax, call in zip(axes[0], ("forward", "gradient")):
        series: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for m in (m for m in ok if m["call"] == call):
            series.setdefault((_path(m), m["dtype"]), []).append((_x(m, x_key), m["pool_minutes_per_s"] / 1e6))
        for (label, dtype), points in sorted(series.items()):
            xs, ys = zip(*sorted(points))
            ax.plot(xs, ys, marker="o", ms=4, lw=1.2, color=colours[label], ls="-" if dtype == "float64" else "--",
                    label=f"{label} {dtype}")
        ax.set_xscale("log")
        if series:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xticks(xs_all)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        low, high = ax.get_ylim()
        ax.yaxis.set_minor_formatter(plain if high < 10 * low else NullFormatter())  # minor labels within a decade
        ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set(xlabel="batch (parameter sets x bout starts)" if x_key == "batch" else "bout length (days)",
               ylabel="million pool-minutes per second", title=CALL_LABELS[call])
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _x(m: dict[str, Any], x_key: str) -> float:
    return m["sets"] * m["bouts"] if x_key == "batch" else m["minutes"] / DAY


def _plotted(measurements: list[dict[str, Any]], x_key: str) -> tuple[list[dict[str, Any]], str]:
    """The measured cases a plot shows, and its title: the fewest assets, the highest fee, and the other
    shape fixed."""
    ok = [m for m in measurements if m["status"] == "ok"]
    group = _reference_group(ok)
    if group is None:
        return [], "no measurements"
    ok = [m for m in ok if (m["n_assets"], m["fee"]) == group]
    head = f"{group[0]} assets, fee {group[1] * 100:g}%"
    if x_key == "batch":
        fixed = _most_common([m["minutes"] for m in ok], prefer_high=True)
        return [m for m in ok if m["minutes"] == fixed], f"{head}, bouts of {bout(fixed)}"
    fixed = min(m["sets"] * m["bouts"] for m in ok)
    return [m for m in ok if m["sets"] * m["bouts"] == fixed], f"{head}, batch {fixed}"


# ---------------------------------------------------------------------------------------------- files

def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def write_results(result: Any, out: Path, stem: str, final: bool = True) -> dict[str, str]:
    """Write ``<stem>.json`` (always) and, when ``final``, ``<stem>.md`` and the two PNGs into ``out``;
    returns {"json": path, "markdown": path, "batch_png": path, "bout_png": path} of what exists."""
    out.mkdir(parents=True, exist_ok=True)
    record = _json_safe(result.to_dict())
    files = {"json": out / f"{stem}.json"}
    _write_text(files["json"], json.dumps(record, indent=1) + "\n")
    if final:
        files["markdown"] = out / f"{stem}.md"
        _write_text(files["markdown"], markdown(record))
        files["batch_png"] = plot_scaling(record["measurements"], "batch", out / f"{stem}-batch.png")
        files["bout_png"] = plot_scaling(record["measurements"], "bout", out / f"{stem}-bout.png")
    return {k: str(v) for k, v in files.items()}


__all__ = ["markdown", "summary_tables", "train_table", "detail_table", "plot_scaling", "write_results"]
