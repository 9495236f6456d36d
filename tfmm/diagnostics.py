"""``tfmm.diagnose``: is the training surface trustworthy for this pool, strategy and data?

Reports, on the current backend (docs/decisions.md, training):

1. autodiff vs central finite differences of the smooth-mode objective on one bout, per parameter entry;
2. the smooth-minus-exact objective gap on that bout (what smoothing changes in the number trained on);
3. gradient-norm statistics over a batch of bouts (median, max, non-finite count, histogram);
4. gate and selection boundary statistics of the exact path: the fraction of arbitrage minutes whose
   gate margin ``profit - gas - cost`` is within ``gate_temperature`` of 0, and whose best-minus-second
   candidate profit is within ``selection_temperature`` (minutes where the smooth and exact modes can differ).

Boundary statistics recompute each phase's candidates from the exact path's reserves (Phase A from
``R_{t-1}`` under ``w_{t-1}``, Phase B from Phase A's result under ``w_t``), vectorised over minutes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tfmm.api import make_request, simulate, value_and_grad
from tfmm.backend import get_backend
from tfmm.core.memory import MINUTES_PER_DAY
from tfmm.finite_differences import central_differences
from tfmm.specs import Pool, Smoothing, Strategy


def phase_margins(reserves: Any, weights_prev: Any, weights: Any, prices: Any, fee: Any, gas: Any, arb_fee: Any,
                  signatures: np.ndarray, bk: Any) -> dict[str, Any]:
    """Exact-mode margins of one minute's two phases from the reserves before them (all in USD).

    Returns gate margins ``profit - gas - 0.5 arb_fee sum|Delta| p`` of the best valid candidate, selection
    margins (best minus second-best valid profit, +inf with fewer than two valid candidates) and whether the
    phase had a non-zero valid candidate, each of shape (2,) for (Phase A, Phase B).
    """
    xp = bk.xp
    zero_fee = fee == 0.0
    # at a minute without a fee the pool executes the single zero-fee trade (math.md 2.5): every asset
    # active, no fee, i.e. the all-(+1) signature at gamma = 1; compared against itself it has no rival
    no_fee_row = np.ones((1, signatures.shape[1]), dtype=signatures.dtype)
    out = {"gate": [], "selection": [], "active": []}
    r = reserves
    for w in (weights_prev, weights):
        with_fee = _best_candidate(r, w, prices, 1.0 - fee, signatures, gas, arb_fee, bk)
        without = _best_candidate(r, w, prices, 1.0, no_fee_row, gas, arb_fee, bk)
        margin, selection, active, executed, trade = (bk.where(zero_fee, b, a) for a, b in zip(with_fee, without))
        out["gate"].append(margin)
        out["selection"].append(selection)
        out["active"].append(active)
        r = r + bk.where(executed, trade, xp.zeros_like(trade))
    return {k: xp.stack(v) for k, v in out.items()}


def _best_candidate(r: Any, w: Any, prices: Any, gamma: Any, signatures: np.ndarray, gas: Any, arb_fee: Any,
                    bk: Any) -> tuple[Any, Any, Any, Any, Any]:
    """(gate margin USD, best minus second-best valid profit USD, any non-zero valid candidate, executed,
    the executed trade) of one phase over the candidates of ``signatures`` at ``gamma`` (exact mode)."""
    from tfmm.core.g3m import candidate_trades, gate_margin, selection_weights

    xp = bk.xp
    deltas, profits, valid = candidate_trades(r, w, prices, gamma, signatures, bk)
    onehot = selection_weights(profits, valid, False, None, bk)  # exact: first maximum among valid
    best = xp.sum(onehot * profits)
    second = xp.max(bk.where((onehot > 0) | ~valid, -xp.inf, profits))
    trade = onehot @ deltas
    margin = gate_margin(best, trade, prices, gas, arb_fee, None, bk)
    executed = xp.any(valid) & (margin >= 0)
    active = xp.any(valid & (xp.sum(xp.abs(deltas), axis=-1) > 0))
    return margin, best - second, active, executed, trade


@functools.lru_cache(maxsize=16)
def _margins_function(bk: Any, signatures: tuple[tuple[int, ...], ...]) -> Any:
    """The compiled, minute-vectorised :func:`phase_margins` for one backend and signature set (compiled once:
    training computes boundary statistics at every evaluation)."""
    sigs = np.asarray(signatures)
    return bk.jit(bk.vmap(lambda r, wp, w, p, f, g, a: phase_margins(r, wp, w, p, f, g, a, sigs, bk)))


def boundary_statistics(prices: Any, strategy: Strategy, pool: Pool, start: int = 0, length: int | None = None,
                        smoothing: Smoothing | None = None) -> dict[str, float]:
    """Fractions of active arbitrage phases near the gate / selection boundary on one exact-mode bout."""
    smoothing = smoothing or Smoothing()
    bk = get_backend()
    if not hasattr(bk, "vmap"):
        raise ValueError(f"boundary statistics need an array backend with vmap, not {bk.name!r}")
    sim = simulate(prices, strategy, pool, start=start, length=length, mode="exact").to_numpy()
    req = sim.request
    from tfmm.core.g3m import signature_matrix

    n = req.n_assets
    sigs = signature_matrix(n, pool.signature_set(n))
    s, t_out = int(req.starts[0]), req.n_out
    rows = slice(s + 1, s + t_out)
    fn = _margins_function(bk, tuple(map(tuple, sigs.tolist())))
    m = fn(bk.asarray(sim.reserves[:-1]), bk.asarray(sim.weights[:-1]), bk.asarray(sim.weights[1:]),
           bk.asarray(sim.prices[1:]), bk.asarray(req.fee[rows]), bk.asarray(req.gas[rows]),
           bk.asarray(req.arb_fee[rows]))
    gate, sel, active = (np.asarray(m[k]) for k in ("gate", "selection", "active"))
    n_active = int(active.sum())
    near_gate = active & (np.abs(gate) < smoothing.gate_temperature)
    near_sel = active & (sel < smoothing.selection_temperature)
    frac = (lambda x: float(x.sum()) / n_active) if n_active else (lambda x: 0.0)
    return {
        "active_phases": n_active,
        "phases": int(active.size),
        "gate_near_boundary": frac(near_gate),
        "selection_near_boundary": frac(near_sel),
        "median_gate_margin_usd": float(np.median(gate[active])) if n_active else float("nan"),
    }


@dataclass
class Diagnosis:
    """What :func:`diagnose` found; ``str(d)`` prints it as tables."""

    gradients: Any  # DataFrame: parameter, index, autodiff, finite_difference, abs_error, rel_error
    objective_smooth: float
    objective_exact: float
    grad_norms: np.ndarray
    grad_norm_histogram: tuple[np.ndarray, np.ndarray]
    boundary: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def smooth_exact_gap(self) -> float:
        return self.objective_smooth - self.objective_exact

    @property
    def max_rel_error(self) -> float:
        return float(self.gradients["rel_error"].max())

    def __str__(self) -> str:
        g = self.grad_norms
        finite = g[np.isfinite(g)]
        lines = [
            f"diagnosis: {self.settings.get('strategy')} on {self.settings.get('backend')}, objective "
            f"{self.settings.get('objective')}, bout start {self.settings.get('start')} length {self.settings.get('length')}",
            "",
            "autodiff vs central finite differences (smooth mode, step "
            f"{self.settings.get('fd_step')}):",
            self.gradients.to_string(index=False, float_format=lambda x: f"{x: .6e}"),
            "",
            f"objective: smooth {self.objective_smooth:.8g}, exact {self.objective_exact:.8g}, "
            f"gap (smooth - exact) {self.smooth_exact_gap:.3e}",
            "",
            f"gradient norm over {g.size} bouts: non-finite {int((~np.isfinite(g)).sum())}"
            + (f", median {np.median(finite):.4g}, min {finite.min():.4g}, max {finite.max():.4g}" if finite.size else ""),
        ]
        counts, edges = self.grad_norm_histogram
        if counts.size:
            width = max(int(counts.max()), 1)
            for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
                lines.append(f"  [{lo:10.4g}, {hi:10.4g})  {'#' * int(round(30 * c / width)):<30} {int(c)}")
        b = self.boundary
        lines += [
            "",
            f"boundary (exact path, {b.get('active_phases', 0)} of {b.get('phases', 0)} phases with a valid trade): "
            f"gate within temperature {b.get('gate_near_boundary', float('nan')):.2%}, "
            f"selection within temperature {b.get('selection_near_boundary', float('nan')):.2%}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Bout:
    """The smooth-mode objective of one bout, as :func:`diagnose` differentiates it."""

    prices: Any
    strategy: Strategy
    pool: Pool
    start: int
    length: int
    objective: str
    smoothing: Smoothing

    def value_and_grad(self, params: dict[str, np.ndarray], start: int | None = None) -> tuple[float, dict]:
        """(objective, gradient) at ``params`` on this bout (or the bout of the same length at ``start``)."""
        value, grads = value_and_grad(self.prices, self.strategy.with_params(params), self.pool,
                                      start=self.start if start is None else start, length=self.length,
                                      objective=self.objective, mode="smooth", smoothing=self.smoothing)
        return float(np.asarray(value)), grads


def _gradient_check(bout: _Bout, fd_step: float) -> tuple[float, list[dict[str, Any]]]:
    """The objective and one row per parameter entry: autodiff vs central differences of step ``fd_step``."""
    params = bout.strategy.params
    value, grads = bout.value_and_grad(params)
    fd_grads = central_differences(lambda p: bout.value_and_grad(p)[0], params, lambda x: fd_step)
    rows = []
    for name, arr in params.items():
        for i in range(arr.size):
            fd = float(fd_grads[name][i])
            ad = float(np.asarray(grads[name])[i])
            err = abs(ad - fd)
            rows.append({"parameter": name, "index": i, "autodiff": ad, "finite_difference": fd,
                         "abs_error": err, "rel_error": err / max(abs(fd), 1e-12)})
    return value, rows


def _gradient_norms(bout: _Bout, starts: np.ndarray) -> np.ndarray:
    """Global gradient norm ``sqrt(sum ||g_k||^2)`` of the objective on the bouts at ``starts``."""
    norms = []
    for s in starts:
        _, g = bout.value_and_grad(bout.strategy.params, int(s))
        norms.append(float(np.sqrt(sum(float(np.sum(np.asarray(v) ** 2)) for v in g.values()))))
    return np.asarray(norms)


def diagnose(
    prices: Any,
    strategy: Strategy,
    pool: Pool,
    start: int | None = None,
    length: int | None = None,
    objective: str = "daily_log_sharpe",
    smoothing: Smoothing | None = None,
    n_bouts: int = 16,
    fd_step: float = 1e-5,
    seed: int = 0,
) -> Diagnosis:
    """Check gradients, the smooth/exact gap, gradient norms and boundary statistics (module docstring).

    start/length: the bout for the gradient check (default: the last 10 days that fit, on a chunk
    boundary); n_bouts bouts of the same length at seeded chunk-boundary starts give the norm statistics;
    fd_step: central-difference step in the unconstrained parameter space.
    """
    import pandas as pd

    smoothing = smoothing or Smoothing()
    n_rows = len(prices.values) if hasattr(prices, "values") else len(prices)
    c = pool.chunk_period
    if length is None:
        length = min(10 * MINUTES_PER_DAY + 1, n_rows // 2)
    if start is None:
        start = ((n_rows - length + 1) // c) * c
    make_request(prices, strategy, pool, start, length)  # validate before any work
    if strategy.n_sets is not None:
        raise ValueError("diagnose takes a strategy with one parameter set (use strategy.param_set(i))")
    bout = _Bout(prices, strategy, pool, start, length, objective, smoothing)
    value, rows = _gradient_check(bout, fd_step)
    from tfmm.api import metrics

    exact_sim = simulate(prices, strategy, pool, start=start, length=length, mode="exact")
    objective_exact = float(np.asarray(metrics(exact_sim)[objective]))
    rng = np.random.default_rng(seed)
    candidates = np.arange(0, n_rows - length + 2, c)
    starts = np.sort(rng.choice(candidates, size=min(n_bouts, candidates.size), replace=False))
    norms_arr = _gradient_norms(bout, starts)
    finite = norms_arr[np.isfinite(norms_arr)]
    hist = np.histogram(finite, bins=min(8, max(1, finite.size))) if finite.size else (np.zeros(0), np.zeros(1))
    try:
        boundary = boundary_statistics(prices, strategy, pool, start, length, smoothing)
    except ValueError as exc:
        boundary = {"error": str(exc)}
    return Diagnosis(
        gradients=pd.DataFrame(rows), objective_smooth=value, objective_exact=objective_exact,
        grad_norms=norms_arr, grad_norm_histogram=hist, boundary=boundary,
        settings={"strategy": strategy.name, "backend": get_backend().name, "objective": objective,
                  "start": start, "length": length, "fd_step": fd_step},
    )
