"""The fee path as Triton GPU kernels for torch, forward and checkpointed reverse.

The same pool step as the Numba kernel :mod:`tfmm.backends.kernels.fee_path` (math.md 2.3-2.5; the formulas of
the candidates, validity, selection, the gate, zero-fee minutes and the hand-written adjoint are in that module's
docstring and are not repeated here), with the same inputs, outputs and derivative conventions, so that
:func:`forward` and :func:`backward` are drop-in replacements of its ``forward`` and ``backward`` for torch
tensors on a CUDA device. Units: reserves in tokens, prices in USD per token, gas and profits in USD, fee rates
dimensionless, time in minutes. The math constants (``INVARIANT_TOLERANCE``, ``SCREEN_FACTOR``, ``SERIES_LIMIT``,
``LOG_FLOOR``, ``INV_E``, ``SELECTIONS``) and the candidate table (:func:`~tfmm.backends.kernels.fee_path.
candidate_table`: the signature rows, then the zero-fee row) come from that module.

Layout. A program handles ``BLOCK`` trajectories, one per row of its register blocks; every quantity has rank 3,
``[BLOCK, rows, assets]``:

- per trajectory ``[BLOCK, 1, 1]`` (fee, gas, margin, gate), per asset ``[BLOCK, 1, NP]`` (reserves, weights,
  prices, trades), ``NP`` the next power of two >= n (n <= 8), the padding columns masked;
- per candidate ``[BLOCK, RC, NP]``: a chunk of ``RC`` rows of the candidate table is evaluated at once (sums
  over assets are block reductions), and the chunks are looped over: statically (``tl.static_range``, the
  table's masks loaded once per launch) up to four chunks, at run time beyond (e.g. the 181 rows of five assets'
  "all" set, masks read per chunk). The selection is folded chunk by chunk: the first maximum, and in smooth
  mode an online (running-maximum) softmax. n = 2 (3 rows) and n = 3 "all" (13 rows) are one chunk.

The table is the Numba kernel's (active, plus and reference-column masks as int8, padded rows inert). The
softmax's terms are the Numba kernel's (``exp(profit / tau - max)``); sums over assets and candidates are
ordered differently, which changes rounding only. ``expm1`` is computed from ``exp`` and ``log`` by Kahan's
method (``(u - 1) x / log u``, ``u = exp(x)``, for ``|x| < 0.5``; ``exp(x) - 1`` beyond), accurate to a few ulps,
because Triton's interpreter has no ``libdevice``: the code the tests run is the code the GPU runs. Default
launch: about 256 candidate-asset elements per program (n = 2: 32 trajectories, n = 3 "all": 4), 4 warps;
untuned.

Forward (:func:`forward`): per trajectory, ``t = 1 .. T-1``, Phase A then Phase B, as the Numba kernel. Besides
its outputs (reserves ``(B, T, n)``, fees ``(B, T)``) it stores **checkpoints**: the reserves after minutes
``0, K, 2K, ...`` below ``T - 1``, ``(B, ceil((T - 1) / K), n)``.

Reverse (:func:`backward`): segments of ``K`` minutes, the last one first. For a segment the kernel recomputes
its minutes from the checkpoint with the forward's own code into a per-trajectory scratch of ``K`` rows: the
reserves entering each minute and after its Phase A and, per phase, the record its adjoint needs (exact mode:
the executed candidate row; smooth mode: the selected trade, gate, first-maximum row, running maximum, softmax
total, softmax-mean profit and trade). Then it runs the step adjoints backward through the scratch (Phase B,
then Phase A, as the Numba kernel): exact mode and the hard choice re-evaluate the chosen row only; softmax and
straight-through re-evaluate the phase's candidates, chunk by chunk, for the softmax's adjoint. The recomputed
states, gates and choices are the forward's bit for bit (the same code; fused multiply-add contraction is
disabled in both kernels), so the gradients do not depend on ``K`` at all. Memory per trajectory beyond inputs
and outputs: ``O(T / K)`` checkpoints plus ``O(K)`` scratch (:func:`memory_per_trajectory`), instead of the Numba
kernel's ``(T, n)`` Phase A reserves and ``(T, 2)`` choices; ``K = ceil(sqrt(T))`` by default
(:func:`default_checkpoint_every`). At ``T = 43,200`` (30 days), n = 2, float64: ``K = 208``; checkpoints
208 x 2 x 8 = 3,328 bytes; scratch 208 x (2 x 2 x 8 + 2 x 4) = 8,320 bytes in exact mode, 208 x (6 x 2 x 8 +
8 x 8 + 2 x 4) = 34,944 bytes in smooth mode (the Numba kernel's residuals: 1,036,800 bytes). The price is one
more forward pass inside the reverse.

Dtypes. The kernels compute in the inputs' promoted dtype: float64, or float32 (anything narrower is computed
in float32). float64 on the GPU is IEEE (``div.rn``, ``sqrt.rn``, libdevice ``exp``/``log``) and differs
from the Numba kernel by rounding only (in the interpreter: reserves to ~5e-16 relative, gradients to ~3e-13
of their largest entry over tens of minutes). The Numba kernel computes in float64 even for float32 inputs
(float32 results are float64 results rounded once); here float32 inputs are computed in float32. The step's
trade is ``R expm1(-u)`` with ``u`` a difference of log-ratios of size ``|log(y_i / y_r)|``: its absolute error
is ~``eps_32 |log(y_i / y_r)| R``, small against the reserves but up to ~1e-5 of the trade itself when ``u``
is small. Measured in the interpreter (numpy's float32 ``exp``/``log``) over 10-30 minutes: reserves 2e-7
relative, fees 4e-6 of the largest, gradients 5e-7 (exact) and 2e-4 (smooth: the gate's and the softmax's
arguments are USD over temperatures) of the largest entry. On the GPU float32 ``exp``, ``sqrt`` and division
are Triton's fast ones (``ex2.approx``, ``sqrt.approx``, ``div.full``: <= 2 ulp), a few times these errors.
Exact-mode gates and choices whose margin is within the float32 rounding of 0 can go the other way (a trade of
about ``gas`` USD more or less), and fee rates below ``2^-24`` round ``gamma = 1 - fee`` to 1 (the zero-fee
trade). Train and evaluate in float64; float32 is for throughput studies.

Triton is imported lazily (:func:`available` does not import it): the device functions below are plain Python
until the first launch, which imports Triton and wraps the kernels and device functions in ``triton.jit``.
With ``TRITON_INTERPRET=1`` in the environment at that moment Triton's interpreter runs the kernels on CPU
tensors (the tests); then the device functions stay plain Python functions called from the interpreted kernels,
because an interpreted device-function call re-patches ``triton.language`` (~3 ms a call, most of a launch).
For the same reason the reductions are ``tl.reduce`` with the standard combine functions rather than
``tl.sum``, which is a device function of Triton's own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from functools import lru_cache
from types import SimpleNamespace
from typing import Iterator, NamedTuple

import numpy as np
import torch

from tfmm.backends.kernels import fee_path as cpu
from tfmm.backends.kernels.fee_path import FeePathSettings, candidate_table
from tfmm.backends.torch.kernel_support import sum_to_shape

Tensor = torch.Tensor

MAX_ASSETS = 8
MAX_ROWS_PER_CHUNK = 16

# module-level constants of the device functions, made tl.constexpr globals when Triton is loaded
_CONSTANTS = {
    "_LOG_FLOOR": cpu.LOG_FLOOR,
    "_INV_E": cpu.INV_E,
    "_SCREEN_BOUND": cpu.SCREEN_FACTOR * cpu.INVARIANT_TOLERANCE,
    "_SERIES_LIMIT": cpu.SERIES_LIMIT,
    "_C6": 1.0 / 6.0,
    "_C24": 1.0 / 24.0,
    "_KAHAN_LIMIT": 0.5,
    "_NEG_INF": float("-inf"),
    "_NO_ROW": 2**30,
    "_STATIC_CHUNKS": 4,  # candidate chunks unrolled with tl.static_range; a runtime loop beyond
}


# ----------------------------------------------------------------------------------------------------------
# device functions (wrapped in triton.jit by _kernels(); ``tl`` is bound there)
#
# Shapes: every tensor has rank 3, ``[BLOCK, rows, assets]``: a trajectory's scalar is [B, 1, 1], its asset
# vector [B, 1, NP]; a chunk's candidate scalars are [B, RC, 1], their trades [B, RC, NP]. Reductions keep
# their axis, so that nothing is ever re-expanded.


def _sum(x, axis: tl.constexpr):
    """Sum over ``axis``, kept (``tl.reduce`` with the standard combine function: one numpy reduction in the
    interpreter, where ``tl.sum`` would be a device-function call of its own)."""
    return tl.reduce(x, axis, _SUM_COMBINE, keep_dims=True)


def _max(x, axis: tl.constexpr):
    """Maximum over ``axis``, kept (as :func:`_sum`)."""
    return tl.reduce(x, axis, _MAX_COMBINE, keep_dims=True)


def _min(x, axis: tl.constexpr):
    """Minimum over ``axis``, kept (as :func:`_sum`)."""
    return tl.reduce(x, axis, _MIN_COMBINE, keep_dims=True)


def _any(mask, axis: tl.constexpr):
    """Whether any entry of a boolean tensor is set along ``axis``, kept."""
    return _max(tl.where(mask, 1, 0), axis) > 0


def _expm1(x):
    """``expm1(x)`` elementwise from ``exp`` and ``log`` (Kahan): exact ``u - 1`` times ``x / log u``."""
    u = tl.exp(x)
    um1 = u - 1.0
    near = (tl.abs(x) < _KAHAN_LIMIT) & (um1 != 0.0)
    lg = tl.log(tl.where(near, u, 2.0))
    return tl.where(near, um1 * x / lg, tl.where(um1 == 0.0, x, um1))


def _phi(u, em):
    """``expm1(u) - u`` given ``em = expm1(-u)``, as the Numba kernel's ``_phi`` (series below SERIES_LIMIT)."""
    series = u * u * (0.5 + u * (_C6 + u * (_C24 + u / 120.0)))
    return tl.where(tl.abs(u) < _SERIES_LIMIT, series, -em / (1.0 + em) - u)


def _rates(fee):
    """(gamma, log gamma, 1 - gamma, zero-fee mask) of the fee [B, 1, 1], as the Numba kernel forms them."""
    gamma = 1.0 - fee
    return gamma, tl.log(gamma), 1.0 - gamma, gamma == 1.0


def _ratios(R, w, p, first):
    """``pw = p / w`` and ``z_i = log((R_i / R_0)(pw_i / pw_0))`` of [B, 1, NP] rows (``first``: column 0)."""
    pw = p / w
    R0 = _sum(tl.where(first, R, 0.0), 2)
    pw0 = _sum(tl.where(first, pw, 0.0), 2)
    return pw, tl.where(first, 0.0, tl.log((R / R0) * (pw / pw0)))


def _table_rows(ch, table, cols, S1: tl.constexpr, RC: tl.constexpr, NP: tl.constexpr):
    """Rows ``ch * RC ..`` of the candidate table (``table[:3]``: its active, plus and reference-column
    masks, int8 (rows, NP)): (row index [1, RC, 1], the three masks [1, RC, NP], signature rows, the
    zero-fee row [1, RC, 1])."""
    rows = ch * RC + tl.arange(0, RC)[None, :, None]
    at = rows * NP + cols
    return (rows, tl.load(table[0] + at) != 0, tl.load(table[1] + at) != 0, tl.load(table[2] + at) != 0,
            rows < S1 - 1, rows == S1 - 1)


def _load_table(act_ptr, pls_ptr, ref_ptr, cols, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr,
                NP: tl.constexpr):
    """The candidate table as the phases use it: (the three mask pointers, the chunks of
    :func:`_table_rows`, loaded once when they are unrolled, else an empty tuple: read per chunk)."""
    pointers = (act_ptr, pls_ptr, ref_ptr)
    chunks = ()
    if NCH <= _STATIC_CHUNKS:
        for ch in tl.static_range(NCH):
            chunks = chunks + (_table_rows(ch, pointers, cols, S1, RC, NP),)
    return act_ptr, pls_ptr, ref_ptr, chunks


def _chunk(ch, table, cols, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr, NP: tl.constexpr):
    """Chunk ``ch`` of the table (:func:`_load_table`)."""
    if NCH <= _STATIC_CHUNKS:
        rows = table[3][ch]
    else:
        rows = _table_rows(ch, table, cols, S1, RC, NP)
    return rows


def _gathered_row(row, table, cols, NP: tl.constexpr):
    """One table row per trajectory (``row`` [B, 1, 1]): masks [B, 1, NP]."""
    at = row * NP + cols
    return tl.load(table[0] + at) != 0, tl.load(table[1] + at) != 0, tl.load(table[2] + at) != 0


def _selectable(tab, zero_fee):
    """[B, RC, 1]: the signature rows where the fee is > 0, the zero-fee row (the last) where it is 0."""
    return tl.where(zero_fee, tab[5], tab[4])


def _candidate(R, w, pw, z, gamma, log_gamma, omg, act, pls, refm):
    """A chunk of candidates at once (fee_path._candidate). R, w, pw, z [B, 1, NP]; gamma, log_gamma,
    omg = 1 - gamma [B, 1, 1]; act, pls, refm [., RC, NP]. Returns (profit USD, scale C USD, S_A, valid
    [B, RC, 1]; lr, u, em, wh, phi, delta [B, RC, NP]); an invalid candidate has profit and trade 0. ``lr``,
    ``u`` and ``phi`` are left unmasked at inactive assets (finite, weighted by ``wh = 0`` or masked where
    used). The operands are broadcast to [B, RC, NP] once, and 0 and 1 made once, because the interpreter
    spends an operation on each implicit broadcast and each scalar constant (no cost on the GPU)."""
    R, act = tl.broadcast(R, act)
    w, pw, z = tl.broadcast_to(w, R.shape), tl.broadcast_to(pw, R.shape), tl.broadcast_to(z, R.shape)
    pls, refm = tl.broadcast_to(pls, R.shape), tl.broadcast_to(refm, R.shape)
    zero, one = tl.full(R.shape, 0, R.dtype), tl.full(R.shape, 1, R.dtype)
    g = tl.where(pls, tl.broadcast_to(gamma, R.shape), one)
    zl = z - tl.where(pls, tl.broadcast_to(log_gamma, R.shape), zero)  # log y_i / y_0 with g_i
    s_a = _sum(tl.where(act, w, zero), 2)
    lr = zl - _sum(tl.where(refm, zl, zero), 2)  # lr_i = zl_i - zl_r
    wh = tl.where(act, w / s_a, zero)
    u = lr - _sum(wh * lr, 2)
    # direction screen: legs against sigma bound the fee-adjusted invariant's loss from below
    bound = _sum(tl.where(act & tl.where(pls, u > zero, u < zero), w * tl.minimum(tl.abs(u), one), zero), 2)
    screened = omg * bound * _INV_E > _SCREEN_BOUND
    em = tl.where(act, _expm1(-u), zero)
    d = R * em / g
    phi = _phi(u, em)
    phi_sum = _sum(tl.where(act, wh * phi, zero), 2)
    positive = R + d > zero
    against = act & positive & tl.where(pls, d < zero, d > zero)
    c = -tl.broadcast_to(omg, R.shape) * tl.abs(d) / tl.where(against, R + g * d, one)
    log_change = _sum(tl.where(against, w * (c - 0.5 * c * c), zero), 2)
    scale = _sum(tl.where(refm, R * pw / g * (one + em), zero), 2) * s_a  # C = y_r exp(m), exp(m) = 1 + em_r
    valid = (~screened) & (~_any(act & (~positive), 2)) & (log_change >= _LOG_FLOOR)
    profit = tl.where(valid, scale * phi_sum, 0.0)
    return profit, scale, s_a, valid, lr, u, em, wh, phi, tl.where(valid, d, zero)


def _candidate_adjoint(on, d_bar, profit_bar, R, w, gamma, act, pls, lr, em, wh, phi, delta, scale, s_a):
    """Adjoint of the candidates where ``on`` [B, RC, 1] (fee_path._candidate_adjoint), given ``d_bar``
    [B, RC, NP] and ``profit_bar`` [B, RC|1, 1]; the rest as :func:`_candidate` returns them. Returns the
    contributions summed over the rows: (R_bar [B, 1, NP], w_bar [B, 1, NP], gamma_bar [B, 1, 1]).
    ``expm1(u) = -em / (1 + em)`` (a few ulps, as accurate as a second ``expm1``). Operands broadcast once,
    as in :func:`_candidate`."""
    R, w = tl.broadcast_to(R, lr.shape), tl.broadcast_to(w, lr.shape)
    act, pls = tl.broadcast_to(act, lr.shape), tl.broadcast_to(pls, lr.shape)
    zero, one = tl.full(lr.shape, 0, lr.dtype), tl.full(lr.shape, 1, lr.dtype)
    g = tl.where(pls, tl.broadcast_to(gamma, lr.shape), one)
    phi_sum = _sum(tl.where(act, wh * phi, zero), 2)
    pbs = tl.broadcast_to(profit_bar * scale, lr.shape)
    ub = tl.where(act, -d_bar * (R / g) * (one + em) + pbs * wh * (-em / (one + em)), zero)
    logc_bar = tl.broadcast_to(profit_bar * phi_sum * scale - _sum(ub, 2), lr.shape)
    ab = ub + logc_bar * wh
    wb = pbs * phi + logc_bar * lr
    sa_bar = _sum(tl.where(act, ab - wb * wh, zero), 2) / s_a
    live = tl.broadcast_to(on, lr.shape) & act
    r_bar = tl.where(live, d_bar * em / g + ab / R, zero)
    w_bar = tl.where(live, (-ab / w + wb / s_a) + sa_bar, zero)
    g_bar = _sum(tl.where(act & pls, -d_bar * delta / g - ab / g, zero), 2)
    return _sum(r_bar, 1), _sum(w_bar, 1), _sum(tl.where(on, g_bar, 0.0), 1)


def _select_start(R, x):
    """Selection state before the first chunk: (any row seen, first-maximum row, its profit, its validity
    [B, 1, 1], its trade [B, 1, NP], running max of profit / tau_sel, softmax total, softmax-weighted profit
    [B, 1, 1] and trade [B, 1, NP]); ``x`` any [B, 1, 1] float tensor."""
    zero = tl.full(x.shape, 0, x.dtype)
    none = tl.full(x.shape, 0, tl.int1)
    zeros = tl.full(R.shape, 0, R.dtype)
    return none, tl.full(x.shape, 0, tl.int32), zero, none, zeros, zero, zero, zero, zeros


def _select_chunk(state, rows, sel, profit, valid, delta, MIXED: tl.constexpr, TAU_SEL: tl.constexpr):
    """Folds a chunk of candidates (rows [1, RC, 1]; sel, profit, valid [B, RC, 1]; delta [B, RC, NP]) into
    the selection state: the first maximum over the selectable rows and, when MIXED, the online softmax."""
    have, best, best_p, best_valid, best_d, m, tot, acc_p, acc_d = state
    c_max = _max(tl.where(sel, profit, _NEG_INF), 1)
    c_has = _any(sel, 1)
    c_row = _min(tl.where(sel & (profit == c_max), rows, _NO_ROW), 1)
    hit = rows == c_row
    upd = c_has & ((~have) | (c_max > best_p))
    best = tl.where(upd, c_row, best)
    best_p = tl.where(upd, c_max, best_p)
    best_valid = tl.where(upd, _any(hit & valid, 1), best_valid)
    best_d = tl.where(upd, _sum(tl.where(hit, delta, 0.0), 1), best_d)
    if MIXED:
        m_new = tl.where(have, tl.maximum(m, c_max / TAU_SEL), c_max / TAU_SEL)
        e = tl.where(sel, tl.exp(profit / TAU_SEL - m_new), 0.0)
        alpha = tl.where(have, tl.exp(m - m_new), 0.0)
        tot = tl.where(c_has, tot * alpha + _sum(e, 1), tot)
        acc_p = tl.where(c_has, acc_p * alpha + _sum(e * profit, 1), acc_p)
        acc_d = tl.where(c_has, acc_d * alpha + _sum(e * delta, 1), acc_d)
        m = tl.where(c_has, m_new, m)
    return have | c_has, best, best_p, best_valid, best_d, m, tot, acc_p, acc_d


def _phase_chunk(ch, state, R, w, pw, z, gamma, log_gamma, omg, zero_fee, table, cols, S1: tl.constexpr,
                 RC: tl.constexpr, NCH: tl.constexpr, NP: tl.constexpr, MIXED: tl.constexpr,
                 TAU_SEL: tl.constexpr):
    """One chunk of a phase's candidates folded into the selection state."""
    tab = _chunk(ch, table, cols, S1, RC, NCH, NP)
    cand = _candidate(R, w, pw, z, gamma, log_gamma, omg, tab[1], tab[2], tab[3])
    return _select_chunk(state, tab[0], _selectable(tab, zero_fee), cand[0], cand[3], cand[9], MIXED, TAU_SEL)


def _phase(R, w, p, rates, gas, arb, table, cols, S1: tl.constexpr, RC: tl.constexpr,
           NCH: tl.constexpr, NP: tl.constexpr, N: tl.constexpr, SMOOTH: tl.constexpr, SELECTION: tl.constexpr,
           TAU_GATE: tl.constexpr, TAU_SEL: tl.constexpr, EPS: tl.constexpr):
    """One arbitrage phase from reserves R [B, 1, NP] under weights w at prices p (fee_path._phase): returns
    (executed trade [B, 1, NP], selected trade before the gate [B, 1, NP], gate [B, 1, 1], selection state).
    ``rates``: :func:`_rates` of the minute's fee."""
    gamma, log_gamma, omg, zero_fee = rates
    pw, z = _ratios(R, w, p, cols == 0)
    state = _select_start(R, gamma)
    if NCH <= _STATIC_CHUNKS:
        for ch in tl.static_range(NCH):
            state = _phase_chunk(ch, state, R, w, pw, z, gamma, log_gamma, omg, zero_fee, table, cols, S1, RC, NCH,
                                 NP, SMOOTH and SELECTION != 0, TAU_SEL)
    else:
        for ch in range(NCH):
            state = _phase_chunk(ch, state, R, w, pw, z, gamma, log_gamma, omg, zero_fee, table, cols, S1, RC, NCH,
                                 NP, SMOOTH and SELECTION != 0, TAU_SEL)
    best_p, best_d, tot, acc_p, acc_d = state[2], state[4], state[6], state[7], state[8]
    if SMOOTH and SELECTION == 1:  # softmax
        trade = acc_d / tot
        sel_profit = acc_p / tot
    elif SMOOTH and SELECTION == 2:  # straight-through: the one-hot in value, q_best = soft + (1 - soft)
        soft = 1.0 / tot  # the best row's softmax weight, exp(0) / total
        q_best = soft + (1.0 - soft)
        trade = q_best * best_d
        sel_profit = q_best * best_p
    else:
        trade = best_d
        sel_profit = best_p
    x = trade * p
    if SMOOTH:
        cost = _sum(tl.where(cols < N, tl.sqrt(x * x + EPS * EPS), 0.0), 2)
        margin = sel_profit - gas - 0.5 * arb * cost
        gate = 1.0 / (1.0 + tl.exp(-margin / TAU_GATE))
        out = gate * trade
    else:
        margin = sel_profit - gas - 0.5 * arb * _sum(tl.abs(x), 2)
        gate = (margin >= 0.0).to(margin.dtype)
        out = tl.where(margin >= 0.0, trade, 0.0)
    return out, trade, gate, state


def _minute(R, w_prev, w_cur, p, fee, gas, arb, table, cols, S1: tl.constexpr,
            RC: tl.constexpr, NCH: tl.constexpr, NP: tl.constexpr, N: tl.constexpr, SMOOTH: tl.constexpr,
            SELECTION: tl.constexpr, TAU_GATE: tl.constexpr, TAU_SEL: tl.constexpr, EPS: tl.constexpr):
    """One minute from R [B, 1, NP]: (reserves after Phase A, after Phase B, fees USD [B, 1, 1], and per
    phase the record of :func:`_phase` (selected trade, gate, selection state))."""
    rates = _rates(fee)
    out_a, trade_a, gate_a, st_a = _phase(R, w_prev, p, rates, gas, arb, table, cols, S1, RC, NCH,
                                          NP, N, SMOOTH, SELECTION, TAU_GATE, TAU_SEL, EPS)
    R_a = R + out_a
    out_b, trade_b, gate_b, st_b = _phase(R_a, w_cur, p, rates, gas, arb, table, cols, S1, RC,
                                          NCH, NP, N, SMOOTH, SELECTION, TAU_GATE, TAU_SEL, EPS)
    inflow = _sum(tl.maximum(out_a, 0.0) * p, 2) + _sum(tl.maximum(out_b, 0.0) * p, 2)
    fees = rates[2] * inflow  # (1 - gamma) inflow
    return R_a, R_a + out_b, fees, (trade_a, gate_a, st_a), (trade_b, gate_b, st_b)


def _executed_row(gate, state):
    """Exact mode's record of a phase: the executed row where a valid trade went through, else -1."""
    return tl.where((gate == 1.0) & state[3], state[1], -1)


def _gate_adjoint(e_bar, trade, gate, p, arb, cols, N: tl.constexpr, TAU_GATE: tl.constexpr,
                  EPS: tl.constexpr):
    """Smooth gate and smooth-abs cost: (adjoint of the selected trade [B, 1, NP], profit_bar, gas_bar,
    arb_bar [B, 1, 1]) given the adjoint of the executed trade ``e_bar``."""
    m_bar = _sum(e_bar * trade, 2) * gate * (1.0 - gate) / TAU_GATE
    x = trade * p
    sabs = tl.sqrt(x * x + EPS * EPS)
    cost = _sum(tl.where(cols < N, sabs, 0.0), 2)
    t_bar = gate * e_bar + tl.where(cols < N, -m_bar * 0.5 * arb * (x / sabs) * p, 0.0)
    return t_bar, m_bar, -m_bar, -m_bar * 0.5 * cost


def _adjoint_chunk(ch, acc, R, w, pw, z, gamma, log_gamma, omg, zero_fee, best, m, tot, t_bar, profit_bar, q_mean,
                   gate_on, table, cols, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr,
                   NP: tl.constexpr, SELECTION: tl.constexpr, TAU_SEL: tl.constexpr):
    """Softmax / straight-through adjoint of one chunk of candidates (fee_path._phase_adjoint, mixed
    branch): recomputes the chunk and adds its candidates' adjoints to ``acc`` = (R_bar, w_bar, gamma_bar)."""
    tab = _chunk(ch, table, cols, S1, RC, NCH, NP)
    rows, act, pls = tab[0], tab[1], tab[2]
    profit, scale, s_a, valid, lr, u, em, wh, phi, delta = _candidate(R, w, pw, z, gamma, log_gamma, omg, act, pls,
                                                                      tab[3])
    sel = _selectable(tab, zero_fee)
    soft = tl.where(sel, tl.exp(profit / TAU_SEL - m) / tot, 0.0)
    if SELECTION == 1:
        q = soft
    else:
        q = soft + (tl.where(rows == best, 1.0, 0.0) - soft)
    qb = profit_bar * profit + _sum(t_bar * delta, 2)
    pb = q * profit_bar + soft * (qb - q_mean) / TAU_SEL
    d_bar = q * t_bar
    on = gate_on & sel & valid & ((pb != 0.0) | _any(d_bar != 0.0, 2))
    r_bar, w_bar, g_bar = _candidate_adjoint(on, d_bar, pb, R, w, gamma, act, pls, lr, em, wh, phi, delta, scale, s_a)
    return acc[0] + r_bar, acc[1] + w_bar, acc[2] + g_bar


def _phase_adjoint(R, w, p, rates, arb, record, fee_bar, R_bar, table, cols, S1: tl.constexpr,
                   RC: tl.constexpr, NCH: tl.constexpr, NP: tl.constexpr, N: tl.constexpr, SMOOTH: tl.constexpr,
                   SELECTION: tl.constexpr, TAU_GATE: tl.constexpr, TAU_SEL: tl.constexpr, EPS: tl.constexpr):
    """Adjoint of one phase (fee_path._phase_adjoint) from its input reserves R and its forward ``record``
    (exact: the executed row, or -1; smooth: (selected trade, gate, first-maximum row, running max, softmax
    total, softmax-mean profit and trade)), given ``R_bar``, the adjoint of the phase's output reserves,
    and ``fee_bar``, the minute's fee cotangent. Returns (adjoint of the input reserves, of w [B, 1, NP],
    gamma_bar, gas_bar, arb_bar [B, 1, 1], the executed trade [B, 1, NP])."""
    gamma, log_gamma, omg, zero_fee = rates
    zero = tl.full(gamma.shape, 0, gamma.dtype)
    fee_in = fee_bar * omg * p  # d fees / d e_i where e_i > 0
    pw, z = _ratios(R, w, p, cols == 0)
    if SMOOTH:
        trade, gate, best, m, tot, mean_p, mean_d = record
        e = gate * trade
        e_bar = R_bar + tl.where(e > 0.0, fee_in, 0.0)
        t_bar, profit_bar, gas_bar, arb_bar = _gate_adjoint(e_bar, trade, gate, p, arb, cols, N, TAU_GATE, EPS)
        gate_on = gate != 0.0
        gas_bar = tl.where(gate_on, gas_bar, 0.0)
        arb_bar = tl.where(gate_on, arb_bar, 0.0)
        if SELECTION == 0:  # hard choice: the adjoint of the chosen candidate alone
            act, pls, refm = _gathered_row(best, table, cols, NP)
            profit, scale, s_a, valid, lr, u, em, wh, phi, delta = _candidate(R, w, pw, z, gamma, log_gamma, omg,
                                                                              act, pls, refm)
            on = gate_on & valid & ((profit_bar != 0.0) | _any(t_bar != 0.0, 2))
            r_bar, w_bar, gamma_bar = _candidate_adjoint(on, t_bar, profit_bar, R, w, gamma, act, pls, lr, em, wh, phi,
                                                         delta, scale, s_a)
        else:
            q_mean = profit_bar * mean_p + _sum(t_bar * mean_d, 2)
            acc = (tl.full(R.shape, 0, R.dtype), tl.full(R.shape, 0, R.dtype), zero)
            if NCH <= _STATIC_CHUNKS:
                for ch in tl.static_range(NCH):
                    acc = _adjoint_chunk(ch, acc, R, w, pw, z, gamma, log_gamma, omg, zero_fee, best, m, tot, t_bar,
                                         profit_bar, q_mean, gate_on, table, cols, S1, RC, NCH, NP,
                                         SELECTION, TAU_SEL)
            else:
                for ch in range(NCH):
                    acc = _adjoint_chunk(ch, acc, R, w, pw, z, gamma, log_gamma, omg, zero_fee, best, m, tot, t_bar,
                                         profit_bar, q_mean, gate_on, table, cols, S1, RC, NCH, NP,
                                         SELECTION, TAU_SEL)
            r_bar, w_bar, gamma_bar = acc
    else:  # exact: replay the executed row only (pathwise derivative, the choice held fixed)
        taken = record >= 0
        act, pls, refm = _gathered_row(tl.maximum(record, 0), table, cols, NP)
        profit, scale, s_a, valid, lr, u, em, wh, phi, delta = _candidate(R, w, pw, z, gamma, log_gamma, omg, act,
                                                                          pls, refm)
        e = tl.where(taken, delta, 0.0)
        t_bar = tl.where(taken, R_bar + tl.where(e > 0.0, fee_in, 0.0), 0.0)
        on = taken & valid & _any(t_bar != 0.0, 2)
        r_bar, w_bar, gamma_bar = _candidate_adjoint(on, t_bar, zero, R, w, gamma, act, pls, lr, em, wh, phi, delta,
                                                     scale, s_a)
        gas_bar = zero
        arb_bar = zero
    return R_bar + r_bar, w_bar, gamma_bar, gas_bar, arb_bar, e


def _minute_adjoint(R_in, R_a, record_a, record_b, w_prev, w_cur, p, fee, arb, fee_bar, R_bar, table,
                    cols, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr, NP: tl.constexpr,
                    N: tl.constexpr, SMOOTH: tl.constexpr, SELECTION: tl.constexpr, TAU_GATE: tl.constexpr,
                    TAU_SEL: tl.constexpr, EPS: tl.constexpr):
    """Adjoint of one minute (Phase B, then Phase A) given the adjoint of its output reserves: (adjoint of
    R_{t-1}, of w_{t-1}, of w_t [B, 1, NP], fee_bar, gas_bar, arb_bar of the minute [B, 1, 1])."""
    rates = _rates(fee)
    R_bar, gw_cur, gb_b, sb_b, ab_b, e_b = _phase_adjoint(
        R_a, w_cur, p, rates, arb, record_b, fee_bar, R_bar, table, cols, S1, RC, NCH, NP, N, SMOOTH,
        SELECTION, TAU_GATE, TAU_SEL, EPS)
    R_bar, gw_prev, gb_a, sb_a, ab_a, e_a = _phase_adjoint(
        R_in, w_prev, p, rates, arb, record_a, fee_bar, R_bar, table, cols, S1, RC, NCH, NP, N,
        SMOOTH, SELECTION, TAU_GATE, TAU_SEL, EPS)
    inflow = _sum(tl.maximum(e_b, 0.0) * p, 2) + _sum(tl.maximum(e_a, 0.0) * p, 2)
    gamma_bar = gb_b + gb_a - fee_bar * inflow  # fees_t = (1 - gamma) inflow
    return R_bar, gw_prev, gw_cur, -gamma_bar, sb_b + sb_a, ab_b + ab_a


# ----------------------------------------------------------------------------------------------------------
# kernels


def _lanes(BLOCK: tl.constexpr, NP: tl.constexpr):
    """(lane within the program [B, 1, 1], trajectory index (int64) [B, 1, 1], live lanes, asset column
    [1, 1, NP]) of this program."""
    local = tl.arange(0, BLOCK)[:, None, None]
    lanes = tl.program_id(0) * BLOCK + local
    return local, lanes.to(tl.int64), lanes, tl.arange(0, NP)[None, None, :]


def _forward_kernel(r0_ptr, w_ptr, p_ptr, fee_ptr, gas_ptr, arb_ptr, act_ptr, pls_ptr, ref_ptr, res_ptr, fees_ptr,
                    ckpt_ptr, B, T, K, NC, s_r0, s_w, s_p, s_fee, s_gas, s_arb,
                    N: tl.constexpr, NP: tl.constexpr, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr,
                    SMOOTH: tl.constexpr, SELECTION: tl.constexpr, TAU_GATE: tl.constexpr,
                    TAU_SEL: tl.constexpr, EPS: tl.constexpr, BLOCK: tl.constexpr):
    """Forward pass of BLOCK trajectories: reserves (B, T, N), fees (B, T), checkpoints (B, NC, N) (the
    reserves after minutes 0, K, 2K, ... below T - 1). Inputs: batch strides ``s_*`` in elements (0 where
    broadcast), core axes contiguous."""
    local, lane, live_lane, cols = _lanes(BLOCK, NP)
    live = live_lane < B
    mask = live & (cols < N)
    table = _load_table(act_ptr, pls_ptr, ref_ptr, cols, S1, RC, NCH, NP)
    R = tl.load(r0_ptr + lane * s_r0 + cols, mask=mask, other=1.0)
    res_row = res_ptr + lane * (T * N) + cols
    ckpt_row = ckpt_ptr + lane * (NC * N) + cols
    fees_row = fees_ptr + lane * T
    w_row = w_ptr + lane * s_w + cols
    p_row = p_ptr + lane * s_p + cols
    fee_row, gas_row, arb_row = fee_ptr + lane * s_fee, gas_ptr + lane * s_gas, arb_ptr + lane * s_arb
    tl.store(res_row, R, mask=mask)
    tl.store(ckpt_row, R, mask=mask)
    tl.store(fees_row, tl.full(live.shape, 0, R.dtype), mask=live)
    for t in range(1, T):
        w_t = w_row + t * N
        R_a, R, fees, rec_a, rec_b = _minute(
            R, tl.load(w_t - N, mask=mask, other=1.0), tl.load(w_t, mask=mask, other=1.0),
            tl.load(p_row + t * N, mask=mask, other=1.0), tl.load(fee_row + t, mask=live, other=0.0),
            tl.load(gas_row + t, mask=live, other=0.0), tl.load(arb_row + t, mask=live, other=0.0), table, cols, S1,
            RC, NCH, NP, N, SMOOTH, SELECTION, TAU_GATE, TAU_SEL, EPS)
        tl.store(res_row + t * N, R, mask=mask)
        tl.store(fees_row + t, fees, mask=live)
        if (t % K == 0) & (t < T - 1):
            tl.store(ckpt_row + (t // K) * N, R, mask=mask)


def _store_records(vec, scal, ints, j, rec_a, rec_b, N: tl.constexpr, BLOCK: tl.constexpr, SMOOTH: tl.constexpr,
                   NV: tl.constexpr, NS: tl.constexpr, vmask):
    """Scratch of minute ``j``: exact mode each phase's executed row (-1: none); smooth mode each phase's selected
    trade, softmax-mean trade (vector slots 2..5), gate, running max, softmax total, softmax-mean profit
    (scalar slots 0..7) and first-maximum row."""
    for k in tl.static_range(2):
        trade, gate, st = rec_a if k == 0 else rec_b
        if SMOOTH:
            best, m, tot, acc_p, acc_d = st[1], st[5], st[6], st[7], st[8]
            tl.store(vec + ((j * NV + 2 + 2 * k) * N) * BLOCK, trade, mask=vmask)
            tl.store(vec + ((j * NV + 3 + 2 * k) * N) * BLOCK, acc_d / tot, mask=vmask)
            tl.store(scal + (j * NS + 4 * k) * BLOCK, gate)
            tl.store(scal + (j * NS + 4 * k + 1) * BLOCK, m)
            tl.store(scal + (j * NS + 4 * k + 2) * BLOCK, tot)
            tl.store(scal + (j * NS + 4 * k + 3) * BLOCK, acc_p / tot)
            tl.store(ints + (j * 2 + k) * BLOCK, best)
        else:
            tl.store(ints + (j * 2 + k) * BLOCK, _executed_row(gate, st))


def _load_record(vec, scal, ints, j, k: tl.constexpr, N: tl.constexpr, BLOCK: tl.constexpr,
                 SMOOTH: tl.constexpr, NV: tl.constexpr, NS: tl.constexpr, vmask):
    """Phase ``k``'s record of minute ``j`` for :func:`_phase_adjoint` (the scratch of :func:`_store_records`)."""
    code = tl.load(ints + (j * 2 + k) * BLOCK)
    if SMOOTH:
        return (tl.load(vec + ((j * NV + 2 + 2 * k) * N) * BLOCK, mask=vmask, other=0.0),
                tl.load(scal + (j * NS + 4 * k) * BLOCK), code, tl.load(scal + (j * NS + 4 * k + 1) * BLOCK),
                tl.load(scal + (j * NS + 4 * k + 2) * BLOCK), tl.load(scal + (j * NS + 4 * k + 3) * BLOCK),
                tl.load(vec + ((j * NV + 3 + 2 * k) * N) * BLOCK, mask=vmask, other=0.0))
    else:
        return code


def _recompute_segment(R, n_minutes, w_seg, p_seg, fee_seg, gas_seg, arb_seg, vec, scal, ints, mask, live, vmask,
                       table, cols, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr, NP: tl.constexpr,
                       N: tl.constexpr, SMOOTH: tl.constexpr, SELECTION: tl.constexpr, TAU_GATE: tl.constexpr,
                       TAU_SEL: tl.constexpr, EPS: tl.constexpr, BLOCK: tl.constexpr, NV: tl.constexpr,
                       NS: tl.constexpr):
    """A segment's ``n_minutes`` minutes recomputed forward from its checkpoint ``R`` with the forward's own
    code, into the scratch: the reserves entering each minute, after its Phase A, and the phase records."""
    for j in range(0, n_minutes):
        tl.store(vec + (j * NV * N) * BLOCK, R, mask=vmask)
        R_a, R, fees, rec_a, rec_b = _minute(
            R, tl.load(w_seg + j * N, mask=mask, other=1.0), tl.load(w_seg + (j + 1) * N, mask=mask, other=1.0),
            tl.load(p_seg + (j + 1) * N, mask=mask, other=1.0), tl.load(fee_seg + (j + 1), mask=live, other=0.0),
            tl.load(gas_seg + (j + 1), mask=live, other=0.0), tl.load(arb_seg + (j + 1), mask=live, other=0.0),
            table, cols, S1, RC, NCH, NP, N, SMOOTH, SELECTION, TAU_GATE, TAU_SEL, EPS)
        tl.store(vec + ((j * NV + 1) * N) * BLOCK, R_a, mask=vmask)
        _store_records(vec, scal, ints, j, rec_a, rec_b, N, BLOCK, SMOOTH, NV, NS, vmask)


def _store_first_minute(gw_row, g_fee_row, g_gas_row, g_arb_row, g_r0, carry, R_bar, live, mask):
    """Minute 0's cotangents: the weights' (``carry``, from minute 1), zero for its rates (minute 0 has no
    trade), and the initial reserves' ``R_bar``."""
    zero = tl.full(live.shape, 0, R_bar.dtype)
    tl.store(gw_row, carry, mask=mask)
    tl.store(g_fee_row, zero, mask=live)
    tl.store(g_gas_row, zero, mask=live)
    tl.store(g_arb_row, zero, mask=live)
    tl.store(g_r0, R_bar, mask=mask)


def _backward_kernel(w_ptr, p_ptr, fee_ptr, gas_ptr, arb_ptr, act_ptr, pls_ptr, ref_ptr, ckpt_ptr, gres_ptr,
                     gfees_ptr, g_r0_ptr, g_w_ptr, g_fee_ptr, g_gas_ptr, g_arb_ptr, vec_ptr, scal_ptr, int_ptr,
                     B, T, K, NSEG, s_w, s_p, s_fee, s_gas, s_arb, s_ckpt, s_gres, s_gfees,
                     N: tl.constexpr, NP: tl.constexpr, S1: tl.constexpr, RC: tl.constexpr, NCH: tl.constexpr,
                     SMOOTH: tl.constexpr, SELECTION: tl.constexpr, TAU_GATE: tl.constexpr,
                     TAU_SEL: tl.constexpr, EPS: tl.constexpr, BLOCK: tl.constexpr, NV: tl.constexpr,
                     NS: tl.constexpr):
    """Checkpointed reverse pass of BLOCK trajectories (module docstring): writes g_r0 (B, N), g_w (B, T, N),
    g_fee, g_gas, g_arb (B, T). Scratch per program, lanes contiguous: ``vec`` (K, NV, N, BLOCK) (slot 0:
    the reserves entering each minute, 1: after its Phase A, 2..5: smooth mode's phase records), ``scal``
    (K, NS, BLOCK) and ``ints`` (K, 2, BLOCK) (:func:`_store_records`)."""
    local, lane, live_lane, cols = _lanes(BLOCK, NP)
    live = live_lane < B
    vmask = (local >= 0) & (cols < N)
    mask = live & vmask
    table = _load_table(act_ptr, pls_ptr, ref_ptr, cols, S1, RC, NCH, NP)
    program = tl.program_id(0).to(tl.int64)
    vec = vec_ptr + program * (K * NV * N * BLOCK) + cols * BLOCK + local
    scal = scal_ptr + program * (K * NS * BLOCK) + local
    ints = int_ptr + program * (K * 2 * BLOCK) + local
    w_row = w_ptr + lane * s_w + cols
    p_row = p_ptr + lane * s_p + cols
    gres_row = gres_ptr + lane * s_gres + cols
    gw_row = g_w_ptr + lane * (T * N) + cols
    ckpt_row = ckpt_ptr + lane * s_ckpt + cols
    fee_row, gas_row, arb_row = fee_ptr + lane * s_fee, gas_ptr + lane * s_gas, arb_ptr + lane * s_arb
    gfees_row = gfees_ptr + lane * s_gfees
    g_fee_row, g_gas_row, g_arb_row = g_fee_ptr + lane * T, g_gas_ptr + lane * T, g_arb_ptr + lane * T
    R_bar = tl.load(gres_row + (T - 1) * N, mask=mask, other=0.0)
    carry = tl.full(R_bar.shape, 0, R_bar.dtype)  # adjoint of w_t from minute t + 1
    for cc in range(0, NSEG):
        c = NSEG - 1 - cc
        t0 = c * K  # the segment: minutes t0 + 1 + j, j = 0 .. t1 - t0 - 1
        t1 = tl.minimum(t0 + K, T - 1)
        w_seg, p_seg, gres_seg, gw_seg = w_row + t0 * N, p_row + t0 * N, gres_row + t0 * N, gw_row + t0 * N
        fee_seg, gas_seg, arb_seg, gfees_seg = fee_row + t0, gas_row + t0, arb_row + t0, gfees_row + t0
        g_fee_seg, g_gas_seg, g_arb_seg = g_fee_row + t0, g_gas_row + t0, g_arb_row + t0
        _recompute_segment(tl.load(ckpt_row + c * N, mask=mask, other=1.0), t1 - t0, w_seg, p_seg, fee_seg, gas_seg,
                           arb_seg, vec, scal, ints, mask, live, vmask, table, cols, S1, RC, NCH, NP, N, SMOOTH,
                           SELECTION, TAU_GATE, TAU_SEL, EPS, BLOCK, NV, NS)
        # the step adjoints through the scratch, last minute first
        for j in range(t1 - t0 - 1, -1, -1):
            R_bar, gw_prev, gw_cur, g_fee, g_gas, g_arb = _minute_adjoint(
                tl.load(vec + (j * NV * N) * BLOCK, mask=vmask, other=1.0),
                tl.load(vec + ((j * NV + 1) * N) * BLOCK, mask=vmask, other=1.0),
                _load_record(vec, scal, ints, j, 0, N, BLOCK, SMOOTH, NV, NS, vmask),
                _load_record(vec, scal, ints, j, 1, N, BLOCK, SMOOTH, NV, NS, vmask),
                tl.load(w_seg + j * N, mask=mask, other=1.0), tl.load(w_seg + (j + 1) * N, mask=mask, other=1.0),
                tl.load(p_seg + (j + 1) * N, mask=mask, other=1.0), tl.load(fee_seg + (j + 1), mask=live, other=0.0),
                tl.load(arb_seg + (j + 1), mask=live, other=0.0), tl.load(gfees_seg + (j + 1), mask=live, other=0.0),
                R_bar, table, cols, S1, RC, NCH, NP, N, SMOOTH, SELECTION, TAU_GATE, TAU_SEL, EPS)
            tl.store(gw_seg + (j + 1) * N, carry + gw_cur, mask=mask)
            carry = gw_prev
            tl.store(g_fee_seg + (j + 1), g_fee, mask=live)
            tl.store(g_gas_seg + (j + 1), g_gas, mask=live)
            tl.store(g_arb_seg + (j + 1), g_arb, mask=live)
            R_bar = R_bar + tl.load(gres_seg + j * N, mask=mask, other=0.0)
    _store_first_minute(gw_row, g_fee_row, g_gas_row, g_arb_row, g_r0_ptr + lane * N + cols, carry, R_bar, live,
                        mask)


_DEVICE_FUNCTIONS = ("_sum", "_max", "_min", "_any", "_expm1", "_phi", "_rates", "_ratios", "_table_rows",
                     "_load_table", "_chunk", "_gathered_row", "_selectable", "_candidate", "_candidate_adjoint",
                     "_select_start", "_select_chunk", "_phase_chunk", "_phase", "_minute", "_executed_row",
                     "_gate_adjoint", "_adjoint_chunk", "_phase_adjoint", "_minute_adjoint", "_lanes", "_store_records",
                     "_load_record", "_recompute_segment", "_store_first_minute")


@lru_cache(maxsize=1)
def _kernels() -> SimpleNamespace:
    """Imports Triton and wraps the device functions and kernels in ``triton.jit`` (once per process; whether
    Triton interprets is decided here, by ``TRITON_INTERPRET``)."""
    try:
        import triton
        import triton.language as tl_module
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError("the Triton fee-path kernels need triton (pip install 'tfmm[triton]')") from exc
    from triton.runtime.interpreter import InterpretedFunction

    namespace = globals()
    namespace["tl"] = tl_module
    for name, value in _CONSTANTS.items():
        namespace[name] = tl_module.constexpr(value)
    namespace["_SUM_COMBINE"] = tl_module.standard._sum_combine
    namespace["_MAX_COMBINE"] = tl_module.standard._elementwise_max
    namespace["_MIN_COMBINE"] = tl_module.standard._elementwise_min
    forward_kernel = triton.jit(_forward_kernel)
    interpreted = isinstance(forward_kernel, InterpretedFunction)
    if not interpreted:
        # in the interpreter the device functions stay Python functions called from the interpreted kernels
        # (with Triton's language patched for the whole launch): an interpreted device-function call would
        # re-patch triton.language on every call, ~3 ms each, most of a launch's time
        for name in _DEVICE_FUNCTIONS:
            namespace[name] = triton.jit(namespace[name])
    return SimpleNamespace(triton=triton, forward=forward_kernel, backward=triton.jit(_backward_kernel),
                           interpreted=interpreted)


def available() -> bool:
    """Whether Triton is installed (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether the kernels run in Triton's interpreter (loads Triton)."""
    return _kernels().interpreted


@contextlib.contextmanager
def _launch_numerics(interpreted: bool) -> Iterator[None]:
    """The interpreter evaluates masked-out lanes and rows with numpy, as the GPU does: IEEE overflow and
    0/0 there are expected and discarded by ``tl.where``, so numpy's warnings are silenced for the launch."""
    if interpreted:
        with np.errstate(over="ignore", divide="ignore", invalid="ignore", under="ignore"):
            yield
    else:
        yield


# ----------------------------------------------------------------------------------------------------------
# host side: settings, shapes, launchers


class Checkpoints(NamedTuple):
    """The forward's residuals for :func:`backward`: the reserves after minutes ``0, K, 2K, ...`` below
    ``T - 1``, shape ``(B..., n_checkpoints(T, K), n)``, and ``every = K``."""

    reserves: Tensor
    every: int


class _Launch(NamedTuple):
    table: tuple[Tensor, Tensor, Tensor]
    n: int
    NP: int
    S1: int
    RC: int
    NCH: int
    block: int
    num_warps: int


def default_checkpoint_every(T: int) -> int:
    """``K = ceil(sqrt(T))`` minutes per segment: O(sqrt T) checkpoints and scratch per trajectory."""
    if T <= 1:
        return 1
    root = math.isqrt(int(T))
    return root if root * root == T else root + 1


def scratch_slots(smooth: bool) -> tuple[int, int]:
    """(vector slots of n values, scalar slots) per minute of the reverse pass's scratch: the reserves entering
    the minute and after its Phase A, and in smooth mode each phase's selected and softmax-mean trade, gate,
    running max, softmax total and softmax-mean profit; besides, two int32 per minute (each phase's
    executed or first-maximum row)."""
    return (6, 8) if smooth else (2, 0)


def memory_per_trajectory(T: int, n: int, smooth: bool, itemsize: int = 8, every: int | None = None) -> int:
    """Bytes per trajectory that the checkpointed reverse needs beyond inputs and outputs: the forward's
    checkpoints and the reverse pass's scratch (``itemsize`` 8 for float64, 4 for float32)."""
    K = every or default_checkpoint_every(T)
    NV, NS = scratch_slots(smooth)
    return K * ((NV * n + NS) * itemsize + 2 * 4) + n_checkpoints(T, K) * n * itemsize


def n_checkpoints(T: int, every: int) -> int:
    """Checkpoints stored by the forward for ``T`` rows: one per segment of ``every`` of the ``T - 1`` minutes
    (one, the initial reserves, for a single row; none for none)."""
    return 0 if T <= 0 else max(1, -(-(T - 1) // every))


def _next_pow2(x: int) -> int:
    return 1 << max(0, int(x) - 1).bit_length()


@lru_cache(maxsize=64)
def _table(settings: FeePathSettings, rows_per_chunk: int, NP: int, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """The candidate table as int8 tensors (rows padded to a multiple of the chunk, columns to NP): active,
    plus and reference-column masks; padded rows are inactive with reference column 0 (inert)."""
    active, plus, ref = candidate_table(np.asarray(settings.signatures, dtype=np.int8))
    S1, n = active.shape
    rows = -(-S1 // rows_per_chunk) * rows_per_chunk
    out = np.zeros((3, rows, NP), dtype=np.int8)
    out[0, :S1, :n] = active
    out[1, :S1, :n] = plus
    out[2, np.arange(rows), np.concatenate([ref, np.zeros(rows - S1, dtype=np.int64)])] = 1
    return tuple(torch.from_numpy(np.ascontiguousarray(x)).to(device) for x in out)


def _launch_config(settings: FeePathSettings, B: int, device: torch.device, block: int | None,
                   rows_per_chunk: int | None, interpreted: bool) -> _Launch:
    """Block sizes: ``RC`` rows per candidate chunk (the table's rows up to 16), ``block`` trajectories per
    program (about 256 candidate-asset elements per program on a GPU; the whole batch, up to 64, in the
    interpreter, where a launch costs per operation, not per element)."""
    n = settings.n_assets
    if n > MAX_ASSETS:
        raise ValueError(f"the Triton fee path supports up to {MAX_ASSETS} assets; got {n}")
    NP = max(2, _next_pow2(n))
    S1 = len(settings.signatures) + 1
    RC = _next_pow2(min(rows_per_chunk or MAX_ROWS_PER_CHUNK, S1))
    if block is None:
        block = min(64, _next_pow2(B)) if interpreted else max(1, min(64, 256 // (RC * NP)))
    if block & (block - 1):
        raise ValueError(f"block={block} is invalid: allowed a power of two")
    table = _table(settings, RC, NP, str(device))
    return _Launch(table, n, NP, S1, RC, -(-S1 // RC), block, 4)


def _compute_dtype(tensors) -> torch.dtype:
    dtype = tensors[0].dtype
    for x in tensors[1:]:
        dtype = torch.promote_types(dtype, x.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


def _flat(x: Tensor, batch: tuple[int, ...], core: tuple[int, ...], dtype: torch.dtype) -> tuple[Tensor, int]:
    """``x`` broadcast to ``batch + core`` and flattened to ``(prod(batch),) + core`` with contiguous core
    axes: a view where the broadcast batch axes merge (stride 0 for a shared input), a copy otherwise.
    Returns (tensor, batch stride in elements)."""
    x = x.to(dtype).expand(batch + core).reshape((-1,) + core)
    expected = 1
    for size, stride in zip(reversed(core), reversed(x.stride()[1:])):
        if size > 1 and stride != expected:
            x = x.contiguous()
            break
        expected *= size
    return x, (x.stride(0) if x.shape[0] > 1 else 0)


def _check(settings: FeePathSettings, r0, weights, prices, fee, gas, arb_fee) -> tuple[tuple[int, ...], int, int]:
    batch, T, n = cpu._check_inputs(settings, r0, weights, prices, fee, gas, arb_fee)
    return tuple(int(b) for b in batch), int(T), int(n)


def _device_guard(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def forward(settings: FeePathSettings, r0: Tensor, weights: Tensor, prices: Tensor, fee: Tensor, gas: Tensor,
            arb_fee: Tensor, checkpoint_every: int | None = None, *, block: int | None = None,
            rows_per_chunk: int | None = None) -> tuple[Tensor, Tensor, Checkpoints]:
    """Reserves and fees of a pool with fees arbitraged every minute (math.md 2.5), for any batch: the
    contract of :func:`tfmm.backends.kernels.fee_path.forward` for torch tensors (CUDA; CPU tensors in the
    interpreter). r0 (..., n) tokens; weights, prices (..., T, n); fee, gas (USD), arb_fee (..., T), row 0
    unused; leading axes broadcast. Returns ``(reserves (B..., T, n), fees (B..., T), Checkpoints)`` in the
    compute dtype (float64, or float32 for narrower inputs), row 0 the initial state.
    ``checkpoint_every``: K (default :func:`default_checkpoint_every`); ``block``, ``rows_per_chunk``: launch
    sizes (:func:`_launch_config`)."""
    inputs = (r0, weights, prices, fee, gas, arb_fee)
    batch, T, n = _check(settings, *inputs)
    K = int(checkpoint_every or default_checkpoint_every(T))
    if K < 1:
        raise ValueError(f"checkpoint_every={checkpoint_every!r} is invalid: allowed an integer >= 1")
    B, NC = math.prod(batch), n_checkpoints(T, K)
    dtype, device = _compute_dtype(inputs), prices.device
    reserves = torch.empty((B, T, n), dtype=dtype, device=device)
    fees = torch.empty((B, T), dtype=dtype, device=device)
    ckpt = torch.empty((B, NC, n), dtype=dtype, device=device)
    if B and T:
        kernels = _kernels()
        cfg = _launch_config(settings, B, device, block, rows_per_chunk, kernels.interpreted)
        flat = [_flat(x, batch, core, dtype) for x, core in zip(inputs, ((n,), (T, n), (T, n), (T,), (T,), (T,)))]
        statics = _statics(settings, cfg)
        with _device_guard(device), _launch_numerics(kernels.interpreted):
            kernels.forward[(-(-B // cfg.block),)](
                *(x for x, _ in flat), *cfg.table, reserves, fees, ckpt, B, T, K, NC, *(s for _, s in flat),
                **statics, num_warps=cfg.num_warps, enable_fp_fusion=False)
    return (reserves.reshape(batch + (T, n)), fees.reshape(batch + (T,)),
            Checkpoints(ckpt.reshape(batch + (NC, n)), K))


def _statics(settings: FeePathSettings, cfg: _Launch) -> dict:
    """The kernels' constexpr arguments."""
    return dict(N=cfg.n, NP=cfg.NP, S1=cfg.S1, RC=cfg.RC, NCH=cfg.NCH, SMOOTH=settings.smooth,
                SELECTION=cpu.SELECTIONS[settings.selection] if settings.smooth else 0,
                TAU_GATE=settings.gate_temperature, TAU_SEL=settings.selection_temperature,
                EPS=settings.abs_epsilon, BLOCK=cfg.block)


def backward(settings: FeePathSettings, r0: Tensor, weights: Tensor, prices: Tensor, fee: Tensor, gas: Tensor,
             arb_fee: Tensor, reserves: Tensor | None, residuals: Checkpoints, g_reserves: Tensor, g_fees: Tensor,
             reduce: bool = True, *, block: int | None = None, rows_per_chunk: int | None = None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Vector-Jacobian product of :func:`forward` (the contract of
    :func:`tfmm.backends.kernels.fee_path.backward`): given the cotangents of reserves (B..., T, n) and fees
    (B..., T), returns ``(g_r0, g_weights, g_fee, g_gas, g_arb_fee)`` in the compute dtype with the shapes of
    the inputs (summed over the axes they were broadcast along), or with ``reduce=False`` with the whole batch
    shape in front. ``reserves`` is not needed (pass None): the reverse recomputes the states from
    ``residuals``, the forward's :class:`Checkpoints`. Exact mode is pathwise (choices fixed)."""
    inputs = (r0, weights, prices, fee, gas, arb_fee)
    batch, T, n = _check(settings, *inputs)
    ckpt, K = residuals
    batch = tuple(torch.broadcast_shapes(batch, g_reserves.shape[:-2], g_fees.shape[:-1], ckpt.shape[:-2]))
    NC = n_checkpoints(T, K)
    if tuple(ckpt.shape[-2:]) != (NC, n):
        raise ValueError(f"fee path: checkpoints of shape {tuple(ckpt.shape)} do not match T={T}, every={K}, n={n}")
    B = math.prod(batch)
    dtype, device = _compute_dtype(inputs), prices.device
    g_r0 = torch.empty((B, n), dtype=dtype, device=device)
    g_w = torch.empty((B, T, n), dtype=dtype, device=device)
    g_rates = [torch.empty((B, T), dtype=dtype, device=device) for _ in range(3)]
    if B and T:
        kernels = _kernels()
        cfg = _launch_config(settings, B, device, block, rows_per_chunk, kernels.interpreted)
        cores = ((T, n), (T, n), (T,), (T,), (T,), (NC, n), (T, n), (T,))
        flat = [_flat(x, batch, core, dtype)
                for x, core in zip((weights, prices, fee, gas, arb_fee, ckpt, g_reserves, g_fees), cores)]
        programs = -(-B // cfg.block)
        NV, NS = scratch_slots(settings.smooth)
        vec = torch.empty((programs, K, NV, n, cfg.block), dtype=dtype, device=device)
        scal = torch.empty((programs, K, NS, cfg.block) if NS else (1,), dtype=dtype, device=device)
        ints = torch.empty((programs, K, 2, cfg.block), dtype=torch.int32, device=device)
        with _device_guard(device), _launch_numerics(kernels.interpreted):
            kernels.backward[(programs,)](
                *(x for x, _ in flat[:5]), *cfg.table, flat[5][0], flat[6][0], flat[7][0], g_r0, g_w, *g_rates,
                vec, scal, ints, B, T, K, n_checkpoints(T, K) if T > 1 else 0, *(s for _, s in flat),
                **_statics(settings, cfg), NV=NV, NS=NS, num_warps=cfg.num_warps, enable_fp_fusion=False)
    else:
        for g in (g_r0, g_w, *g_rates):
            g.zero_()
    grads = (g_r0.reshape(batch + (n,)), g_w.reshape(batch + (T, n)), *(g.reshape(batch + (T,)) for g in g_rates))
    if not reduce:
        return grads
    return tuple(sum_to_shape(g, x.shape) for g, x in zip(grads, (r0, weights, fee, gas, arb_fee)))


__all__ = ["Checkpoints", "available", "backward", "default_checkpoint_every", "forward", "interpreting",
           "memory_per_trajectory", "n_checkpoints", "scratch_slots"]
