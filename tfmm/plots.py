"""PNG plots of a training run: training curves, weights over time, value vs HODL and balancer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def running_mean(values: Any, window: int) -> np.ndarray:
    """Trailing running mean over ``window`` points (fewer at the start); NaN points are skipped."""
    x = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(x)
    total = np.cumsum(np.where(ok, x, 0.0))
    count = np.cumsum(ok)
    lag_total = np.concatenate([np.zeros(window), total[:-window]]) if x.size > window else np.zeros_like(total)
    lag_count = np.concatenate([np.zeros(window), count[:-window]]) if x.size > window else np.zeros_like(count)
    n = count - lag_count
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total - lag_total) / np.maximum(n, 1), np.nan)


def plot_training_curves(history: Any, evaluations: Any, path: Path) -> None:
    """Left: the per-step batch objective (mean over sets, thin) with its running mean, and the probe objective
    (fixed bouts, every evaluation) per set and its mean. Right: validation objective per evaluation."""
    plt = _pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    steps = np.asarray(history["step"])
    window = max(5, len(steps) // 20)
    ax0.plot(steps, history["objective"], lw=0.6, alpha=0.4, color="0.5", label="batch objective (mean over sets)")
    ax0.plot(steps, running_mean(history["objective"], window), lw=1.5, color="k",
             label=f"batch objective, running mean of {window}")
    probe_cols = [c for c in evaluations.columns if c.startswith("probe_set")]
    for col in probe_cols:
        ax0.plot(evaluations["step"], evaluations[col], lw=0.7, ls="--", alpha=0.6)
    if "probe_mean" in evaluations.columns:
        ax0.plot(evaluations["step"], evaluations["probe_mean"], marker="o", ms=3, lw=1.5, color="C3",
                 label="probe objective (fixed bouts), mean over sets")
    ax0.set(xlabel="step", ylabel="training objective (training mode)", title="training")
    ax0.legend(fontsize=7)
    set_cols = [c for c in evaluations.columns if c.startswith("validation_set")]
    for col in set_cols:
        ax1.plot(evaluations["step"], evaluations[col], marker="o", ms=3, lw=0.8, label=col.replace("validation_", ""))
    ax1.set(xlabel="step", ylabel="validation objective (exact mode)", title="validation")
    if len(set_cols) <= 8:
        ax1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pool_vs_baselines(sim: Any, baselines: dict[str, Any], path_weights: Path, path_value: Path) -> None:
    """Weights over time, and pool value against baseline simulations (e.g. HODL, 50/50 balancer)."""
    plt = _pyplot()
    import pandas as pd

    s = sim.to_numpy()
    t = pd.to_datetime(s.timestamps, unit="s", utc=True)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for i, a in enumerate(s.assets):
        ax.plot(t, s.weights[:, i], lw=1, label=a)
    ax.set(ylabel="weight", title="pool weights (test period)")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path_weights, dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.plot(t, s.values / s.values[0], lw=1.2, label="trained pool")
    for name, b in baselines.items():
        bv = np.asarray(b.to_numpy().values)
        ax.plot(t, bv / bv[0], lw=1, label=name)
    ax.set(ylabel="value / initial value", title="pool value vs baselines (test period)")
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path_value, dpi=110)
    plt.close(fig)


def baseline_simulations(prices: Any, pool: Any, start: int, length: int, n_assets: int, dtype: str = "float64"):
    """HODL and an equal-weight balancer pool (same fees) on the same bout, exact mode."""
    from tfmm.api import simulate
    from tfmm.specs import Strategy

    w = np.full(n_assets, 1.0 / n_assets)
    label = "50/50 balancer" if n_assets == 2 else "equal-weight balancer"
    return {
        "HODL": simulate(prices, Strategy("hodl", {}, w), pool, start=start, length=length, dtype=dtype),
        label: simulate(prices, Strategy("balancer", {}, w), pool, start=start, length=length, dtype=dtype),
    }


def plot_run(result: Any, prices: Any, pool: Any, run_dir: Path) -> None:
    """All plots of a training run into ``run_dir``."""
    from tfmm.api import simulate

    plot_training_curves(result.history, result.evaluations, run_dir / "training.png")
    start, stop = result.periods.test if result.periods.test[1] > result.periods.test[0] else result.periods.validation
    length = stop - start + 1
    sim = simulate(prices, result.strategy, pool, start=start, length=length)
    baselines = baseline_simulations(prices, pool, start, length, result.strategy.n_assets)
    plot_pool_vs_baselines(sim, baselines, run_dir / "weights.png", run_dir / "value.png")
