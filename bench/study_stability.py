"""The stability study: the same strategy trained from N initialisations under several configurations.

Usage: python bench/study_stability.py [--quick] [--out docs/stability] [--n-seeds 32] [--cases ...]
(or ``tfmm study stability``). Writes ``results.json``, ``table.md`` and one ``curves_<case>.png`` per case.

Configurations (``CONFIGS``):

- **naive**: how earlier simulators trained. Exact mode, the learning rate applied twice (``adam(schedule)``
  followed by ``scale_by_schedule(schedule)``), no clipping, bout starts at any minute of the training period,
  and a non-finite objective or gradient answered by re-initialising that run's parameters. None of this is a
  library option: the optimizer, the re-initialisation and the unaligned starts are built here.
- **stabilised**: the library defaults (``tfmm.TrainConfig()``), only the study sizes changed.
- **ablations**: the defaults minus one fix: ``exact`` (exact mode instead of smooth), ``no_clip``,
  ``unaligned`` (starts at any minute, built here), ``straight_through`` (instead of softmax selection),
  ``float32``; and ``plateau`` (the defaults *plus* plateau reduction, which is off by default).
- **returns_over_hodl**: the defaults trained on ``returns_over_hodl`` instead of ``daily_log_sharpe``
  (a measurement for the HODL question in docs/stability.md).

A run is one parameter set: the N runs of a configuration train as N parameter sets of one ``tfmm.train``
call (independent initialisations, independent optimizer states and NaN guards, the same bout draws), which
compiles once. Every run logs its probe objective (training mode, fixed probe bouts) and its exact-mode
validation objective every ``eval_every`` steps; the test objective is exact mode on the final parameters.
All configurations use ``nan_policy="skip"`` so that one run's NaN does not end the others; a run counts as
finite when none of its steps had a non-finite objective or gradient and its final validation is finite.
The per-step gate/selection boundary statistics (``_boundary_row``, a per-set exact pass) are switched off
here: they are logging only and would cost more than the training.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

DAY = 1440
ROOT = Path(__file__).resolve().parent.parent
DATA_2021 = ROOT.parent / "shared" / "data" / "1m_2021-04-02_to_2021-05-14"

# every configuration: (TrainConfig overrides, study-only flags)
CONFIGS: dict[str, tuple[dict[str, Any], dict[str, bool]]] = {
    "naive": ({"mode": "exact", "clip_norm": None}, {"naive": True, "unaligned": True}),
    "stabilised": ({}, {}),
    "exact": ({"mode": "exact"}, {}),
    "no_clip": ({"clip_norm": None}, {}),
    "unaligned": ({}, {"unaligned": True}),
    "straight_through": ({"smoothing": "straight_through"}, {}),
    "float32": ({"dtype": "float32"}, {}),
    "plateau": ({"plateau_patience": 10}, {}),
    "returns_over_hodl": ({"objective": "returns_over_hodl"}, {}),
}

ALL_ABLATIONS = ["naive", "stabilised", "exact", "no_clip", "unaligned", "straight_through", "float32", "plateau"]
# case -> (data set, strategy, configurations)
FULL_CASES: dict[str, list[str]] = {
    "btc_eth_momentum": ALL_ABLATIONS + ["returns_over_hodl"],
    "btc_eth_mean_reversion_channel": ["naive", "stabilised", "exact", "no_clip"],
    "four_asset_momentum": ["naive", "stabilised"],
}
QUICK_CASES: dict[str, list[str]] = {"btc_eth_momentum": ["naive", "stabilised"]}

FULL_SIZES = {"n_seeds": 32, "n_iterations": 60, "bout_days": 4, "batch_size": 4, "probe_size": 8, "eval_every": 10}
QUICK_SIZES = {"n_seeds": 8, "n_iterations": 20, "bout_days": 3, "batch_size": 2, "probe_size": 4, "eval_every": 5}

COLUMNS = ["case", "config", "runs", "finite", "within_10pct_of_best", "probe_improved", "probe_initial_median", "probe_median",
           "probe_iqr", "validation_initial_median", "validation_median", "validation_iqr", "test_median", "test_iqr",
           "test_returns_over_hodl_median", "validation_test_spearman", "steps_to_90pct_median", "wall_s"]


def derived(row: dict[str, Any]) -> dict[str, Any]:
    """Columns computed from a row's curves and per-run values: medians at step 0, and the rank correlation
    between the runs' final validation and test objectives (does validation pick what does well on test?)."""
    if not row.get("curves"):
        return {}
    probe = np.array(row["curves"]["probe"], dtype=float)
    val = np.array(row["curves"]["validation"], dtype=float)
    v = np.array(row["per_run"]["final_validation"], dtype=float)
    t = np.array(row["per_run"]["test"], dtype=float)
    ok = np.isfinite(v) & np.isfinite(t)
    rho = float("nan")
    if ok.sum() >= 3:
        rv, rt = np.argsort(np.argsort(v[ok])), np.argsort(np.argsort(t[ok]))
        rho = float(np.corrcoef(rv, rt)[0, 1])
    with np.errstate(invalid="ignore"):
        improved = float(np.mean(probe[:, -1] > probe[:, 0]))
    return {"probe_improved": improved, "probe_initial_median": _median(probe[:, 0]), "validation_initial_median": _median(val[:, 0]),
            "validation_test_spearman": rho}


# --- data and strategies ---------------------------------------------------------------------------------

def load_case(case: str) -> dict[str, Any]:
    """Prices, pool, initial strategy, burn-in and a note on the data of a case."""
    import tfmm

    pool = tfmm.Pool(fee=0.003, chunk_period=DAY, max_change=3e-4)
    note = ""
    if case.startswith("btc_eth"):
        prices = tfmm.example_prices()
        burn_in = 15 * DAY
        note = "bundled BTC/ETH minutes (no gaps)"
    else:
        from tfmm import data as tdata

        files = sorted(DATA_2021.glob("*.csv"))
        series = tdata.read_price_files([str(f) for f in files])
        missing = {}
        for name, s in series.items():
            ts, _ = tdata._series_arrays(name, s)
            missing[name] = int((ts[-1] - ts[0]) // 60 + 1 - ts.size)
        prices = tdata.align_prices(series, gaps="ffill")
        burn_in = 7 * DAY
        note = (f"{', '.join(prices.assets)} 1-minute closes 2021-04-02..2021-05-14, gaps forward-filled "
                f"(missing minutes per asset before alignment: {missing})")
    n = prices.n_assets
    if case.endswith("mean_reversion_channel"):
        strategy = tfmm.Strategy.from_memory_days("mean_reversion_channel", n_assets=n, memory_days=5.0,
                                                  k_per_day=5.0, chunk_period=DAY)
    else:
        strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=n, memory_days=5.0, k_per_day=5.0,
                                                  chunk_period=DAY)
    return {"prices": prices, "pool": pool, "strategy": strategy, "burn_in": burn_in, "note": note}


def train_config(config_name: str, sizes: dict[str, int], burn_in: int, seed: int):
    import tfmm

    overrides, _ = CONFIGS[config_name]
    overrides = dict(overrides)
    if "smoothing" in overrides:
        overrides["smoothing"] = tfmm.Smoothing(selection=overrides["smoothing"])
    return tfmm.TrainConfig(
        bout_length=sizes["bout_days"] * DAY, batch_size=sizes["batch_size"], n_sets=sizes["n_seeds"],
        n_iterations=sizes["n_iterations"], eval_every=sizes["eval_every"], probe_size=sizes["probe_size"],
        burn_in=burn_in, nan_policy="skip", seed=seed, checkpoint_every=10**6, **overrides)


# --- what the library does not offer: the naive trainer and unaligned starts --------------------------------

def make_naive_trainer(engine: Any, request: Any, config: Any, strategy: Any, init_noise: float, seed: int):
    """A trainer (the JaxTrainer interface) as earlier simulators trained: the rate applied twice, no clipping
    (``config.clip_norm`` is None), no NaN guard in the update, and a non-finite set re-initialised from a
    fresh random draw around the initial strategy (counted in ``.reinitialised``)."""
    import jax
    import jax.numpy as jnp
    import optax

    from tfmm.backends.jax.optim import JaxTrainer, learning_rate_schedule
    from tfmm.engine import bout_config

    trainer = JaxTrainer(engine, request, config)  # its step is jitted lazily: never traced here
    schedule = learning_rate_schedule(config)
    optimizer = optax.chain(optax.adam(schedule), optax.scale_by_schedule(schedule))  # the rate, twice
    per_set_fn = engine.objective_per_set(bout_config(request), config.objective)

    def objective(params, prices, chunk_prices, fee, gas, arb_fee, w_init, starts):
        per_set = per_set_fn(params, prices, chunk_prices, fee, gas, arb_fee, starts, w_init)
        return jnp.sum(per_set), per_set

    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def step(params, state, *inputs):
        (_, per_set), grads = value_and_grad(params, *inputs)
        ascent = jax.tree_util.tree_map(lambda g: -g, grads)
        updates, new_state = jax.vmap(optimizer.update)(ascent, state, params)
        finite = jnp.isfinite(per_set)
        for g in jax.tree_util.tree_leaves(grads):
            finite = finite & jnp.all(jnp.isfinite(g), axis=tuple(range(1, g.ndim)))
        group_norms = {k: jnp.sqrt(jnp.sum(g * g, axis=tuple(range(1, g.ndim)))) for k, g in grads.items()}
        global_norm = jnp.sqrt(sum(n * n for n in group_norms.values()))
        return optax.apply_updates(params, updates), new_state, {
            "objective": per_set, "finite": finite, "grad_norm": global_norm, "group_norms": group_norms}

    jitted = jax.jit(step)
    init = jax.jit(jax.vmap(optimizer.init))
    base = {k: np.asarray(v, dtype=np.float64) for k, v in strategy.params.items()}
    rng = np.random.default_rng([seed, 7_000_001])
    trainer.reinitialised = np.zeros(config.n_sets, dtype=np.int64)

    def naive_step(params, state, inputs):
        new_params, new_state, stats = jitted(params, state, *inputs)
        finite = np.asarray(stats["finite"])
        if not finite.all():  # re-initialise: fresh parameters, fresh optimizer state, go on
            bad = ~finite
            trainer.reinitialised += bad
            p = {k: np.array(v) for k, v in jax.tree_util.tree_map(np.asarray, new_params).items()}
            for k in p:
                draw = base[k][None] + rng.normal(0.0, init_noise, size=(int(bad.sum()),) + base[k].shape)
                p[k][bad] = draw
            new_params = trainer.from_numpy(p, config.dtype)
            fresh = init(new_params)
            mask = jnp.asarray(bad)
            new_state = jax.tree_util.tree_map(
                lambda f, s: jnp.where(mask.reshape((-1,) + (1,) * (jnp.ndim(s) - 1)), f, s) if jnp.ndim(s) else s,
                fresh, new_state)
            stats = dict(stats)
            stats["finite"] = jnp.ones_like(stats["finite"])  # nothing is reported: training just goes on
        return new_params, new_state, stats

    trainer.optimizer = optimizer
    trainer.init = lambda params: init(params)
    trainer.step = naive_step
    trainer.objective = lambda params, state, inputs: np.asarray(jitted(params, state, *inputs)[2]["objective"])
    trainer.learning_rate = lambda step, state: np.full(1, float(schedule(step)) ** 2)
    return trainer


def every_minute_starts(periods: Any, chunk_period: int, bout_length: int) -> np.ndarray:
    """Unaligned candidates: every minute s with the bout [s, s + B - 1) inside the training period."""
    lo, hi = periods.train
    return np.arange(lo, hi - (bout_length - 1) + 1, dtype=np.int64)


@contextlib.contextmanager
def study_patches(flags: dict[str, bool], strategy: Any, init_noise: float, seed: int):
    """Installs, for one training call, what the study builds itself (see the module docstring)."""
    import tfmm
    from tfmm import training

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(training, "_boundary_row", lambda *a, **k: {}))
        if flags.get("unaligned"):
            stack.enter_context(mock.patch.object(training, "candidate_starts", every_minute_starts))
        if flags.get("naive"):
            bk = tfmm.get_backend()
            holder: dict[str, Any] = {}

            def make_trainer(request, config):
                holder["trainer"] = make_naive_trainer(bk.engine, request, config, strategy, init_noise, seed)
                return holder["trainer"]

            stack.enter_context(mock.patch.object(bk, "make_trainer", make_trainer))
            yield holder
        else:
            yield {}


# --- one configuration ------------------------------------------------------------------------------------

def _iqr(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.percentile(x, 75) - np.percentile(x, 25)) if x.size else float("nan")


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def steps_to_90pct(steps: np.ndarray, probe: np.ndarray) -> float:
    """First logged step where the probe has made 90% of its net gain from step 0 to the end (NaN when the
    run did not gain)."""
    if probe.size < 2 or not np.isfinite(probe[[0, -1]]).all() or probe[-1] <= probe[0]:
        return float("nan")
    target = probe[0] + 0.9 * (probe[-1] - probe[0])
    hit = np.flatnonzero(np.nan_to_num(probe, nan=-np.inf) >= target)
    return float(steps[hit[0]])


def test_objectives(prices, strategy, pool, params: dict[str, np.ndarray], period, objective: str, dtype: str):
    """Exact-mode objective and returns_over_hodl of every set on ``period`` (NaN where non-finite)."""
    import tfmm
    from tfmm.api import NonFiniteSimulationError

    start, stop = period
    n = next(iter(params.values())).shape[0]

    def run(idx):
        sub = strategy.with_params({k: np.asarray(v)[idx] for k, v in params.items()})
        m = tfmm.metrics(tfmm.simulate(prices, sub, pool, start=start, length=stop - start + 1, mode="exact",
                                       dtype=dtype))
        return np.asarray(m[objective], float).reshape(-1), np.asarray(m["returns_over_hodl"], float).reshape(-1)

    try:
        return run(list(range(n)))
    except (NonFiniteSimulationError, ValueError, FloatingPointError):
        obj, roh = np.full(n, np.nan), np.full(n, np.nan)
        for i in range(n):
            try:
                a, b = run([i])
                obj[i], roh[i] = a[0], b[0]
            except (NonFiniteSimulationError, ValueError, FloatingPointError):
                pass
        return obj, roh


def run_config(case: str, data: dict[str, Any], config_name: str, sizes: dict[str, int], seed: int = 0,
               init_noise: float = 0.5) -> dict[str, Any]:
    import tfmm

    prices, pool, strategy = data["prices"], data["pool"], data["strategy"]
    cfg = train_config(config_name, sizes, data["burn_in"], seed)
    flags = CONFIGS[config_name][1]
    n = cfg.n_sets
    t0 = time.perf_counter()
    error = None
    with study_patches(flags, strategy, init_noise, seed) as holder, tfmm.use("jax"):
        try:
            result = tfmm.train(prices, strategy, pool, cfg, progress=False, init_noise=init_noise)
        except Exception as exc:  # noqa: BLE001 - a configuration that fails is a result
            result, error = None, f"{type(exc).__name__}: {exc}"
    out: dict[str, Any] = {"case": case, "config": config_name, "runs": n, "error": error,
                           "train_config": cfg.to_dict(), "flags": flags}
    if result is None:
        out["wall_s"] = time.perf_counter() - t0
        return out
    hist, ev = result.history, result.evaluations
    steps = ev["step"].to_numpy()
    probe = np.stack([ev[f"probe_set{i}"].to_numpy(float) for i in range(n)])
    val = np.stack([ev[f"validation_set{i}"].to_numpy(float) for i in range(n)])
    val[~np.isfinite(val)] = np.nan
    step_ok = np.stack([np.isfinite(hist[f"objective_set{i}"].to_numpy(float))
                        & np.isfinite(hist[f"grad_norm_set{i}"].to_numpy(float)) for i in range(n)]).all(axis=1)
    reinit = holder.get("trainer").reinitialised if holder.get("trainer") is not None else np.zeros(n, int)
    final_val = val[:, -1]
    finite = step_ok & (reinit == 0) & np.isfinite(final_val)
    test_obj, test_roh = test_objectives(prices, strategy, pool, result.extras["final_params"], result.periods.test,
                                         cfg.objective, "float64")
    best = np.nanmax(final_val) if np.isfinite(final_val).any() else np.nan
    within = np.isfinite(final_val) & (final_val >= best - 0.1 * abs(best))
    to90 = np.array([steps_to_90pct(steps, probe[i]) for i in range(n)])
    out.update({
        "finite": float(finite.mean()), "within_10pct_of_best": float(within.mean()),
        "probe_median": _median(probe[:, -1]), "probe_iqr": _iqr(probe[:, -1]),
        "validation_median": _median(final_val), "validation_iqr": _iqr(final_val),
        "test_median": _median(test_obj), "test_iqr": _iqr(test_obj),
        "test_returns_over_hodl_median": _median(test_roh),
        "steps_to_90pct_median": _median(to90), "wall_s": time.perf_counter() - t0,
        "objective": cfg.objective, "reinitialised": reinit.tolist(), "skipped_steps": int(hist["skipped_sets"].sum()),
        "curves": {"steps": steps.tolist(), "probe": probe.tolist(), "validation": val.tolist()},
        "per_run": {"final_validation": final_val.tolist(), "test": test_obj.tolist(),
                    "test_returns_over_hodl": test_roh.tolist(), "steps_to_90pct": to90.tolist(),
                    "finite": finite.tolist()},
        "periods": dataclasses.asdict(result.periods),
    })
    return out


def baselines(data: dict[str, Any], sizes: dict[str, int], objective: str = "daily_log_sharpe") -> dict[str, Any]:
    """Exact-mode test objective of the initial strategy, HODL and the equal-weight balancer."""
    import tfmm
    from tfmm.plots import baseline_simulations
    from tfmm.training import make_periods

    prices, pool, strategy = data["prices"], data["pool"], data["strategy"]
    cfg = train_config("stabilised", sizes, data["burn_in"], 0)
    start, stop = make_periods(prices.n_rows, strategy, pool, cfg).test
    length = stop - start + 1
    with tfmm.use("jax"):
        sims = {"initial strategy": tfmm.simulate(prices, strategy, pool, start=start, length=length)}
        sims.update(baseline_simulations(prices, pool, start, length, prices.n_assets))
        out = {}
        for name, sim in sims.items():
            m = tfmm.metrics(sim)
            out[name] = {"daily_log_sharpe": m["daily_log_sharpe"], "returns_over_hodl": m["returns_over_hodl"],
                         "returns": m["returns"]}
    return out


# --- outputs ----------------------------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = ("| case | config | runs | finite | within 10% of best | probe improved | probe: start -> final (IQR) "
            "| validation: start -> final (IQR) | test (IQR) | test returns over HODL | val/test rank corr. "
            "| steps to 90% | wall s |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        r = {**r, **derived(r)}
        if r.get("error"):
            lines.append(f"| {r['case']} | {r['config']} | {r['runs']} | failed: {r['error'][:80]} |||||||||")
            continue
        lines.append(
            f"| {r['case']} | {r['config']} | {r['runs']} | {r['finite']:.2f} | {r['within_10pct_of_best']:.2f} "
            f"| {r['probe_improved']:.2f} | {_fmt(r['probe_initial_median'])} -> {_fmt(r['probe_median'])} ({_fmt(r['probe_iqr'])}) "
            f"| {_fmt(r['validation_initial_median'])} -> {_fmt(r['validation_median'])} ({_fmt(r['validation_iqr'])}) "
            f"| {_fmt(r['test_median'])} ({_fmt(r['test_iqr'])}) | {_fmt(r['test_returns_over_hodl_median'])} "
            f"| {_fmt(r['validation_test_spearman'], 2)} | {_fmt(r['steps_to_90pct_median'])} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def table_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame([{c: {**r, **derived(r)}.get(c) for c in COLUMNS} for r in rows], columns=COLUMNS)


def plot_curves(case: str, rows: list[dict[str, Any]], path: Path) -> None:
    from tfmm.plots import _pyplot

    plt = _pyplot()
    rows = [r for r in rows if r.get("curves")]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.2 * len(rows) + 0.6), squeeze=False, sharex=True)
    for (ax0, ax1), r in zip(axes, rows):
        c = r["curves"]
        steps = np.asarray(c["steps"])
        for y in np.asarray(c["probe"], float):
            ax0.plot(steps, y, lw=0.6, alpha=0.5)
        for y in np.asarray(c["validation"], float):
            ax1.plot(steps, y, lw=0.6, alpha=0.5)
        ax0.set_ylabel(r["config"], fontsize=9)
        ax0.set_title(f"probe ({r['objective']}, training mode)", fontsize=8)
        ax1.set_title(f"validation ({r['objective']}, exact mode)", fontsize=8)
    axes[-1][0].set_xlabel("step")
    axes[-1][1].set_xlabel("step")
    fig.suptitle(f"{case}: every run (one line per initialisation)")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_size_inches()[1]))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_study(out: str | Path, quick: bool = False, n_seeds: int | None = None, cases: list[str] | None = None,
              sizes: dict[str, int] | None = None, configs: list[str] | None = None, log=print) -> dict[str, Any]:
    """Run the study; write results.json, table.md, table.csv and curves PNGs to ``out``; return the results."""
    import jax

    jax.config.update("jax_enable_x64", True)
    plan = dict(QUICK_CASES if quick else FULL_CASES)
    if cases:
        unknown = [c for c in cases if c not in FULL_CASES]
        if unknown:
            raise ValueError(f"unknown case(s) {unknown}; known: {', '.join(FULL_CASES)}")
        plan = {c: plan.get(c, FULL_CASES[c]) for c in cases}
    if configs:
        unknown = [c for c in configs if c not in CONFIGS]
        if unknown:
            raise ValueError(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
        plan = {c: [k for k in configs] for c in plan}
    sizes = dict(sizes or (QUICK_SIZES if quick else FULL_SIZES))
    if n_seeds is not None:
        sizes["n_seeds"] = n_seeds
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {"sizes": sizes, "quick": quick, "plan": plan, "cases": {},
                               "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                           "python": sys.version.split()[0]}}
    for case, names in plan.items():
        data = load_case(case)
        case_rows = []
        log(f"[{case}] {data['note']}; {data['prices'].n_rows} rows")
        for name in names:
            r = run_config(case, data, name, sizes)
            case_rows.append(r)
            rows.append(r)
            if r.get("error"):
                log(f"  {name}: failed: {r['error']}")
            else:
                log(f"  {name}: finite {r['finite']:.2f}, within10 {r['within_10pct_of_best']:.2f}, val "
                    f"{r['validation_median']:.4g}, test {r['test_median']:.4g}, {r['wall_s']:.0f} s")
        plot_curves(case, case_rows, out / f"curves_{case}.png")
        results["cases"][case] = {"note": data["note"], "baselines_test": baselines(data, sizes),
                                  "periods": next((r["periods"] for r in case_rows if "periods" in r), None)}
        results["rows"] = rows
        results["wall_s"] = time.perf_counter() - t_all
        _write(out, results, rows)  # after every case: a partial study is still readable
    log(f"study done in {results['wall_s']:.0f} s; wrote {out}")
    return results


def _write(out: Path, results: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from tfmm.training import write_json

    write_json(out / "results.json", results)
    (out / "table.md").write_text(markdown_table(rows) + "\n")
    table_frame(rows).to_csv(out / "table.csv", index=False)


def merge_results(out: str | Path, parts: list[str | Path]) -> dict[str, Any]:
    """One study from several output folders of ``--cases`` subsets (run side by side): results.json,
    table.md and table.csv of all their cases in ``out``, and the curves PNGs redrawn."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {"parts": [str(p) for p in parts], "cases": {}, "rows": [], "plan": {}}
    parts_read = [json.loads((Path(part) / "results.json").read_text()) for part in parts]
    for r in parts_read:
        for key in ("sizes", "quick", "machine"):
            merged.setdefault(key, r.get(key))
        merged["cases"].update(r["cases"])
        merged["plan"].update(r["plan"])
        merged["rows"] += r["rows"]
        merged.setdefault("wall_s_parts", []).append(r.get("wall_s", sum(r.get("wall_s_parts") or [0.0])))
    merged["wall_s"] = float(sum(merged.get("wall_s_parts", [])))  # the parts run one after the other
    for case in merged["cases"]:
        plot_curves(case, [row for row in merged["rows"] if row["case"] == case], out / f"curves_{case}.png")
    _write(out, merged, merged["rows"])
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small study (BTC/ETH momentum, naive and "
                                                             "stabilised, 8 runs, 20 steps): under 5 minutes")
    parser.add_argument("--out", default=str(ROOT / "docs" / "stability"))
    parser.add_argument("--n-seeds", type=int, default=None, help="runs per configuration (default 32, quick 8)")
    parser.add_argument("--cases", nargs="*", default=None, help=f"subset of: {', '.join(FULL_CASES)}")
    parser.add_argument("--configs", nargs="*", default=None, help=f"subset of: {', '.join(CONFIGS)}")
    parser.add_argument("--merge", nargs="*", default=None, metavar="FOLDER",
                        help="instead of running: merge the results of these output folders into --out")
    args = parser.parse_args(argv)
    if args.merge:
        merge_results(args.out, args.merge)
        return 0
    run_study(args.out, quick=args.quick, n_seeds=args.n_seeds, cases=args.cases, configs=args.configs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
