"""The fee path as Pallas kernels for JAX, forward and checkpointed reverse (GPU via Triton; CPU interpreted).

The same pool step as the Numba kernel :mod:`tfmm.backends.kernels.fee_path` (math.md 2.3-2.5): per trajectory,
for minutes ``t = 1 .. T-1``, Phase A (weights ``w_{t-1}``, prices ``p_t``) then Phase B (``w_t``, ``p_t``); each
phase evaluates the candidate rows of :func:`~tfmm.backends.kernels.fee_path.candidate_table` in the
cancellation-free form, checks validity, selects (exact: first maximum; smooth: softmax, straight-through or
hard) and gates (exact ``margin >= 0``; smooth ``sigmoid(margin / tau_gate)``); at ``fee == 0`` the zero-fee row
is the only selectable one. The formulas, the validity screen and the hand-written step adjoint are those of
that module's docstring and are not repeated here; every expression below follows the Numba code term by term
(same operation order), so float64 results agree to rounding. Units: reserves in tokens, prices in USD per
token, gas, profits and fees in USD, fee rates dimensionless.

Layout and grid. A program owns a block of ``block`` trajectories (a power of two, default 32: one warp, one
trajectory per thread); the grid runs over trajectory blocks. Inputs are transposed so the trajectory axis is
the minor one, ``(T, n, B)``, and every load or store in the kernel is one contiguous ``(block,)`` vector: the
asset loop (``n <= 8``) is unrolled in Python, the time loop and the loop over candidate rows are
``lax.fori_loop``\\ s, and no minor dimension is ever indexed dynamically. The candidate rows are one int32 code
per row (bit ``i``: asset ``i`` active; bit ``n + i``: fee-bearing, ``sigma_i = +1``; bits ``2n..``: the row's
reference asset), read as scalars from a small table input; a row chosen per trajectory (exact mode's
executed candidate) is the same code carried as a vector, so both evaluate through one function of masks.

Checkpointed reverse. The forward kernel writes, besides its outputs (per-minute reserves ``(T, n)`` and fees
``(T,)``), the reserves every ``K`` minutes, ``checkpoints (C, n)`` with ``C = ceil((T - 1) / K)``; these and the
inputs are all the reverse needs (the wrapper keeps no per-minute residual). The reverse kernel walks the
segments backwards: it recomputes segment ``j`` (minutes ``jK + 1 .. jK + K``) from its checkpoint, storing the
reserves entering each phase of each minute into a ``(2K, n)`` workspace, then runs the minute adjoints
backwards through it (per minute: Phase B, then Phase A, each re-evaluated from its stored reserves and its
adjoint taken, as the Numba reverse does). Memory per trajectory beyond inputs and outputs: ``(C + 2K) n``
numbers, ``O(T / K + K)``; ``K`` defaults to ``round(sqrt(T - 1))``. For ``T = 43,200`` and ``n = 2`` in float64:
``K = 208``, ``C = 208``, checkpoints 3.3 kB and workspace 6.7 kB per trajectory, where the Numba kernel's
residuals (Phase A's reserves and the choices, ``O(T)``) take 1.0 MB. The time axis is padded to ``1 + C K``
rows by repeating the last row (at most ``K - 1`` extra minutes of work, whose outputs are dropped and whose
cotangents are zero); the wrapper's transposed, padded copies of the inputs and cotangents are input-sized
temporaries.

Cost of the reverse, per minute: the segment's recomputation (one forward minute) and, per phase, the
forward sweep over the candidate rows again (selection and gate) and one adjoint sweep: over every selectable
row in smooth softmax and straight-through mode (each row evaluated again, then its adjoint taken), over the
executed row alone in exact and smooth "hard" mode (its code carried per trajectory). The softmax's mean
cotangent ``sum_s soft_s (profit_bar profit_s + t_bar . Delta_s)`` equals ``profit_bar P_soft + t_bar . D_soft``
with ``P_soft = sum soft_s profit_s`` and ``D_soft = sum soft_s Delta_s``, which the forward sweep accumulates (an
online softmax), so no third sweep is needed. Both phases of a minute share one loop body (a ``fori_loop`` of
two), which halves the code the compilers see.

dtype. Everything is computed in the inputs' dtype. float64 matches the CPU kernel to rounding. The CPU kernel
computes in float64 even for float32 inputs; this one computes float32 in float32: the log-ratios carry
~6e-8 relative error, the profit ``C sum wh (expm1(u) - u)`` for ``|u|`` just above ``SERIES_LIMIT`` loses up to
~1e-4 of itself (the closed form cancels there), the invariant test (1e-9) is evaluated in float32 (it is a sum
of small terms, so it stays meaningful), and a fee below ~3e-8 makes ``gamma == 1``, a zero-fee minute. Exact
mode's discrete decisions (gate, choice, validity) can therefore differ from the float64 kernel's where their
margin is within float32 rounding.

GPU lowering. ``pallas_call`` is given ``pallas.triton.CompilerParams``, which selects the Triton lowering
(JAX's default GPU lowering, Mosaic GPU, rejects float64 blocks: its memory transfers have no float64 type).
The kernels respect the Triton lowering's constraints: power-of-two sizes for every loaded or stored array
(``(block,)`` vectors and scalars), no ``scratch_shapes`` (the reverse's workspace is an extra output of shape
``(2K, n, B)``, discarded by the caller), no reversed ``fori_loop`` (indices are reversed by arithmetic), no
array constants closed over, transcendental functions in float64 and float32 (libdevice). On CPU the same
kernels run with ``interpret=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pl_triton

from tfmm.backends.kernels.fee_path import (INV_E, INVARIANT_TOLERANCE, LOG_FLOOR, SCREEN_FACTOR, SELECTIONS,
                                            SERIES_LIMIT, FeePathSettings, candidate_table)

Vec = jax.Array  # one value per trajectory of the block: (block,)
Vecs = tuple  # a tuple of n Vec, one per asset
DEFAULT_BLOCK = 32
MAX_ASSETS = 8
N_RATES = 3  # fee, gas, arb_fee


# ----------------------------------------------------------------------------------------------------------
# static configuration


@dataclass(frozen=True)
class KernelConfig:
    """The static part of one kernel: mode, sizes and launch parameters (hashable)."""

    n: int  # assets
    n_rows: int  # candidate rows: the signatures plus the zero-fee row (the last)
    smooth: bool
    selection: int  # SELECTIONS: 0 hard, 1 softmax, 2 straight_through
    tau_gate: float  # USD
    tau_sel: float  # USD
    eps: float  # USD, smooth |x|
    checkpoint_every: int  # K, minutes per segment
    n_segments: int  # C
    block: int  # trajectories per program, a power of two
    interpret: bool

    @property
    def mixed(self) -> bool:
        """Whether the selection is a softmax mixture (its adjoint sweeps over every row)."""
        return self.smooth and self.selection != SELECTIONS["hard"]

    @property
    def padded_rows(self) -> int:
        """Rows of the padded time axis: row 0 plus ``C`` segments of ``K`` minutes."""
        return 1 + self.n_segments * self.checkpoint_every

    @property
    def num_warps(self) -> int:
        return max(1, min(8, self.block // 32))


def row_codes(settings: FeePathSettings) -> np.ndarray:
    """The candidate table (:func:`~tfmm.backends.kernels.fee_path.candidate_table`) as one int32 code per row:
    bits ``0..n-1`` active, bits ``n..2n-1`` fee-bearing (``sigma = +1``), bits ``2n..`` the reference asset."""
    active, plus, ref = candidate_table(np.asarray(settings.signatures, dtype=np.int8))
    n = active.shape[1]
    bits = (1 << np.arange(n)).astype(np.int64)
    return (active.astype(np.int64) @ bits + ((plus.astype(np.int64) @ bits) << n) + (ref << (2 * n))).astype(np.int32)


def default_checkpoint_every(T: int) -> int:
    """``K ~ sqrt(T - 1)`` minutes: ``C ~ K`` checkpoints and a workspace of ``2K`` rows, ``O(sqrt(T))`` each."""
    return max(1, int(round(math.sqrt(max(T - 1, 1)))))


def kernel_config(settings: FeePathSettings, T: int, checkpoint_every: int | None, block: int,
                  interpret: bool) -> KernelConfig:
    """Validated static configuration for ``T`` rows (``T >= 2``)."""
    n = settings.n_assets
    if n > MAX_ASSETS:
        raise ValueError(f"fee path (Pallas): n_assets={n} is invalid: allowed at most {MAX_ASSETS}")
    if block < 1 or block & (block - 1):
        raise ValueError(f"fee path (Pallas): block={block} is invalid: allowed a power of two >= 1")
    minutes = T - 1
    k = default_checkpoint_every(T) if checkpoint_every is None else int(checkpoint_every)
    if k < 1:
        raise ValueError(f"fee path (Pallas): checkpoint_every={checkpoint_every} is invalid: allowed >= 1")
    k = min(k, minutes)
    return KernelConfig(n=n, n_rows=len(settings.signatures) + 1, smooth=settings.smooth,
                        selection=SELECTIONS[settings.selection], tau_gate=settings.gate_temperature,
                        tau_sel=settings.selection_temperature, eps=settings.abs_epsilon, checkpoint_every=k,
                        n_segments=-(-minutes // k), block=block, interpret=interpret)


# ----------------------------------------------------------------------------------------------------------
# one candidate (vectorised over the block; masks are scalars for a table row, vectors for a chosen row)


class Row(NamedTuple):
    active: tuple
    plus: tuple
    is_ref: tuple


class Market(NamedTuple):
    """What a phase needs besides the reserves: weights, prices (n each), gamma, log gamma, gas, arb_fee."""

    w: Vecs
    p: Vecs
    gamma: Vec
    log_gamma: Vec
    gas: Vec
    arb: Vec


class Candidate(NamedTuple):
    lr: Vecs
    u: Vecs
    em: Vecs
    wh: Vecs
    delta: Vecs  # tokens; 0 where invalid
    profit: Vec  # USD; 0 where invalid
    scale: Vec  # C, USD
    s_a: Vec
    valid: Vec


def decode_row(code: jax.Array, n: int) -> Row:
    """Masks of a row code (a scalar for a table row, a vector for a per-trajectory row)."""
    active = tuple(((code >> i) & 1) == 1 for i in range(n))
    plus = tuple(((code >> (n + i)) & 1) == 1 for i in range(n))
    ref = code >> (2 * n)
    return Row(active, plus, tuple(ref == i for i in range(n)))


def _pick(mask: tuple, xs: Sequence[Vec]) -> Vec:
    """``xs[i]`` where ``mask[i]`` (exactly one mask is true): the row's reference asset."""
    out = xs[-1]
    for i in range(len(xs) - 2, -1, -1):
        out = jnp.where(mask[i], xs[i], out)
    return out


def _sum_where(masks: Sequence, terms: Sequence[Vec], zero: Vec) -> Vec:
    """``sum_i terms[i]`` over ``masks[i]``, in asset order (masked terms add an exact 0)."""
    total = zero
    for m, x in zip(masks, terms):
        total = total + jnp.where(m, x, 0.0)
    return total


def _phi(u: Vec, em: Vec) -> Vec:
    """``expm1(u) - u`` given ``em = expm1(-u)`` (fee_path._phi)."""
    series = u * u * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0 + u / 120.0)))
    return jnp.where(jnp.abs(u) < SERIES_LIMIT, series, -em / (1.0 + em) - u)


def log_ratios(R: Vecs, w: Vecs, p: Vecs) -> tuple[Vecs, Vecs]:
    """``z_i = log((R_i / R_0)(pw_i / pw_0))`` and ``pw = p / w``, shared by every row (fee_path._log_ratios)."""
    pw = tuple(pi / wi for pi, wi in zip(p, w))
    z = (jnp.zeros_like(R[0]),) + tuple(jnp.log((R[i] / R[0]) * (pw[i] / pw[0])) for i in range(1, len(R)))
    return z, pw


def _screened(row: Row, u: Vecs, w: Vecs, gamma: Vec) -> Vec:
    """The direction screen: wrong-way legs whose invariant-loss bound alone exceeds twice the tolerance."""
    wrong = [a & jnp.where(pl_, ui > 0.0, ui < 0.0) for a, pl_, ui in zip(row.active, row.plus, u)]
    bound = _sum_where(wrong, [wi * jnp.minimum(jnp.abs(ui), 1.0) for wi, ui in zip(w, u)], jnp.zeros_like(gamma))
    return (1.0 - gamma) * bound * INV_E > SCREEN_FACTOR * INVARIANT_TOLERANCE


def _invariant_ok(row: Row, R: Vecs, d: Vecs, g: Vecs, w: Vecs, gamma: Vec) -> Vec:
    """Validity: ``R + Delta > 0`` and the fee-adjusted invariant test (math.md 2.3)."""
    ok = jnp.ones(gamma.shape, dtype=bool)
    log_change = jnp.zeros_like(gamma)
    for a, pl_, Ri, di, gi, wi in zip(row.active, row.plus, R, d, g, w):
        positive = Ri + di > 0.0
        ok = ok & (~a | positive)
        wrong = a & positive & jnp.where(pl_, di < 0.0, di > 0.0)
        c = -(1.0 - gamma) * jnp.abs(di) / (Ri + gi * di)
        log_change = log_change + jnp.where(wrong, wi * (c - 0.5 * c * c), 0.0)
    return ok & (log_change >= LOG_FLOOR)


def evaluate(row: Row, R: Vecs, mk: Market, z: Vecs, pw: Vecs) -> Candidate:
    """One candidate row from reserves ``R`` (fee_path._candidate); invalid: zero trade and profit."""
    n = len(R)
    zero = jnp.zeros_like(R[0])
    lg = tuple(jnp.where(row.plus[i], mk.log_gamma, zero) for i in range(n))
    lg_r, z_r = _pick(row.is_ref, lg), _pick(row.is_ref, z)
    s_a = _sum_where(row.active, mk.w, zero)
    lr = tuple(jnp.where(row.active[i], (z[i] - z_r) + (lg_r - lg[i]), 0.0) for i in range(n))
    wh = tuple(jnp.where(row.active[i], mk.w[i] / s_a, 0.0) for i in range(n))
    mean_log = zero
    for i in range(n):
        mean_log = mean_log + wh[i] * lr[i]
    u = tuple(jnp.where(row.active[i], lr[i] - mean_log, 0.0) for i in range(n))
    g = tuple(jnp.where(row.plus[i], mk.gamma, 1.0) for i in range(n))
    em = tuple(jnp.where(row.active[i], jnp.expm1(-u[i]), 0.0) for i in range(n))
    d = tuple(R[i] * em[i] / g[i] for i in range(n))
    phi_sum = _sum_where(row.active, [wh[i] * _phi(u[i], em[i]) for i in range(n)], zero)
    scale = _pick(row.is_ref, R) * _pick(row.is_ref, pw) * s_a / _pick(row.is_ref, g) * (1.0 + _pick(row.is_ref, em))
    valid = ~_screened(row, u, mk.w, mk.gamma) & _invariant_ok(row, R, d, g, mk.w, mk.gamma)
    delta = tuple(jnp.where(valid, di, 0.0) for di in d)
    return Candidate(lr, u, em, wh, delta, jnp.where(valid, scale * phi_sum, 0.0), scale, s_a, valid)


class Grads(NamedTuple):
    """Cotangents accumulated by candidate adjoints: reserves, weights (n each) and gamma."""

    R: Vecs
    w: Vecs
    gamma: Vec


def candidate_adjoint(row: Row, c: Candidate, d_bar: Vecs, p_bar: Vec, R: Vecs, mk: Market, take: Vec,
                      acc: Grads) -> Grads:
    """Adds the adjoint of candidate ``c`` (given ``Delta_bar`` and ``profit_bar``) where ``take``
    (fee_path._candidate_adjoint; formulas in its module docstring)."""
    n = len(R)
    zero = jnp.zeros_like(R[0])
    g = tuple(jnp.where(row.plus[i], mk.gamma, 1.0) for i in range(n))
    phi = tuple(_phi(c.u[i], c.em[i]) for i in range(n))
    phi_sum = _sum_where(row.active, [c.wh[i] * phi[i] for i in range(n)], zero)
    ub = tuple(jnp.where(row.active[i], -d_bar[i] * (R[i] / g[i]) * (1.0 + c.em[i])
                         + p_bar * c.scale * c.wh[i] * jnp.expm1(c.u[i]), 0.0) for i in range(n))
    u_bar_sum = _sum_where(row.active, ub, zero)
    logc_bar = p_bar * phi_sum * c.scale - u_bar_sum
    ab = tuple(ub[i] + logc_bar * c.wh[i] for i in range(n))
    wb = tuple(p_bar * c.scale * phi[i] + logc_bar * c.lr[i] for i in range(n))
    on = tuple(take & a for a in row.active)
    R_bar = tuple(acc.R[i] + jnp.where(on[i], d_bar[i] * c.em[i] / g[i] + ab[i] / R[i], 0.0) for i in range(n))
    w_bar = tuple(acc.w[i] + jnp.where(on[i], -ab[i] / mk.w[i] + wb[i] / c.s_a, 0.0) for i in range(n))
    sa_bar = _sum_where(row.active, [ab[i] - wb[i] * c.wh[i] for i in range(n)], zero) / c.s_a
    w_bar = tuple(w_bar[i] + jnp.where(on[i], sa_bar, 0.0) for i in range(n))
    g_terms = [-d_bar[i] * c.delta[i] / g[i] - ab[i] / g[i] for i in range(n)]
    gamma_bar = acc.gamma + _sum_where([on[i] & row.plus[i] for i in range(n)], g_terms, zero)
    return Grads(R_bar, w_bar, gamma_bar)


# ----------------------------------------------------------------------------------------------------------
# one phase: every selectable row, selection, gate


class Choice(NamedTuple):
    """The selection sweep's state: first maximum (row, its code, profit, trade, validity) and, for a softmax
    mixture, the online softmax (running max ``m`` of profit / tau_sel, ``total``, and the unnormalised sums of
    ``exp(.) profit`` and ``exp(.) Delta``)."""

    best: Vec
    code: Vec
    profit: Vec
    delta: Vecs
    valid: Vec
    m: Vec | None
    total: Vec | None
    soft_profit: Vec | None
    soft_delta: Vecs | None


class Phase(NamedTuple):
    e: Vecs  # executed trade (tokens): gate applied
    trade: Vecs  # selected trade before the gate
    gate: Vec  # exact 0/1, smooth the sigmoid
    choice: Choice  # soft sums normalised by total


def _selectable(s: jax.Array, cfg: KernelConfig, zero_fee: Vec) -> Vec:
    """The zero-fee row (the last) is selectable exactly at ``gamma == 1``, the signature rows elsewhere."""
    return jnp.where(s == cfg.n_rows - 1, zero_fee, ~zero_fee)


def _choice_init(like: Vec, cfg: KernelConfig) -> Choice:
    zero = jnp.zeros_like(like)
    zeros = tuple(zero for _ in range(cfg.n))
    ibest = jnp.zeros(like.shape, jnp.int32)
    soft = (jnp.full_like(like, -jnp.inf), zero, zero, zeros) if cfg.mixed else (None,) * 4
    return Choice(ibest, ibest, jnp.full_like(like, -jnp.inf), zeros, jnp.zeros(like.shape, bool), *soft)


def _choice_update(ch: Choice, s: jax.Array, code: jax.Array, c: Candidate, ok: Vec, cfg: KernelConfig) -> Choice:
    """Folds row ``s`` into the sweep where ``ok`` (selectable); ties keep the first maximum."""
    take = ok & (c.profit > ch.profit)
    best = (jnp.where(take, s, ch.best), jnp.where(take, code, ch.code), jnp.where(take, c.profit, ch.profit),
            tuple(jnp.where(take, x, y) for x, y in zip(c.delta, ch.delta)), jnp.where(take, c.valid, ch.valid))
    if not cfg.mixed:
        return Choice(*best, None, None, None, None)
    x = c.profit / cfg.tau_sel
    m = jnp.where(ok, jnp.maximum(ch.m, x), ch.m)
    rescale, weight = jnp.exp(ch.m - m), jnp.exp(x - m)
    total = jnp.where(ok, ch.total * rescale + weight, ch.total)
    soft_profit = jnp.where(ok, ch.soft_profit * rescale + weight * c.profit, ch.soft_profit)
    soft_delta = tuple(jnp.where(ok, sd * rescale + weight * di, sd) for sd, di in zip(ch.soft_delta, c.delta))
    return Choice(*best, m, total, soft_profit, soft_delta)


def _sweep(codes_ref, R: Vecs, mk: Market, z: Vecs, pw: Vecs, cfg: KernelConfig) -> Choice:
    """Every candidate row, folded into the selection (a loop over rows; the table is read per row)."""
    zero_fee = mk.gamma == 1.0

    def body(s, ch):
        code = codes_ref[s]
        c = evaluate(decode_row(code, cfg.n), R, mk, z, pw)
        return _choice_update(ch, s, code, c, _selectable(s, cfg, zero_fee), cfg)

    ch = lax.fori_loop(0, cfg.n_rows, body, _choice_init(R[0], cfg))
    if cfg.mixed:
        ch = ch._replace(soft_profit=ch.soft_profit / ch.total, soft_delta=tuple(sd / ch.total for sd in ch.soft_delta))
    return ch


def _cost(trade: Vecs, p: Vecs, cfg: KernelConfig) -> Vec:
    """``sum_i |trade_i p_i|`` (smooth: ``sqrt(x^2 + eps^2)``), USD."""
    cost = jnp.zeros_like(trade[0])
    for ti, pi in zip(trade, p):
        x = ti * pi
        cost = cost + (jnp.sqrt(x * x + cfg.eps * cfg.eps) if cfg.smooth else jnp.abs(x))
    return cost


def phase(codes_ref, R: Vecs, mk: Market, cfg: KernelConfig) -> Phase:
    """One arbitrage phase from reserves ``R`` (fee_path._phase)."""
    z, pw = log_ratios(R, mk.w, mk.p)
    ch = _sweep(codes_ref, R, mk, z, pw, cfg)
    softmax = cfg.mixed and cfg.selection == SELECTIONS["softmax"]
    trade, sel_profit = (ch.soft_delta, ch.soft_profit) if softmax else (ch.delta, ch.profit)
    margin = sel_profit - mk.gas - 0.5 * mk.arb * _cost(trade, mk.p, cfg)
    if cfg.smooth:
        gate = 1.0 / (1.0 + jnp.exp(-margin / cfg.tau_gate))
        e = tuple(gate * ti for ti in trade)
    else:
        gate = jnp.where(margin >= 0.0, 1.0, 0.0).astype(margin.dtype)
        e = tuple(jnp.where(gate == 1.0, ti, 0.0) for ti in trade)
    return Phase(e, trade, gate, ch)


def _gate_adjoint(e_bar: Vecs, ph: Phase, mk: Market, cfg: KernelConfig) -> tuple[Vecs, Vec, Vec, Vec]:
    """Cotangents of the selected trade and profit, gas and arb_fee from that of the executed trade."""
    zero = jnp.zeros_like(ph.gate)
    if not cfg.smooth:
        return tuple(jnp.where(ph.gate == 1.0, eb, 0.0) for eb in e_bar), zero, zero, zero
    g_bar = zero
    for eb, ti in zip(e_bar, ph.trade):
        g_bar = g_bar + eb * ti
    t_bar = [ph.gate * eb for eb in e_bar]
    m_bar = g_bar * ph.gate * (1.0 - ph.gate) / cfg.tau_gate
    cost = zero
    for i, (ti, pi) in enumerate(zip(ph.trade, mk.p)):
        x = ti * pi
        sabs = jnp.sqrt(x * x + cfg.eps * cfg.eps)
        cost = cost + sabs
        t_bar[i] = t_bar[i] + -m_bar * 0.5 * mk.arb * (x / sabs) * pi
    return tuple(t_bar), m_bar, -m_bar, -m_bar * 0.5 * cost


def _nonzero(p_bar: Vec, d_bar: Vecs) -> Vec:
    """Whether a candidate's cotangent is non-zero (a zero one is skipped, as in the CPU kernel)."""
    out = p_bar != 0.0
    for db in d_bar:
        out = out | (db != 0.0)
    return out


def _mixed_adjoint(codes_ref, t_bar: Vecs, p_bar: Vec, R: Vecs, mk: Market, ph: Phase, open_: Vec,
                   cfg: KernelConfig, acc: Grads) -> Grads:
    """The softmax (or straight-through) selection's adjoint: a sweep over every selectable valid row."""
    ch = ph.choice
    z, pw = log_ratios(R, mk.w, mk.p)
    zero_fee = mk.gamma == 1.0
    q_mean = p_bar * ch.soft_profit
    for tb, sd in zip(t_bar, ch.soft_delta):
        q_mean = q_mean + tb * sd

    def body(s, acc):
        row = decode_row(codes_ref[s], cfg.n)
        c = evaluate(row, R, mk, z, pw)
        soft = jnp.exp(c.profit / cfg.tau_sel - ch.m) / ch.total
        if cfg.selection == SELECTIONS["softmax"]:
            q = soft
        else:  # straight-through: forward one-hot, backward softmax
            q = soft + (jnp.where(ch.best == s, 1.0, 0.0) - soft)
        qb = p_bar * c.profit
        for tb, di in zip(t_bar, c.delta):
            qb = qb + tb * di
        pb = q * p_bar + soft * (qb - q_mean) / cfg.tau_sel
        d_bar = tuple(q * tb for tb in t_bar)
        take = open_ & _selectable(s, cfg, zero_fee) & c.valid & _nonzero(pb, d_bar)
        return candidate_adjoint(row, c, d_bar, pb, R, mk, take, acc)

    return lax.fori_loop(0, cfg.n_rows, body, acc)


def _chosen_adjoint(t_bar: Vecs, p_bar: Vec, R: Vecs, mk: Market, ph: Phase, open_: Vec, cfg: KernelConfig,
                    acc: Grads) -> Grads:
    """Exact or hard selection: the adjoint of the executed row alone (its code carried per trajectory)."""
    row = decode_row(ph.choice.code, cfg.n)
    z, pw = log_ratios(R, mk.w, mk.p)
    c = evaluate(row, R, mk, z, pw)
    return candidate_adjoint(row, c, t_bar, p_bar, R, mk, open_ & ph.choice.valid & _nonzero(p_bar, t_bar), acc)


def phase_adjoint(codes_ref, e_bar: Vecs, R: Vecs, mk: Market, ph: Phase, cfg: KernelConfig,
                  R_bar: Vecs) -> tuple[Vecs, Vecs, Vec, Vec, Vec]:
    """Adjoint of :func:`phase` (fee_path._phase_adjoint): given ``R_bar`` (the cotangent of the reserves after
    the phase) and ``e_bar`` (of the executed trade), returns (R_bar before the phase, w_bar, gamma_bar,
    gas_bar, arb_bar). A closed gate (``gate == 0``) propagates nothing through the trade."""
    zero = jnp.zeros_like(ph.gate)
    open_ = ph.gate != 0.0
    t_bar, p_bar, gas_bar, arb_bar = _gate_adjoint(e_bar, ph, mk, cfg)
    acc = Grads(R_bar, tuple(zero for _ in R), zero)
    if cfg.mixed:
        acc = _mixed_adjoint(codes_ref, t_bar, p_bar, R, mk, ph, open_, cfg, acc)
    else:
        acc = _chosen_adjoint(t_bar, p_bar, R, mk, ph, open_, cfg, acc)
    return acc.R, acc.w, acc.gamma, jnp.where(open_, gas_bar, 0.0), jnp.where(open_, arb_bar, 0.0)


# ----------------------------------------------------------------------------------------------------------
# one minute: Phase A then Phase B (one loop body for both, as in the CPU kernel), and its adjoint


class Minute(NamedTuple):
    """The inputs of minute ``t`` (one per trajectory): weights ``w_{t-1}`` (Phase A) and ``w_t`` (Phase B),
    prices ``p_t``, gamma, log gamma, gas and arb_fee."""

    w_prev: Vecs
    w_cur: Vecs
    p: Vecs
    gamma: Vec
    log_gamma: Vec
    gas: Vec
    arb: Vec

    def market(self, ph: jax.Array) -> Market:
        """Phase ``ph``'s inputs (0: A, weights ``w_{t-1}``; 1: B, weights ``w_t``)."""
        w = tuple(jnp.where(ph == 0, a, b) for a, b in zip(self.w_prev, self.w_cur))
        return Market(w, self.p, self.gamma, self.log_gamma, self.gas, self.arb)


def load_minute(w_ref, p_ref, rate_ref, t: jax.Array, n: int) -> Minute:
    fee, gas, arb = rate_ref[t, 0], rate_ref[t, 1], rate_ref[t, 2]
    gamma = 1.0 - fee
    return Minute(tuple(w_ref[t - 1, i] for i in range(n)), tuple(w_ref[t, i] for i in range(n)),
                  tuple(p_ref[t, i] for i in range(n)), gamma, jnp.log(gamma), gas, arb)


def _inflow(e: Vecs, p: Vecs, inflow: Vec) -> Vec:
    """USD paid into the pool, added to ``inflow`` (fees are ``(1 - gamma)`` of it, math.md 2.5)."""
    for ei, pi in zip(e, p):
        inflow = inflow + jnp.maximum(ei, 0.0) * pi
    return inflow


def minute(codes_ref, R: Vecs, mt: Minute, cfg: KernelConfig, work_ref=None, k: jax.Array | None = None
           ) -> tuple[Vecs, Vec]:
    """Reserves after the minute from those before it, and the fees collected (USD). With ``work_ref`` the
    reserves entering each phase are stored in its rows ``2k`` (Phase A) and ``2k + 1`` (Phase B)."""

    def body(ph, carry):
        R, inflow = carry
        if work_ref is not None:
            for i in range(cfg.n):
                work_ref[2 * k + ph, i] = R[i]
        e = phase(codes_ref, R, mt.market(ph), cfg).e
        return tuple(Ri + ei for Ri, ei in zip(R, e)), _inflow(e, mt.p, inflow)

    R, inflow = lax.fori_loop(0, 2, body, (R, jnp.zeros_like(R[0])))
    return R, (1.0 - mt.gamma) * inflow


class MinuteGrads(NamedTuple):
    R_bar: Vecs  # cotangent of R_{t-1}, before g_reserves[t-1] is added
    w_prev: Vecs  # of w_{t-1}
    w_cur: Vecs  # of w_t
    fee: Vec
    gas: Vec
    arb: Vec


def minute_adjoint(codes_ref, work_ref, k: jax.Array, mt: Minute, fee_bar: Vec, R_bar: Vecs,
                   cfg: KernelConfig) -> MinuteGrads:
    """Adjoint of :func:`minute` given ``R_bar`` (the cotangent of ``R_t``) and the reserves entering each
    phase (``work_ref`` rows ``2k``, ``2k + 1``): Phase B, then Phase A, each re-evaluated from its reserves and
    its adjoint taken (fee_path._trajectory_adjoint)."""
    zero = jnp.zeros_like(mt.gamma)
    zeros = tuple(zero for _ in range(cfg.n))

    def body(kk, carry):
        R_bar, gw_prev, gw_cur, inflow, gamma_bar, gas_bar, arb_bar = carry
        ph = 1 - kk
        R_in = tuple(work_ref[2 * k + ph, i] for i in range(cfg.n))
        mk = mt.market(ph)
        st = phase(codes_ref, R_in, mk, cfg)
        inflow = _inflow(st.e, mk.p, inflow)
        e_bar = tuple(R_bar[i] + jnp.where(st.e[i] > 0.0, fee_bar * (1.0 - mt.gamma) * mk.p[i], 0.0)
                      for i in range(cfg.n))
        R_bar, w_bar, gb, sb, ab = phase_adjoint(codes_ref, e_bar, R_in, mk, st, cfg, R_bar)
        gw_prev = tuple(jnp.where(ph == 0, wb, g) for wb, g in zip(w_bar, gw_prev))
        gw_cur = tuple(jnp.where(ph == 1, wb, g) for wb, g in zip(w_bar, gw_cur))
        return R_bar, gw_prev, gw_cur, inflow, gamma_bar + gb, gas_bar + sb, arb_bar + ab

    R_bar, gw_prev, gw_cur, inflow, gamma_bar, gas_bar, arb_bar = lax.fori_loop(
        0, 2, body, (R_bar, zeros, zeros, zero, zero, zero, zero))
    gamma_bar = gamma_bar - fee_bar * inflow  # fees_t = (1 - gamma) inflow
    return MinuteGrads(R_bar, gw_prev, gw_cur, -gamma_bar, gas_bar, arb_bar)


# ----------------------------------------------------------------------------------------------------------
# kernels (one program: one block of trajectories, the whole time axis)


def _forward_kernel(cfg: KernelConfig, codes_ref, r0_ref, w_ref, p_ref, rate_ref, res_ref, fees_ref, ckpt_ref):
    """Reserves ``(T', n)``, fees ``(T',)`` and the checkpoints ``(C, n)`` (reserves after minute ``jK``)."""
    n, K = cfg.n, cfg.checkpoint_every
    R = tuple(r0_ref[i] for i in range(n))
    for i in range(n):
        res_ref[0, i] = R[i]
    fees_ref[0] = jnp.zeros_like(R[0])

    def segment(j, R):
        for i in range(n):
            ckpt_ref[j, i] = R[i]

        def step(k, R):
            t = j * K + 1 + k
            R, fee = minute(codes_ref, R, load_minute(w_ref, p_ref, rate_ref, t, n), cfg)
            for i in range(n):
                res_ref[t, i] = R[i]
            fees_ref[t] = fee
            return R

        return lax.fori_loop(0, K, step, R)

    lax.fori_loop(0, cfg.n_segments, segment, R)


def _reverse_kernel(cfg: KernelConfig, codes_ref, w_ref, p_ref, rate_ref, ckpt_ref, g_res_ref, g_fees_ref,
                    g_r0_ref, g_w_ref, g_rate_ref, work_ref):
    """Vector-Jacobian product: segments backwards, each recomputed from its checkpoint into ``work_ref``
    ``(2K, n)`` (the reserves entering each phase of each minute), then the minute adjoints backwards."""
    n, K, C = cfg.n, cfg.checkpoint_every, cfg.n_segments
    last = cfg.padded_rows - 1
    R_bar = tuple(g_res_ref[last, i] for i in range(n))
    gw_next = tuple(jnp.zeros_like(R_bar[0]) for _ in range(n))  # cotangent of w_t from minute t + 1

    def segment(jj, carry):
        j = C - 1 - jj
        t0 = j * K + 1

        def recompute(k, R):
            return minute(codes_ref, R, load_minute(w_ref, p_ref, rate_ref, t0 + k, n), cfg, work_ref, k)[0]

        lax.fori_loop(0, K, recompute, tuple(ckpt_ref[j, i] for i in range(n)))
        if not cfg.interpret:
            pl_triton.debug_barrier()  # the workspace is read back below (same layout, same threads)

        def back(kk, carry):
            R_bar, gw_next = carry
            k = K - 1 - kk
            t = t0 + k
            mg = minute_adjoint(codes_ref, work_ref, k, load_minute(w_ref, p_ref, rate_ref, t, n), g_fees_ref[t],
                                R_bar, cfg)
            for i in range(n):
                g_w_ref[t, i] = gw_next[i] + mg.w_cur[i]
            g_rate_ref[t, 0], g_rate_ref[t, 1], g_rate_ref[t, 2] = mg.fee, mg.gas, mg.arb
            R_bar = tuple(mg.R_bar[i] + g_res_ref[t - 1, i] for i in range(n))
            return R_bar, mg.w_prev

        return lax.fori_loop(0, K, back, carry)

    R_bar, gw_next = lax.fori_loop(0, C, segment, (R_bar, gw_next))
    zero = jnp.zeros_like(R_bar[0])
    for i in range(n):
        g_w_ref[0, i] = gw_next[i]
        g_r0_ref[i] = R_bar[i]
    for r in range(N_RATES):
        g_rate_ref[0, r] = zero


# ----------------------------------------------------------------------------------------------------------
# pallas_call wrappers on the kernel layout (time/asset-major, trajectories minor)


def _spec(shape: tuple[int, ...], block: int) -> pl.BlockSpec:
    """Whole leading axes, one block of trajectories along the last (minor) axis."""
    lead = len(shape) - 1
    return pl.BlockSpec(shape[:-1] + (block,), lambda b: (0,) * lead + (b,))


def _table_spec(n_rows: int) -> pl.BlockSpec:
    return pl.BlockSpec((n_rows,), lambda b: (0,))


def _compiler_params(cfg: KernelConfig) -> pl_triton.CompilerParams:
    return pl_triton.CompilerParams(num_warps=cfg.num_warps, num_stages=1)


def forward_call(cfg: KernelConfig, codes: jax.Array, r0: jax.Array, w: jax.Array, p: jax.Array,
                 rates: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The forward kernel on the kernel layout: r0 (n, B), w and p (T', n, B), rates (T', 3, B) with
    ``T' = 1 + C K`` and ``B`` a multiple of the block. Returns reserves (T', n, B), fees (T', B) and
    checkpoints (C, n, B)."""
    Tp, n, B = w.shape
    dt = w.dtype
    shapes = ((Tp, n, B), (Tp, B), (cfg.n_segments, n, B))
    return pl.pallas_call(
        partial(_forward_kernel, cfg),
        out_shape=tuple(jax.ShapeDtypeStruct(s, dt) for s in shapes),
        grid=(B // cfg.block,),
        in_specs=[_table_spec(cfg.n_rows), _spec(r0.shape, cfg.block), _spec(w.shape, cfg.block),
                  _spec(p.shape, cfg.block), _spec(rates.shape, cfg.block)],
        out_specs=tuple(_spec(s, cfg.block) for s in shapes),
        interpret=cfg.interpret,
        compiler_params=_compiler_params(cfg),
        name="tfmm_fee_path_forward",
    )(codes, r0, w, p, rates)


def reverse_call(cfg: KernelConfig, codes: jax.Array, w: jax.Array, p: jax.Array, rates: jax.Array,
                 ckpt: jax.Array, g_res: jax.Array, g_fees: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The reverse kernel on the kernel layout (shapes of :func:`forward_call`; g_res (T', n, B), g_fees
    (T', B)). Returns g_r0 (n, B), g_w (T', n, B), g_rates (T', 3, B); the workspace is dropped."""
    Tp, n, B = w.shape
    dt = w.dtype
    shapes = ((n, B), (Tp, n, B), (Tp, N_RATES, B), (2 * cfg.checkpoint_every, n, B))
    g_r0, g_w, g_rates, _ = pl.pallas_call(
        partial(_reverse_kernel, cfg),
        out_shape=tuple(jax.ShapeDtypeStruct(s, dt) for s in shapes),
        grid=(B // cfg.block,),
        in_specs=[_table_spec(cfg.n_rows)] + [_spec(x.shape, cfg.block) for x in (w, p, rates, ckpt, g_res, g_fees)],
        out_specs=tuple(_spec(s, cfg.block) for s in shapes),
        interpret=cfg.interpret,
        compiler_params=_compiler_params(cfg),
        name="tfmm_fee_path_reverse",
    )(codes, w, p, rates, ckpt, g_res, g_fees)
    return g_r0, g_w, g_rates


# ----------------------------------------------------------------------------------------------------------
# batched entry points: (B, ...) arrays, one dtype


def _pad_axis(x: jax.Array, axis: int, size: int, mode: str) -> jax.Array:
    """``x`` padded at the end of ``axis`` to ``size`` ("edge": repeat the last entry; "zero")."""
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, mode="edge") if mode == "edge" else jnp.pad(x, widths)


def _to_kernel(x: jax.Array, Tp: int | None, Bp: int, mode: str = "edge") -> jax.Array:
    """(B, [T,] ...) -> padded kernel layout ([T',] ..., B')."""
    x = _pad_axis(x, 0, Bp, mode)
    if Tp is not None:
        x = _pad_axis(x, 1, Tp, mode)
    return jnp.moveaxis(x, 0, -1)


def _from_kernel(x: jax.Array, B: int, T: int | None) -> jax.Array:
    """Kernel layout ([T',] ..., B') -> (B, [T,] ...)."""
    x = jnp.moveaxis(x, -1, 0)[:B]
    return x if T is None else x[:, :T]


def block_for(B: int, block: int | None) -> int:
    """Trajectories per program: ``block`` (default 32), at most the batch rounded up to a power of two."""
    limit = 1 << max(0, (B - 1).bit_length())
    return min(DEFAULT_BLOCK if block is None else block, limit)


def _setup(settings: FeePathSettings, B: int, T: int, checkpoint_every: int | None, block: int | None,
           interpret: bool | None) -> tuple[KernelConfig, jax.Array, int]:
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    cfg = kernel_config(settings, T, checkpoint_every, block_for(B, block), interpret)
    Bp = -(-B // cfg.block) * cfg.block
    return cfg, jnp.asarray(row_codes(settings)), Bp


def _check(settings: FeePathSettings, weights: jax.Array, prices: jax.Array, rates: jax.Array,
           **others: tuple[jax.Array, tuple[int, ...]]) -> tuple[int, int, int]:
    """(B, T, n) of weights (B, T, n); prices and rates (B, T, 3) must agree, and each of ``others`` (name:
    (array, shape)) have its shape."""
    n = settings.n_assets
    if weights.ndim != 3 or weights.shape[2] != n:
        raise ValueError(f"fee path (Pallas): weights need shape (B, T, {n}); got {weights.shape}")
    B, T = weights.shape[:2]
    expected = {"prices": (prices, (B, T, n)), "rates": (rates, (B, T, N_RATES)), **others}
    for name, (x, shape) in expected.items():
        if x.shape != shape:
            raise ValueError(f"fee path (Pallas): {name} needs shape {shape} (weights {weights.shape}); got {x.shape}")
    return B, T, n


def forward(settings: FeePathSettings, r0: jax.Array, weights: jax.Array, prices: jax.Array, rates: jax.Array, *,
            checkpoint_every: int | None = None, block: int | None = None, interpret: bool | None = None
            ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Reserves and fees of a batch of pools with fees arbitraged every minute (math.md 2.5).

    r0 (B, n) tokens; weights, prices (B, T, n); rates (B, T, 3): fee, gas (USD), arb_fee per row (row 0 unused);
    one dtype, the dtype computed in. Returns ``(reserves (B, T, n), fees (B, T), checkpoints (B, C, n))``, row
    0 the initial state; the checkpoints (every ``checkpoint_every`` minutes) feed :func:`backward`.
    ``interpret`` None: interpreted unless JAX's default backend is a GPU."""
    B, T, n = _check(settings, weights, prices, rates, r0=(r0, weights.shape[:1] + weights.shape[2:]))
    if B == 0 or T <= 1:
        return jnp.broadcast_to(r0[:, None], (B, T, n)), jnp.zeros((B, T), r0.dtype), jnp.zeros((B, 0, n), r0.dtype)
    cfg, codes, Bp = _setup(settings, B, T, checkpoint_every, block, interpret)
    Tp = cfg.padded_rows
    res, fees, ckpt = forward_call(cfg, codes, _to_kernel(r0, None, Bp), _to_kernel(weights, Tp, Bp),
                                   _to_kernel(prices, Tp, Bp), _to_kernel(rates, Tp, Bp))
    return _from_kernel(res, B, T), _from_kernel(fees, B, T), _from_kernel(ckpt, B, None)


def backward(settings: FeePathSettings, weights: jax.Array, prices: jax.Array, rates: jax.Array,
             checkpoints: jax.Array, g_reserves: jax.Array, g_fees: jax.Array, *, checkpoint_every: int | None = None,
             block: int | None = None, interpret: bool | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Vector-Jacobian product of :func:`forward` (the same ``checkpoint_every``) with respect to r0, weights and
    rates, given the cotangents of reserves (B, T, n) and fees (B, T): ``(g_r0 (B, n), g_weights (B, T, n),
    g_rates (B, T, 3))``. Exact mode is pathwise (choices fixed); prices are data."""
    B, T, n = _check(settings, weights, prices, rates, g_reserves=(g_reserves, weights.shape),
                     g_fees=(g_fees, weights.shape[:2]))
    if B == 0 or T <= 1:
        return g_reserves[:, 0], jnp.zeros_like(weights), jnp.zeros_like(rates)
    cfg, codes, Bp = _setup(settings, B, T, checkpoint_every, block, interpret)
    Tp = cfg.padded_rows
    g_r0, g_w, g_rates = reverse_call(
        cfg, codes, _to_kernel(weights, Tp, Bp), _to_kernel(prices, Tp, Bp), _to_kernel(rates, Tp, Bp),
        _to_kernel(checkpoints, None, Bp), _to_kernel(g_reserves, Tp, Bp, "zero"), _to_kernel(g_fees, Tp, Bp, "zero"))
    return _from_kernel(g_r0, B, None), _from_kernel(g_w, B, T), _from_kernel(g_rates, B, T)


__all__ = ["KernelConfig", "row_codes", "default_checkpoint_every", "kernel_config", "forward", "backward",
           "forward_call", "reverse_call", "block_for"]
