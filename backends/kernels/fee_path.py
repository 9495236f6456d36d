"""The fee path as one compiled loop over minutes, forward and reverse (Numba, CPU).

A second implementation of the pool step of :func:`tfmm.core.g3m.reserves_with_fees` (math.md 2.3-2.5), held to it
by tests (``tests/test_fee_kernel.py``) and independent of the reference. Units: reserves in tokens, prices
in USD per token, gas and profits in USD, fee rates dimensionless.

Forward, per trajectory, for ``t = 1 .. T-1`` from ``R_{t-1}``: Phase A (weights ``w_{t-1}``, prices ``p_t``),
then Phase B (weights ``w_t``, prices ``p_t``). Each phase evaluates every candidate of the signature set in
the cancellation-free form of :mod:`tfmm.core.g3m` (row ``s``, active set ``A``, reference asset ``r`` the
row's first active one, ``g_i = gamma`` where ``sigma_i = +1``, ``S_A = sum_A w_j``, ``wh = w / S_A``):

    lr_i = log((R_i / R_r) (pw_i / pw_r) (g_r / g_i)),  pw = p / w      (log y_i / y_r)
    m = sum_A wh_i lr_i,  u_i = lr_i - m,  C = y_r exp(m)                (USD)
    Delta_i = (R_i / g_i) expm1(-u_i),  profit = C sum_A wh_i (expm1(u_i) - u_i)

then validity (``R + Delta > 0`` and the fee-adjusted invariant test of :mod:`tfmm.core.g3m`), selection
(exact: first maximum; smooth: softmax, straight-through or hard) and the gate (exact: ``margin >= 0``;
smooth: ``sigmoid(margin / tau_gate)``), ``margin = profit - gas - 0.5 arb_fee sum_i |Delta_i p_i|``.
At a minute with ``fee == 0`` the candidate set is the single zero-fee trade (all assets active, no fee),
which equals what the core's masked selection gives.

Reverse (vector-Jacobian product) with respect to the initial reserves, the weights and the per-minute fee,
gas and arb_fee (prices are data, not differentiated). The step's adjoint is written by hand from the
formulas above: with ``a_i = log R_i + log p_i - log w_i - log g_i + log S_A`` and ``log C = sum_A wh_i a_i``,

    u_bar_i   = -Delta_bar_i (R_i / g_i) exp(-u_i) + profit_bar C wh_i expm1(u_i)
    logC_bar  = profit_bar C Phi - sum_A u_bar_i,      Phi = sum_A wh_i phi(u_i)
    a_bar_i   = u_bar_i + logC_bar wh_i,               wh_bar_i = profit_bar C phi_i + logC_bar lr_i
    R_bar_i  += Delta_bar_i expm1(-u_i) / g_i + a_bar_i / R_i
    w_bar_i  += -a_bar_i / w_i + wh_bar_i / S_A + S_A_bar,  S_A_bar = (sum_A a_bar_i - sum_A wh_bar_i wh_i) / S_A
    g_bar_i   = -Delta_bar_i Delta_i / g_i - a_bar_i / g_i      (gamma_bar = sum over sigma_i = +1)

(``lr`` may stand for ``a`` in ``wh_bar``: the two differ by a constant, whose contribution cancels because
``sum wh = 1``.) Exact mode is the pathwise derivative: the gate, the choice and validity are held fixed, as
JAX's autodiff of the scan does. Smooth mode is the full derivative through the softmax and the gate.

At a minute with ``fee == 0`` the trade is the zero-fee trade, which does not depend on the fee, so the
derivative with respect to that minute's fee is the fee-collection term alone. The pool has a kink there
(a fee cannot be negative, and the optimal trade's derivative for ``fee -> 0+`` depends on its direction);
the scan's autodiff returns the derivative of whichever signature wins the tie at ``gamma = 1`` instead.
Neither is a two-sided derivative; differentiate with respect to a fee above zero.

Which forward states are kept: the reserves after each minute (the output) and after Phase A, ``(T, n)``
each, plus in exact mode the executed candidate of both phases (``(T, 2)`` int32, 0 for no trade). The reverse
pass recomputes one phase's candidates from those reserves (exact mode: only the chosen one), which costs
less than a forward pass and keeps memory at ``O(T n)``, the size of the output itself. Checkpointing every
``K`` minutes would cut this to ``O(T / K + K)`` at the price of a second forward pass; on a CPU the output
already has this size, so it is not done here.

Everything is computed in float64; float32 callers are converted at the wrapper (:func:`forward`), so
float32 results are float64 results rounded once, at the end.
"""

from __future__ import annotations

import math
import os

import numba as nb
import numpy as np

INVARIANT_TOLERANCE = 1e-9  # math.md 2.3, the same value as tfmm.core.g3m
LOG_FLOOR = math.log1p(-INVARIANT_TOLERANCE)
SELECTIONS = {"hard": 0, "softmax": 1, "straight_through": 2}
INV_E = math.exp(-1.0)
SCREEN_FACTOR = 2.0  # the direction screen rejects only candidates whose bound is twice the tolerance
SERIES_LIMIT = 1e-3  # |u| below which expm1(u) - u is a 5-term series (relative error < 1e-16)

_CACHE = os.environ.get("TFMM_NUMBA_CACHE", "1") != "0"
_jit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy")
_ijit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy", inline="always")
# the time loops run without reference counting: every array they touch is allocated by their caller, and
# counting references of the row views and scratch arrays passed to the inlined steps took 65% of the time
_core_jit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy", _nrt=False)
_pjit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy", parallel=True)


# ----------------------------------------------------------------------------------------------------------
# candidate rows (static): masks of the signature set plus the zero-fee row


def candidate_table(signatures: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(active (S+1, n) uint8, plus (S+1, n) uint8, ref (S+1,) int64) for signatures (S, n): the signature
    rows, then the zero-fee row (all assets active, none fee-bearing). ``ref`` is each row's first active
    asset."""
    sig = np.asarray(signatures)
    n = sig.shape[1]
    active = np.concatenate([sig != 0, np.ones((1, n), dtype=bool)]).astype(np.uint8)
    plus = np.concatenate([sig == 1, np.zeros((1, n), dtype=bool)]).astype(np.uint8)
    ref = np.argmax(active, axis=1).astype(np.int64)
    return active, plus, ref


# ----------------------------------------------------------------------------------------------------------
# one candidate


@_ijit
def _phi(u, em):
    """``expm1(u) - u`` given ``em = expm1(-u)``, as in tfmm.core.g3m."""
    if abs(u) < SERIES_LIMIT:
        return u * u * (0.5 + u * (1.0 / 6.0 + u * (1.0 / 24.0 + u / 120.0)))
    return -em / (1.0 + em) - u


@_ijit
def _log_ratios(R, w, p, z, pw):
    """Per phase, shared by every row: ``pw = p / w`` and ``z_i = log((R_i / R_0) (pw_i / pw_0))``
    (``log y_i / y_0`` without fees; small while the pool stays near equilibrium)."""
    n = R.shape[0]
    for i in range(n):
        pw[i] = p[i] / w[i]
    z[0] = 0.0
    for i in range(1, n):
        z[i] = math.log((R[i] / R[0]) * (pw[i] / pw[0]))


@_ijit
def _centred_log_ratios(s, w, log_gamma, z, active, plus, r, lr, u, wh):
    """Row ``s``'s ``lr``, ``wh = w / S_A`` and ``u = lr - sum_A wh lr`` (zero off the active set); returns
    ``(S_A, bound)``, ``bound = sum w_i min(|u_i|, 1)`` over the legs whose direction disagrees with sigma."""
    n = w.shape[0]
    lg_r = log_gamma if plus[s, r] else 0.0
    s_a = 0.0
    for i in range(n):
        if active[s, i]:
            s_a += w[i]
    mean_log = 0.0
    for i in range(n):
        if active[s, i]:
            lg_i = log_gamma if plus[s, i] else 0.0
            lr[s, i] = (z[i] - z[r]) + (lg_r - lg_i)
            wh[s, i] = w[i] / s_a
            mean_log += wh[s, i] * lr[s, i]
        else:
            lr[s, i] = 0.0
            wh[s, i] = 0.0
    bound = 0.0
    for i in range(n):
        if active[s, i]:
            u_i = lr[s, i] - mean_log
            u[s, i] = u_i
            if (u_i > 0.0) if plus[s, i] else (u_i < 0.0):
                bound += w[i] * min(abs(u_i), 1.0)
        else:
            u[s, i] = 0.0
    return s_a, bound


@_ijit
def _candidate(s, R, w, gamma, log_gamma, z, pw, active, plus, ref, lr, u, em, wh, delta):
    """Row ``s`` of the candidate set: fills ``lr, u, em, wh, delta`` (row s) and returns
    (profit USD, C USD, S_A, valid). An invalid candidate gets a zero trade and profit.

    ``lr_i = (z_i - z_r) + (log g_r - log g_i)``. Screen: a leg whose direction disagrees with sigma
    (``u_i > 0`` where ``sigma_i = +1``, ``u_i < 0`` where ``sigma_i = -1``) lowers the fee-adjusted
    invariant by ``f |expm1(u_i)| / g_i >= f min(|u_i|, 1) / e`` per unit weight; when that bound alone
    exceeds twice the tolerance the candidate is invalid and its exponentials are skipped."""
    n = R.shape[0]
    r = ref[s]
    s_a, bound = _centred_log_ratios(s, w, log_gamma, z, active, plus, r, lr, u, wh)
    if (1.0 - gamma) * bound * INV_E > SCREEN_FACTOR * INVARIANT_TOLERANCE:
        for i in range(n):
            delta[s, i] = 0.0
            em[s, i] = 0.0
        return 0.0, 0.0, s_a, False
    phi_sum = 0.0
    valid = True
    log_change = 0.0
    for i in range(n):
        if active[s, i]:
            g_i = gamma if plus[s, i] else 1.0
            u_i = u[s, i]
            em_i = math.expm1(-u_i)
            d_i = R[i] * em_i / g_i
            em[s, i] = em_i
            delta[s, i] = d_i
            phi_sum += wh[s, i] * _phi(u_i, em_i)
            if not (R[i] + d_i > 0.0):
                valid = False
            elif (d_i < 0.0) if plus[s, i] else (d_i > 0.0):  # direction disagrees with sigma
                c = -(1.0 - gamma) * abs(d_i) / (R[i] + g_i * d_i)
                log_change += w[i] * (c - 0.5 * c * c)
        else:
            em[s, i] = 0.0
            delta[s, i] = 0.0
    g_r = gamma if plus[s, r] else 1.0
    # C = y_r exp(m), and exp(m) = exp(-u_r) = 1 + em_r (lr_r = 0): no further exponential
    scale = R[r] * pw[r] * s_a / g_r * (1.0 + em[s, r])
    if not (log_change >= LOG_FLOOR):
        valid = False
    if not valid:
        for i in range(n):
            delta[s, i] = 0.0
        return 0.0, scale, s_a, False
    return scale * phi_sum, scale, s_a, True


@_ijit
def _candidate_adjoint(s, d_bar, profit_bar, R, w, gamma, plus, active, lr, u, em, wh, delta, scale, s_a,
                       R_bar, w_bar, a_bar):
    """Adds the adjoint of valid candidate ``s`` (given ``Delta_bar`` (n,) and ``profit_bar``) to
    ``R_bar`` and ``w_bar``; returns ``gamma_bar`` (module docstring)."""
    n = R.shape[0]
    phi_sum = 0.0
    for i in range(n):
        if active[s, i]:
            phi_sum += wh[s, i] * _phi(u[s, i], em[s, i])
    u_bar_sum = 0.0
    for i in range(n):
        if active[s, i]:
            g_i = gamma if plus[s, i] else 1.0
            ub = -d_bar[i] * (R[i] / g_i) * (1.0 + em[s, i]) + profit_bar * scale * wh[s, i] * math.expm1(u[s, i])
            a_bar[i] = ub
            u_bar_sum += ub
    logc_bar = profit_bar * phi_sum * scale - u_bar_sum
    gamma_bar = 0.0
    sa_bar = 0.0
    for i in range(n):
        if active[s, i]:
            g_i = gamma if plus[s, i] else 1.0
            ab = a_bar[i] + logc_bar * wh[s, i]
            a_bar[i] = ab
            wb = profit_bar * scale * _phi(u[s, i], em[s, i]) + logc_bar * lr[s, i]
            R_bar[i] += d_bar[i] * em[s, i] / g_i + ab / R[i]
            w_bar[i] += -ab / w[i] + wb / s_a
            sa_bar += ab - wb * wh[s, i]
            if plus[s, i]:
                gamma_bar += -d_bar[i] * delta[s, i] / g_i - ab / g_i
    sa_bar /= s_a
    for i in range(n):
        if active[s, i]:
            w_bar[i] += sa_bar
    return gamma_bar


# ----------------------------------------------------------------------------------------------------------
# one phase: candidates, selection, gate


@_ijit
def _select(lo, hi, profit, q, soft, smooth, selection, tau_sel):
    """Selection weights ``q`` over rows ``lo..hi-1`` (and ``soft``, the softmax, in smooth mode);
    returns the index of the first maximum."""
    best = lo
    for s in range(lo + 1, hi):
        if profit[s] > profit[best]:
            best = s
    if smooth and selection != 0:
        m = profit[best] / tau_sel
        total = 0.0
        for s in range(lo, hi):
            soft[s] = math.exp(profit[s] / tau_sel - m)
            total += soft[s]
        for s in range(lo, hi):
            soft[s] = soft[s] / total
    for s in range(lo, hi):
        if not smooth or selection == 0:
            q[s] = 1.0 if s == best else 0.0
        elif selection == 1:
            q[s] = soft[s]
        else:
            q[s] = soft[s] + ((1.0 if s == best else 0.0) - soft[s])
    return best


@_jit
def _scratch(n_rows, n):
    """Work arrays of one trajectory: per-candidate rows (lr, u, em, wh, delta), per-candidate scalars
    (profit, scale, s_a, valid, q, soft), per-phase vectors (z, pw, trade) and adjoint work (3, n)."""
    return (np.zeros((n_rows, n)), np.zeros((n_rows, n)), np.zeros((n_rows, n)), np.zeros((n_rows, n)),
            np.zeros((n_rows, n)), np.zeros(n_rows), np.zeros(n_rows), np.ones(n_rows),
            np.zeros(n_rows, dtype=np.bool_), np.zeros(n_rows), np.zeros(n_rows),
            np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((3, n)))


@_ijit
def _rows(gamma, n_sig):
    """The selectable candidate rows at a minute: the signatures, or the zero-fee row when ``fee == 0``."""
    if gamma == 1.0:
        return n_sig, n_sig + 1
    return 0, n_sig


@_ijit
def _phase(R, w, p, gamma, log_gamma, gas, arb, table, cfg, sc, out, only_row):
    """One arbitrage phase from reserves ``R``: writes the executed trade into ``out`` (n,) and returns
    (chosen row, gate: exact 1.0 open / 0.0 closed, smooth the sigmoid). The scratch ``sc`` keeps every
    candidate and the selected (mixed) trade before the gate, for the adjoint. ``only_row >= 0`` replays an
    exact-mode phase whose executed row is known: only that row is evaluated, and executed."""
    active, plus, ref = table
    smooth, selection, tau_gate, tau_sel, eps = cfg
    lr, u, em, wh, delta, profit, scale, s_a, valid, q, soft, z, pw, trade, _ = sc
    n = R.shape[0]
    if only_row >= 0:
        lo, hi = only_row, only_row + 1
    else:
        lo, hi = _rows(gamma, active.shape[0] - 1)
    _log_ratios(R, w, p, z, pw)
    for s in range(lo, hi):
        pr, c, sa, ok = _candidate(s, R, w, gamma, log_gamma, z, pw, active, plus, ref, lr, u, em, wh, delta)
        profit[s] = pr
        scale[s] = c
        s_a[s] = sa
        valid[s] = ok
    if only_row >= 0:
        for i in range(n):
            trade[i] = delta[only_row, i]
            out[i] = trade[i]
        return only_row, 1.0
    best = _select(lo, hi, profit, q, soft, smooth, selection, tau_sel)
    mixed = smooth and selection != 0
    sel_profit = 0.0
    for i in range(n):
        trade[i] = 0.0
    if mixed:
        for s in range(lo, hi):
            sel_profit += q[s] * profit[s]
            for i in range(n):
                trade[i] += q[s] * delta[s, i]
    else:
        sel_profit = profit[best]
        for i in range(n):
            trade[i] = delta[best, i]
    cost = 0.0
    for i in range(n):
        x = trade[i] * p[i]
        cost += math.sqrt(x * x + eps * eps) if smooth else abs(x)
    margin = sel_profit - gas - 0.5 * arb * cost
    if smooth:
        gate = 1.0 / (1.0 + math.exp(-margin / tau_gate))
        for i in range(n):
            out[i] = gate * trade[i]
    else:
        gate = 1.0 if margin >= 0.0 else 0.0
        for i in range(n):
            out[i] = trade[i] if gate == 1.0 else 0.0
    return best, gate


@_ijit
def _phase_adjoint(e_bar, R, w, p, gamma, gas, arb, table, cfg, sc, best, gate, R_bar, w_bar):
    """Adjoint of :func:`_phase` given ``e_bar`` (n,), the adjoint of the executed trade, and the phase's
    recomputed scratch. Adds to ``R_bar``, ``w_bar``; returns (gamma_bar, gas_bar, arb_bar)."""
    active, plus, ref = table
    smooth, selection, tau_gate, tau_sel, eps = cfg
    lr, u, em, wh, delta, profit, scale, s_a, valid, q, soft, z, pw, trade, work = sc
    t_bar, d_bar, a_bar = work[0], work[1], work[2]
    n = R.shape[0]
    lo, hi = _rows(gamma, active.shape[0] - 1)
    profit_bar = 0.0
    gas_bar = 0.0
    arb_bar = 0.0
    if smooth:
        g_bar = 0.0
        for i in range(n):
            t_bar[i] = gate * e_bar[i]
            g_bar += e_bar[i] * trade[i]
        m_bar = g_bar * gate * (1.0 - gate) / tau_gate
        profit_bar = m_bar
        gas_bar = -m_bar
        cost = 0.0
        for i in range(n):
            x = trade[i] * p[i]
            sabs = math.sqrt(x * x + eps * eps)
            cost += sabs
            t_bar[i] += -m_bar * 0.5 * arb * (x / sabs) * p[i]
        arb_bar = -m_bar * 0.5 * cost
    else:
        for i in range(n):
            t_bar[i] = e_bar[i] if gate == 1.0 else 0.0
    gamma_bar = 0.0
    if smooth and selection != 0:
        # q_bar_s = t_bar . Delta_s + profit_bar profit_s; the softmax's adjoint uses the soft weights
        q_mean = 0.0
        for s in range(lo, hi):
            qb = profit_bar * profit[s]
            for i in range(n):
                qb += t_bar[i] * delta[s, i]
            q_mean += soft[s] * qb
        for s in range(lo, hi):
            if not valid[s]:
                continue
            qb = profit_bar * profit[s]
            for i in range(n):
                qb += t_bar[i] * delta[s, i]
            pb = q[s] * profit_bar + soft[s] * (qb - q_mean) / tau_sel
            nonzero = pb != 0.0
            for i in range(n):
                d_bar[i] = q[s] * t_bar[i]
                nonzero = nonzero or d_bar[i] != 0.0
            if nonzero:
                gamma_bar += _candidate_adjoint(s, d_bar, pb, R, w, gamma, plus, active, lr, u, em, wh, delta,
                                                scale[s], s_a[s], R_bar, w_bar, a_bar)
    elif valid[best]:
        nonzero = profit_bar != 0.0
        for i in range(n):
            d_bar[i] = t_bar[i]
            nonzero = nonzero or d_bar[i] != 0.0
        if nonzero:
            gamma_bar += _candidate_adjoint(best, d_bar, profit_bar, R, w, gamma, plus, active, lr, u, em, wh,
                                            delta, scale[best], s_a[best], R_bar, w_bar, a_bar)
    return gamma_bar, gas_bar, arb_bar


# ----------------------------------------------------------------------------------------------------------
# one trajectory


@_core_jit
def _trajectory(r0, W, P, fee, gas, arb, table, cfg, reserves, reserves_a, fees, choice, sc, buf):
    """Forward pass of one trajectory (module docstring); row 0 is the initial state. ``sc`` from
    :func:`_scratch`, ``buf`` (13, n) work rows. Phases A and B share one loop body (one compiled copy)."""
    T, n = W.shape
    e, w_prev, w_cur, p_cur, R = buf[0], buf[1], buf[2], buf[3], buf[4]
    valid = sc[8]
    for i in range(n):
        R[i] = r0[i]
        reserves[0, i] = R[i]
        reserves_a[0, i] = R[i]
    fees[0] = 0.0
    choice[0, 0] = 0
    choice[0, 1] = 0
    gamma, log_gamma = 1.0, 0.0
    for t in range(1, T):
        if 1.0 - fee[t] != gamma:  # the fee is usually constant: one log per change, not per minute
            gamma = 1.0 - fee[t]
            log_gamma = math.log(gamma)
        # rows copied into buffers: row views inside the loop would cost a reference count each
        for i in range(n):
            w_prev[i] = W[t - 1, i]
            w_cur[i] = W[t, i]
            p_cur[i] = P[t, i]
        inflow = 0.0
        for phase in range(2):  # A: price arbitrage under w_{t-1}; B: weight arbitrage under w_t
            w = w_prev if phase == 0 else w_cur
            best, gate = _phase(R, w, p_cur, gamma, log_gamma, gas[t], arb[t], table, cfg, sc, e, -1)
            # exact mode's record for the reverse pass: row + 1 when a valid trade was executed, else 0
            choice[t, phase] = (best + 1) if (gate == 1.0 and valid[best]) else 0
            for i in range(n):
                R[i] += e[i]
                inflow += max(e[i], 0.0) * p_cur[i]
                if phase == 0:
                    reserves_a[t, i] = R[i]
        for i in range(n):
            reserves[t, i] = R[i]
        fees[t] = (1.0 - gamma) * inflow


@_core_jit
def _trajectory_adjoint(r0, W, P, fee, gas, arb, table, cfg, reserves, reserves_a, choice, g_reserves, g_fees,
                        g_r0, g_w, g_fee, g_gas, g_arb, sc, buf):
    """Reverse pass of one trajectory: adds the vector-Jacobian product into g_r0, g_w, g_fee, g_gas, g_arb.
    ``sc`` from :func:`_scratch`, ``buf`` (13, n) work rows. Each phase is replayed from its stored input
    reserves (smooth mode in full; exact mode only the executed row) and its adjoint taken, B before A."""
    T, n = W.shape
    e, w_prev, w_cur, p_cur, R_prev, R_a = buf[0], buf[1], buf[2], buf[3], buf[4], buf[5]
    R_bar, e_bar, gw_prev, gw_cur = buf[6], buf[7], buf[8], buf[9]
    smooth = cfg[0]
    for i in range(n):
        R_bar[i] = g_reserves[T - 1, i]
    gamma, log_gamma = 1.0, 0.0
    for t in range(T - 1, 0, -1):
        if 1.0 - fee[t] != gamma:
            gamma = 1.0 - fee[t]
            log_gamma = math.log(gamma)
        fee_bar = g_fees[t]
        for i in range(n):
            w_prev[i] = W[t - 1, i]
            w_cur[i] = W[t, i]
            p_cur[i] = P[t, i]
            R_prev[i] = reserves[t - 1, i]
            R_a[i] = reserves_a[t, i]
            gw_prev[i] = 0.0
            gw_cur[i] = 0.0
        inflow = 0.0
        gamma_bar = 0.0
        for k in range(2):
            phase = 1 - k  # B, then A
            R_in = R_a if phase == 1 else R_prev
            w = w_cur if phase == 1 else w_prev
            gw = gw_cur if phase == 1 else gw_prev
            code = choice[t, phase]
            if smooth or code > 0:
                best, gate = _phase(R_in, w, p_cur, gamma, log_gamma, gas[t], arb[t], table, cfg, sc, e,
                                    -1 if smooth else code - 1)
            else:  # exact mode, no trade: a constant, nothing to propagate but the reserves themselves
                best, gate = 0, 0.0
                for i in range(n):
                    e[i] = 0.0
            # R_out = R_in + e: the adjoint of e is R_bar plus the fee collected on inflows
            for i in range(n):
                inflow += max(e[i], 0.0) * p_cur[i]
                e_bar[i] = R_bar[i] + (fee_bar * (1.0 - gamma) * p_cur[i] if e[i] > 0.0 else 0.0)
            if gate != 0.0:
                gb, sb, ab = _phase_adjoint(e_bar, R_in, w, p_cur, gamma, gas[t], arb[t], table, cfg, sc, best,
                                            gate, R_bar, gw)
                gamma_bar += gb
                g_gas[t] += sb
                g_arb[t] += ab
        gamma_bar -= fee_bar * inflow  # fees_t = (1 - gamma) inflow
        g_fee[t] += -gamma_bar  # gamma = 1 - fee
        for i in range(n):
            R_bar[i] += g_reserves[t - 1, i]
            g_w[t, i] += gw_cur[i]
            g_w[t - 1, i] += gw_prev[i]
    for i in range(n):
        g_r0[i] = R_bar[i]


# ----------------------------------------------------------------------------------------------------------
# batched entry points (one trajectory per prange iteration)


@_jit
def _forward_one(r0, W, P, fee, gas, arb, table, cfg, reserves, reserves_a, fees, choice):
    """One trajectory without a parallel region (whose idle worker would spin on the other core)."""
    sc = _scratch(table[0].shape[0], r0.shape[1])
    buf = np.zeros((13, r0.shape[1]))
    _trajectory(r0[0], W[0], P[0], fee[0], gas[0], arb[0], table, cfg, reserves[0], reserves_a[0], fees[0],
                choice[0], sc, buf)


@_jit
def _adjoint_one(r0, W, P, fee, gas, arb, table, cfg, reserves, reserves_a, choice, g_reserves, g_fees, g_r0,
                 g_w, g_fee, g_gas, g_arb):
    sc = _scratch(table[0].shape[0], r0.shape[1])
    buf = np.zeros((13, r0.shape[1]))
    _trajectory_adjoint(r0[0], W[0], P[0], fee[0], gas[0], arb[0], table, cfg, reserves[0], reserves_a[0],
                        choice[0], g_reserves[0], g_fees[0], g_r0[0], g_w[0], g_fee[0], g_gas[0], g_arb[0], sc, buf)


@_pjit
def _forward_batch(r0, W, P, fee, gas, arb, table, cfg, reserves, reserves_a, fees, choice):
    for b in nb.prange(r0.shape[0]):
        sc = _scratch(table[0].shape[0], r0.shape[1])
        buf = np.zeros((13, r0.shape[1]))
        _trajectory(r0[b], W[b], P[b], fee[b], gas[b], arb[b], table, cfg, reserves[b], reserves_a[b], fees[b],
                    choice[b], sc, buf)


@_pjit
def _adjoint_batch(r0, W, P, fee, gas, arb, table, cfg, reserves, reserves_a, choice, g_reserves, g_fees, g_r0,
                   g_w, g_fee, g_gas, g_arb):
    for b in nb.prange(r0.shape[0]):
        sc = _scratch(table[0].shape[0], r0.shape[1])
        buf = np.zeros((13, r0.shape[1]))
        _trajectory_adjoint(r0[b], W[b], P[b], fee[b], gas[b], arb[b], table, cfg, reserves[b], reserves_a[b],
                            choice[b], g_reserves[b], g_fees[b], g_r0[b], g_w[b], g_fee[b], g_gas[b], g_arb[b], sc,
                            buf)


# ----------------------------------------------------------------------------------------------------------
# numpy entry points: any leading batch axes, broadcast against each other


class FeePathSettings:
    """The static part of a fee-path call (hashable): the candidate table and smooth mode's settings.

    ``smooth`` False is exact mode (hard gate, first-maximum choice, ``|x|``); then the temperatures are
    unused. ``selection`` is one of "hard", "softmax", "straight_through"; temperatures in USD."""

    __slots__ = ("signatures", "smooth", "selection", "gate_temperature", "selection_temperature", "abs_epsilon",
                 "_table")

    def __init__(self, signatures, smooth: bool, selection: str = "softmax", gate_temperature: float = 1.0,
                 selection_temperature: float = 1.0, abs_epsilon: float = 1e-6) -> None:
        sig = np.asarray(signatures, dtype=np.int8)
        if sig.ndim != 2 or sig.shape[1] < 2 or sig.shape[0] < 1:
            raise ValueError(f"signatures must be an (S, n) array with S >= 1, n >= 2; got shape {sig.shape}")
        if selection not in SELECTIONS:
            raise ValueError(f"selection={selection!r} is invalid: allowed one of {', '.join(SELECTIONS)}")
        self.signatures = tuple(map(tuple, sig.tolist()))
        self.smooth = bool(smooth)
        self.selection = selection
        self.gate_temperature = float(gate_temperature)
        self.selection_temperature = float(selection_temperature)
        self.abs_epsilon = float(abs_epsilon)
        self._table = candidate_table(sig)

    @classmethod
    def from_smoothing(cls, signatures, smooth: bool, smoothing) -> "FeePathSettings":
        """From a ``tfmm.Smoothing`` (read only when ``smooth``)."""
        if not smooth:
            return cls(signatures, False)
        return cls(signatures, True, smoothing.selection, smoothing.gate_temperature,
                   smoothing.selection_temperature, smoothing.abs_epsilon)

    @property
    def n_assets(self) -> int:
        return len(self.signatures[0])

    def _key(self) -> tuple:
        return (self.signatures, self.smooth, self.selection, self.gate_temperature, self.selection_temperature,
                self.abs_epsilon)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FeePathSettings) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _args(self) -> tuple:
        """(candidate table, mode tuple) as the kernels take them."""
        cfg = (self.smooth, SELECTIONS[self.selection], self.gate_temperature, self.selection_temperature,
               self.abs_epsilon)
        return self._table, cfg


def _batch_shape(r0, weights, prices, fee, gas, arb_fee) -> tuple[int, ...]:
    return np.broadcast_shapes(r0.shape[:-1], weights.shape[:-2], prices.shape[:-2], fee.shape[:-1],
                               gas.shape[:-1], arb_fee.shape[:-1])


def _read_only(x: np.ndarray) -> np.ndarray:
    """A read-only view: Numba types an array's writability, so every kernel input is passed read-only
    (whether or not it had to be copied) and each kernel compiles once."""
    view = x.view()
    view.flags.writeable = False
    return view


def _flat(x, batch: tuple[int, ...], core: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """``x`` broadcast to ``batch + core``, flattened to ``(prod(batch),) + core``, contiguous, read-only."""
    x = np.broadcast_to(np.asarray(x, dtype=dtype), batch + core)
    return _read_only(np.ascontiguousarray(x.reshape((-1,) + core)))


def sum_to_shape(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` over the axes along which an input of ``shape`` was broadcast (the VJP of broadcasting)."""
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _check_inputs(settings: FeePathSettings, r0, weights, prices, fee, gas, arb_fee) -> tuple:
    n = settings.n_assets
    if r0.shape[-1] != n or weights.shape[-1] != n or prices.shape[-1] != n:
        raise ValueError(f"fee path: r0, weights and prices need {n} assets (the signatures' width); got shapes "
                         f"{r0.shape}, {weights.shape}, {prices.shape}")
    T = weights.shape[-2]
    if prices.shape[-2] != T or fee.shape[-1] != T or gas.shape[-1] != T or arb_fee.shape[-1] != T:
        raise ValueError(f"fee path: weights, prices, fee, gas and arb_fee need the same number of rows; got "
                         f"{weights.shape}, {prices.shape}, {fee.shape}, {gas.shape}, {arb_fee.shape}")
    return _batch_shape(r0, weights, prices, fee, gas, arb_fee), T, n


def forward(settings: FeePathSettings, r0, weights, prices, fee, gas, arb_fee):
    """Reserves and fees of a pool with fees arbitraged every minute (math.md 2.5), for any batch.

    r0 (..., n) tokens; weights, prices (..., T, n); fee, gas (USD), arb_fee (..., T) per row (row 0 unused);
    leading axes broadcast. Returns ``(reserves (B..., T, n), fees (B..., T), residuals)`` in float64 with
    row 0 the initial state; ``residuals`` (Phase A reserves, exact-mode choices) feed :func:`backward`.
    """
    r0, weights, prices, fee, gas, arb_fee = (np.asarray(a) for a in (r0, weights, prices, fee, gas, arb_fee))
    batch, T, n = _check_inputs(settings, r0, weights, prices, fee, gas, arb_fee)
    B = int(np.prod(batch, dtype=np.int64))
    reserves = np.empty((B, T, n))
    reserves_a = np.empty((B, T, n))
    fees = np.empty((B, T))
    choice = np.empty((B, T, 2), dtype=np.int32)
    if B and T:
        (_forward_one if B == 1 else _forward_batch)(_flat(r0, batch, (n,)), _flat(weights, batch, (T, n)), _flat(prices, batch, (T, n)),
                       _flat(fee, batch, (T,)), _flat(gas, batch, (T,)), _flat(arb_fee, batch, (T,)),
                       *settings._args(), reserves, reserves_a, fees, choice)
    return (reserves.reshape(batch + (T, n)), fees.reshape(batch + (T,)),
            (reserves_a.reshape(batch + (T, n)), choice.reshape(batch + (T, 2))))


def backward(settings: FeePathSettings, r0, weights, prices, fee, gas, arb_fee, reserves, residuals, g_reserves,
             g_fees, reduce: bool = True):
    """Vector-Jacobian product of :func:`forward`: given the cotangents of reserves (B..., T, n) and fees
    (B..., T), returns ``(g_r0, g_weights, g_fee, g_gas, g_arb_fee)`` in float64 with the shapes of the
    inputs (summed over the axes they were broadcast along), or with ``reduce=False`` with the whole batch
    shape ``B...`` in front. Exact mode is pathwise (choices fixed)."""
    r0, weights, prices, fee, gas, arb_fee = (np.asarray(a) for a in (r0, weights, prices, fee, gas, arb_fee))
    batch, T, n = _check_inputs(settings, r0, weights, prices, fee, gas, arb_fee)
    B = int(np.prod(batch, dtype=np.int64))
    reserves_a, choice = residuals
    g_r0 = np.zeros((B, n))
    g_w = np.zeros((B, T, n))
    g_fee = np.zeros((B, T))
    g_gas = np.zeros((B, T))
    g_arb = np.zeros((B, T))
    if B and T:
        (_adjoint_one if B == 1 else _adjoint_batch)(_flat(r0, batch, (n,)), _flat(weights, batch, (T, n)), _flat(prices, batch, (T, n)),
                       _flat(fee, batch, (T,)), _flat(gas, batch, (T,)), _flat(arb_fee, batch, (T,)),
                       *settings._args(), _flat(reserves, batch, (T, n)), _flat(reserves_a, batch, (T, n)),
                       _flat(choice, batch, (T, 2), np.int32),
                       _flat(g_reserves, batch, (T, n)), _flat(g_fees, batch, (T,)),
                       g_r0, g_w, g_fee, g_gas, g_arb)
    grads = (g_r0.reshape(batch + (n,)), g_w.reshape(batch + (T, n)), g_fee.reshape(batch + (T,)),
             g_gas.reshape(batch + (T,)), g_arb.reshape(batch + (T,)))
    if not reduce:
        return grads
    return tuple(sum_to_shape(g, x.shape) for g, x in zip(grads, (r0, weights, fee, gas, arb_fee)))


__all__ = ["FeePathSettings", "candidate_table", "forward", "backward", "sum_to_shape"]
