"""Reference G3M pool with per-minute arbitrage (docs/math.md section 2; smooth mode: docs/smooth_mode.md).

Plain ``numba.njit`` loops over time, assets and candidate signatures, in float64, meant to be read
line by line against the specification. Units: reserves in tokens, prices in USD per token, trades
in tokens (> 0 flows into the pool), profits, gas and fees in USD.

Layout: :func:`_candidate_into` is math.md 2.3 for one signature, :func:`_phase` is one arbitrage phase
(math.md 2.4 selection and the 2.5 gate, exact or smooth), :func:`_simulate_kernel` is the scan over
minutes (Phase A then Phase B). Quantities that do not depend on reserves (logs and reciprocals of
prices and weights, the active weight sums of every signature) are computed once per minute or per
weights row, as math.md 2.5 allows. The scan is compiled without reference counting (its buffers come from
the caller), which makes it about twice as fast; the arithmetic is unchanged by that.

Decisions where docs/math.md is silent or leaves a choice:

- ``K_A`` and the price factor of math.md 2.3 are one product of powers, evaluated as one ``exp``:
  ``K_A prod_j (p_j / (g_j wh_j))^{wh_j} = exp(sum_{j in A} wh_j (log R_j + log p_j - log g_j - log wh_j))``.
- Validity (math.md 2.3) is decided in the log domain over the active assets,
  ``sum_{i in A} w_i (log(R_i + gamma^{1[D_i > 0]} D_i) - log R_i) >= log(1 - 1e-9)``, which is
  ``K(R + gamma^{1[D>0]} D) >= K(R) (1 - 1e-9)`` (inactive assets have ``D_i = 0`` and cancel). The
  logarithms are skipped when the bound ``log(1 + x) <= x`` already puts the change below the threshold
  by more than its rounding (:func:`_invariant_holds`); the decision is the same.
- When ``gamma == 1`` at a minute the zero-fee closed-form trade (the all-assets candidate with
  ``g = 1``) replaces the candidates, in both modes, and goes through the same gate. It keeps reserves
  positive and the invariant unchanged by construction, so no validity check is applied to it.
- Phase B is skipped at a minute whose weights equal the previous minute's (bit for bit) when Phase A
  did not move the reserves: it would repeat Phase A's computation on the same inputs and find no trade
  again, so the results are identical to running it. After an executed Phase A it always runs: even with
  unchanged weights it can execute, in smooth mode the rest of a partially gated trade and in both modes
  a tiny trade that the 1e-9 validity tolerance accepts (a wrong-direction candidate next to the edge of
  the no-arbitrage band, where Phase A leaves the pool). math.md 2.6's "Phase A only" for the balancer is
  therefore not applied literally: it would differ from math.md 2.5 by those tiny trades (about 1e-7
  relative, in rare minutes).
- Exact-mode ties in profit go to the lowest candidate index; an invalid candidate is the zero trade
  with profit 0 and takes part in the argmax (and in the smooth softmax, as docs/smooth_mode.md says).
- Straight-through and hard selection have the same forward value (the exact one-hot); only the
  forward pass exists here.
"""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np

VALIDITY_TOLERANCE = 1e-9
LOG_VALIDITY_TOLERANCE = math.log1p(-VALIDITY_TOLERANCE)

SELECTIONS = ("softmax", "straight_through", "hard")
_SOFTMAX = 0  # q = softmax(profit / tau_sel); straight_through and hard share the forward pass (one-hot)

_jit = numba.njit(cache=True, error_model="numpy")
_jit_inline = numba.njit(cache=True, error_model="numpy", inline="always")


# --- signatures --------------------------------------------------------------------------------------

def signature_matrix(n: int, kind: str) -> np.ndarray:
    """Candidate trade directions, one row per signature, in ``itertools.product([1, 0, -1], repeat=n)`` order.

    ``"pairwise"``: exactly one +1 and one -1 (n(n-1) rows); ``"all"``: at least one +1 and one -1
    (3^n - 2^(n+1) + 1 rows). Returns an int64 array (n_candidates, n).
    """
    if n < 2:
        raise ValueError(f"n={n} is invalid: allowed n >= 2 assets")
    if kind not in ("pairwise", "all"):
        raise ValueError(f"kind={kind!r} is invalid: allowed 'pairwise' or 'all'")
    rows = []
    for sigma in itertools.product([1, 0, -1], repeat=n):
        n_in, n_out = sigma.count(1), sigma.count(-1)
        if (kind == "pairwise" and n_in == 1 and n_out == 1) or (kind == "all" and n_in >= 1 and n_out >= 1):
            rows.append(sigma)
    return np.array(rows, dtype=np.int64)


# --- quantities that do not depend on reserves (math.md 2.5, last item) --------------------------------

@_jit_inline
def _weights_row(w, signatures, log_w, inv_w_active, log_w_active):
    """log w and, for every signature k, 1 / sum_{j in A_k} w_j and log sum_{j in A_k} w_j."""
    for j in range(w.shape[0]):
        log_w[j] = math.log(w[j])
    for k in range(signatures.shape[0]):
        total = 0.0
        for j in range(w.shape[0]):
            if signatures[k, j] != 0:
                total += w[j]
        inv_w_active[k] = 1.0 / total
        log_w_active[k] = math.log(total)


@_jit_inline
def _logs_and_inverses(x, log_x, inv_x):
    """log x and 1 / x, element-wise (prices every minute, reserves after they move)."""
    for i in range(x.shape[0]):
        log_x[i] = math.log(x[i])
        inv_x[i] = 1.0 / x[i]


# --- one candidate (math.md 2.3) -----------------------------------------------------------------------

@_jit_inline
def _invariant_change(R, log_R, w, gamma, sigma, trade):
    """log K(R + gamma^{1[D>0]} D) - log K(R) = sum_{i in A} w_i (log(R_i + paid_i) - log R_i)."""
    d_log_k = 0.0
    for i in range(R.shape[0]):
        if sigma[i] != 0:
            paid = gamma * trade[i] if trade[i] > 0.0 else trade[i]
            d_log_k += w[i] * (math.log(R[i] + paid) - log_R[i])
    return d_log_k


@_jit_inline
def _invariant_holds(R, log_R, inv_R, w, gamma, sigma, trade):
    """Validity: ``_invariant_change(...) >= log(1 - 1e-9)``, without logarithms when the answer is clear.

    With x_i = paid_i / R_i the change is sum_A w_i log(1 + x_i) <= sum_A w_i x_i (log(1 + x) <= x).
    If that bound is below the threshold by more than ``margin`` (which exceeds the rounding of the
    logarithms and of the bound) the candidate is invalid; otherwise the logarithms decide. The answer
    is that of the direct comparison; it only skips the logarithms for clearly invalid candidates
    (the usual case: every candidate is invalid while the price stays inside the no-arbitrage band).
    """
    upper = 0.0
    size = 1.0
    for i in range(R.shape[0]):
        if sigma[i] != 0:
            paid = gamma * trade[i] if trade[i] > 0.0 else trade[i]
            x = paid * inv_R[i]
            upper += w[i] * x
            size += abs(log_R[i]) + abs(x)
    margin = 1e-12 * size  # the rounding of either side is below 1e-15 * size
    if upper < LOG_VALIDITY_TOLERANCE - margin:
        return False
    return _invariant_change(R, log_R, w, gamma, sigma, trade) >= LOG_VALIDITY_TOLERANCE


@_jit_inline
def _candidate_into(R, log_R, inv_R, w, log_w, inv_w_active, log_w_active, p, log_p, inv_p, gamma, log_gamma,
                    sigma, out):
    """Candidate trade of signature ``sigma`` written into ``out``; returns (profit USD, valid).

    A = {i: sigma_i != 0}; g_i = gamma if sigma_i = +1 else 1; wh_i = w_i / sum_A w_j;
    Rt_i = K_A (wh_i g_i / p_i) prod_{j in A} (p_j / (g_j wh_j))^{wh_j}, K_A = prod_{j in A} R_j^{wh_j};
    Delta_i = (Rt_i - R_i) / g_i on A, 0 elsewhere. Invalid (R + Delta <= 0 somewhere, or the
    fee-adjusted invariant falls by more than 1e-9 relative) gives the zero trade and profit 0.
    ``inv_*`` are reciprocals, ``log_*`` logarithms; ``inv_w_active``, ``log_w_active`` are this signature's.
    """
    n = R.shape[0]
    log_scale = 0.0  # log(K_A prod_j (p_j / (g_j wh_j))^{wh_j})
    for j in range(n):
        if sigma[j] != 0:
            log_g = log_gamma if sigma[j] > 0 else 0.0
            log_wh = log_w[j] - log_w_active
            log_scale += (w[j] * inv_w_active) * (log_R[j] + log_p[j] - log_g - log_wh)
    scale = math.exp(log_scale)
    valid = True
    for i in range(n):
        if sigma[i] == 0:
            out[i] = 0.0
        else:
            g = gamma if sigma[i] > 0 else 1.0
            target = scale * (w[i] * inv_w_active) * g * inv_p[i]
            out[i] = (target - R[i]) / g
            if R[i] + out[i] <= 0.0:
                valid = False
    if valid:
        valid = _invariant_holds(R, log_R, inv_R, w, gamma, sigma, out)
    if not valid:
        for i in range(n):
            out[i] = 0.0
        return 0.0, False
    profit = 0.0
    for i in range(n):
        profit -= out[i] * p[i]
    return profit, True


@_jit_inline
def _zero_fee_trade_into(R, log_R, w, log_w, p, log_p, inv_p, out):
    """Zero-fee optimal trade (gamma = 1) into ``out``; returns its profit (USD).

    Rt_i = K (w_i / p_i) prod_j (p_j / w_j)^{w_j}, K = prod_j R_j^{w_j}; Delta = Rt - R.
    """
    n = R.shape[0]
    log_scale = 0.0
    for j in range(n):
        log_scale += w[j] * (log_R[j] + log_p[j] - log_w[j])
    scale = math.exp(log_scale)
    profit = 0.0
    for i in range(n):
        out[i] = scale * w[i] * inv_p[i] - R[i]
        profit -= out[i] * p[i]
    return profit


# --- one phase (math.md 2.4, 2.5) -----------------------------------------------------------------------

@_jit_inline
def _sigmoid(x):
    """1 / (1 + exp(-x)), without overflow."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@_jit_inline
def _all_candidates(R, log_R, inv_R, w, log_w, inv_w_active, log_w_active, p, log_p, inv_p, gamma, log_gamma,
                    signatures, cands, profits):
    """Every signature's candidate (rows of ``cands``) and profit; returns the best index (lowest on ties)."""
    best = 0
    for k in range(signatures.shape[0]):
        profit_k, _ = _candidate_into(R, log_R, inv_R, w, log_w, inv_w_active[k], log_w_active[k], p, log_p, inv_p,
                                      gamma, log_gamma, signatures[k], cands[k])
        profits[k] = profit_k
    for k in range(1, signatures.shape[0]):
        if profits[k] > profits[best]:
            best = k
    return best


@_jit_inline
def _phase(R, log_R, inv_R, w, log_w, inv_w_active, log_w_active, p, log_p, inv_p, fee, log_gamma, gas, arb_fee,
           signatures, smooth, selection, gate_temperature, selection_temperature, abs_epsilon, cands, profits,
           trade):
    """One arbitrage phase at weights ``w`` and prices ``p``; updates ``R`` in place.

    Candidates: the zero-fee trade when fee == 0, else one per signature (math.md 2.3).
    Exact: the best candidate (lowest index on ties), executed iff
    profit - gas >= 0.5 arb_fee sum_i |Delta_i| p_i.
    Smooth (docs/smooth_mode.md, forward values): softmax mixture q = softmax(profit / tau_sel), or the
    exact one-hot for straight_through and hard; executed fraction gate = sigmoid((profit - gas - cost) /
    tau_gate) with cost = 0.5 arb_fee sum_i sqrt((Delta_i p_i)^2 + eps^2).
    Writes the executed reserve change E (Delta, times the gate in smooth mode, zeros when refused) into
    ``trade`` and returns (USD fee collected sum_i fee max(E_i, 0) p_i, whether reserves moved).
    """
    n = R.shape[0]
    gamma = 1.0 - fee
    if gamma == 1.0:
        profit = _zero_fee_trade_into(R, log_R, w, log_w, p, log_p, inv_p, trade)
    else:
        best = _all_candidates(R, log_R, inv_R, w, log_w, inv_w_active, log_w_active, p, log_p, inv_p, gamma,
                               log_gamma, signatures, cands, profits)
        if smooth and selection == _SOFTMAX:
            top = profits[best]
            total = 0.0
            for k in range(signatures.shape[0]):
                profits[k] = math.exp((profits[k] - top) / selection_temperature)  # q_k, unnormalised
                total += profits[k]
            profit = 0.0
            for i in range(n):
                trade[i] = 0.0
                for k in range(signatures.shape[0]):
                    trade[i] += (profits[k] / total) * cands[k, i]
                profit -= trade[i] * p[i]
        else:
            for i in range(n):
                trade[i] = cands[best, i]
            profit = profits[best]
    if smooth:
        cost = 0.0
        for i in range(n):
            x = trade[i] * p[i]
            cost += math.sqrt(x * x + abs_epsilon * abs_epsilon)
        executed = _sigmoid((profit - gas - 0.5 * arb_fee * cost) / gate_temperature)
    else:
        cost = 0.0
        for i in range(n):
            cost += abs(trade[i]) * p[i]
        executed = 1.0 if profit - gas >= 0.5 * arb_fee * cost else 0.0
    fee_usd = 0.0
    moved = False
    for i in range(n):
        trade[i] *= executed
        if trade[i] != 0.0:
            moved = True
            R[i] += trade[i]
        if trade[i] > 0.0:
            fee_usd += fee * trade[i] * p[i]
    return fee_usd, moved


# --- the scan over minutes (math.md 2.5) ----------------------------------------------------------------

@_jit_inline
def _copy(src, dst):
    for i in range(src.shape[0]):
        dst[i] = src[i]


@numba.njit(cache=True, error_model="numpy", _nrt=False)
def _simulate_kernel(r0, weights, prices, fee, gas, arb_fee, signatures, smooth, selection, gate_temperature,
                     selection_temperature, abs_epsilon, reserves, trades, fees, work, cands):
    """Fill reserves, trades and fees (see :func:`simulate_reserves`); allocates nothing.

    ``work`` (13, max(n, n_candidates)) and ``cands`` (n_candidates, n) are scratch space. Compiled
    without reference counting: the helpers take array views, whose counting would otherwise cost
    more than the arithmetic. What does not depend on reserves is computed once (math.md 2.5): logs and
    reciprocals of prices per minute, of weights per weights row (Phase A of minute t reuses Phase B's
    row of minute t - 1), log gamma when the fee changes; logs and reciprocals of reserves after they move.
    """
    T, n = weights.shape
    n_cand = signatures.shape[0]
    R, trade = work[0, :n], work[1, :n]
    log_R, inv_R = work[2, :n], work[3, :n]
    log_p, inv_p = work[4, :n], work[5, :n]
    log_w_a, log_w_b = work[6, :n], work[7, :n]  # weights row t - 1 (Phase A) and row t (Phase B)
    inv_wa_a, log_wa_a = work[8, :n_cand], work[9, :n_cand]
    inv_wa_b, log_wa_b = work[10, :n_cand], work[11, :n_cand]
    profits = work[12, :n_cand]
    _copy(r0, R)
    _copy(R, reserves[0])
    for i in range(n):
        trades[0, i] = 0.0
    fees[0] = 0.0
    _logs_and_inverses(R, log_R, inv_R)
    _weights_row(weights[0], signatures, log_w_b, inv_wa_b, log_wa_b)
    log_gamma = 0.0
    for t in range(1, T):
        _copy(log_w_b, log_w_a)
        _copy(inv_wa_b, inv_wa_a)
        _copy(log_wa_b, log_wa_a)
        same_weights = True
        for i in range(n):
            if weights[t, i] != weights[t - 1, i]:
                same_weights = False
        if not same_weights:
            _weights_row(weights[t], signatures, log_w_b, inv_wa_b, log_wa_b)
        _logs_and_inverses(prices[t], log_p, inv_p)
        if t == 1 or fee[t] != fee[t - 1]:
            log_gamma = math.log(1.0 - fee[t])
        # Phase A: price arbitrage under the previous weights at the new prices
        fee_usd, moved = _phase(R, log_R, inv_R, weights[t - 1], log_w_a, inv_wa_a, log_wa_a, prices[t], log_p,
                                inv_p, fee[t], log_gamma, gas[t], arb_fee[t], signatures, smooth, selection,
                                gate_temperature, selection_temperature, abs_epsilon, cands, profits, trade)
        fees[t] = fee_usd
        _copy(trade, trades[t])
        if moved:
            _logs_and_inverses(R, log_R, inv_R)
        # Phase B: weight arbitrage under the new weights, from Phase A's reserves. With the same weights
        # and unmoved reserves it would repeat Phase A's computation exactly (no trade), so it is skipped.
        if moved or not same_weights:
            fee_usd, moved = _phase(R, log_R, inv_R, weights[t], log_w_b, inv_wa_b, log_wa_b, prices[t], log_p,
                                    inv_p, fee[t], log_gamma, gas[t], arb_fee[t], signatures, smooth, selection,
                                    gate_temperature, selection_temperature, abs_epsilon, cands, profits, trade)
            fees[t] += fee_usd
            for i in range(n):
                trades[t, i] += trade[i]
            if moved:
                _logs_and_inverses(R, log_R, inv_R)
        _copy(R, reserves[t])


def _as_f64(name: str, x, ndim: int) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def _per_row(name: str, x, T: int) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    arr = np.full(T, float(arr)) if arr.ndim == 0 else np.ascontiguousarray(arr)
    if arr.shape != (T,):
        raise ValueError(f"{name} must be a scalar or have shape ({T},), got {arr.shape}")
    return arr


def simulate_reserves(
    r0,
    weights,
    prices,
    fee,
    gas,
    arb_fee,
    signatures: np.ndarray,
    smooth: bool = False,
    selection: str = "softmax",
    gate_temperature: float = 1.0,
    selection_temperature: float = 1.0,
    abs_epsilon: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reserves of a pool arbitraged every minute (math.md 2.5), exact or smooth.

    r0: (n,) tokens; weights, prices: (T, n) aligned rows; fee, gas (USD), arb_fee: scalars or (T,).
    Row 0 is ``r0`` (no trade, no fee); for t >= 1, Phase A (weights w_{t-1}, prices P_t) then Phase B
    (w_t, P_t) from Phase A's reserves. Returns reserves (T, n), trades (T, n) (the executed reserve
    changes of both phases, gated in smooth mode) and fees (T,) (USD collected by the pool).
    Temperatures and ``selection`` are used only when ``smooth``.
    """
    weights = _as_f64("weights", weights, 2)
    prices = _as_f64("prices", prices, 2)
    r0 = _as_f64("r0", r0, 1)
    T, n = weights.shape
    if prices.shape != (T, n) or r0.shape != (n,):
        raise ValueError(f"shapes disagree: r0 {r0.shape}, weights {weights.shape}, prices {prices.shape}")
    signatures = np.ascontiguousarray(signatures, dtype=np.int64)
    if signatures.ndim != 2 or signatures.shape[1] != n or signatures.shape[0] == 0:
        raise ValueError(f"signatures must have shape (n_candidates >= 1, {n}), got {signatures.shape}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is invalid: allowed one of {SELECTIONS}")
    n_cand = signatures.shape[0]
    reserves, trades, fees = np.empty((T, n)), np.empty((T, n)), np.empty(T)
    _simulate_kernel(
        r0, weights, prices, _per_row("fee", fee, T), _per_row("gas", gas, T), _per_row("arb_fee", arb_fee, T),
        signatures, bool(smooth), SELECTIONS.index(selection), float(gate_temperature),
        float(selection_temperature), float(abs_epsilon), reserves, trades, fees,
        np.empty((13, max(n, n_cand))), np.empty((n_cand, n)),
    )
    return reserves, trades, fees


# --- single steps and closed forms (for tests and readers) ------------------------------------------

def candidate_trade(R, w, p, gamma: float, sigma) -> tuple[np.ndarray, float, bool]:
    """The candidate trade of one signature (math.md 2.3): (Delta (n,) tokens, profit USD, valid).

    An invalid candidate is returned as the zero trade with profit 0.
    """
    R, w, p = (np.ascontiguousarray(x, dtype=np.float64) for x in (R, w, p))
    sigma = np.ascontiguousarray(sigma, dtype=np.int64)
    out = np.empty_like(R)
    w_active = float(w[sigma != 0].sum())
    profit, valid = _candidate_into(R, np.log(R), 1.0 / R, w, np.log(w), 1.0 / w_active, math.log(w_active), p,
                                    np.log(p), 1.0 / p, float(gamma), math.log(gamma), sigma, out)
    return out, float(profit), bool(valid)


@_jit
def _phase_kernel(R, w, p, fee, gas, arb_fee, signatures, smooth, selection, gate_temperature,
                  selection_temperature, abs_epsilon):
    n, n_cand = R.shape[0], signatures.shape[0]
    log_w, inv_w_active, log_w_active = np.empty(n), np.empty(n_cand), np.empty(n_cand)
    _weights_row(w, signatures, log_w, inv_w_active, log_w_active)
    trade = np.empty(n)
    fee_usd, _ = _phase(R, np.log(R), 1.0 / R, w, log_w, inv_w_active, log_w_active, p, np.log(p), 1.0 / p, fee,
                        math.log(1.0 - fee), gas, arb_fee, signatures, smooth, selection, gate_temperature,
                        selection_temperature, abs_epsilon, np.empty((n_cand, n)), np.empty(n_cand), trade)
    return trade, fee_usd


def arbitrage_step(R, w, p, fee: float, gas: float = 0.0, arb_fee: float = 0.0, signatures=None,
                   smooth: bool = False, selection: str = "softmax", gate_temperature: float = 1.0,
                   selection_temperature: float = 1.0, abs_epsilon: float = 1e-6) -> tuple[np.ndarray, float]:
    """One arbitrage phase (math.md 2.4, 2.5) from reserves ``R`` at weights ``w``, prices ``p``.

    Returns (executed trade (n,) tokens, USD fee collected); ``signatures`` defaults to
    ``signature_matrix(n, "all")``.
    """
    R, w, p = (np.array(x, dtype=np.float64) for x in (R, w, p))
    sig = signature_matrix(R.shape[0], "all") if signatures is None else np.ascontiguousarray(signatures, np.int64)
    if selection not in SELECTIONS:
        raise ValueError(f"selection={selection!r} is invalid: allowed one of {SELECTIONS}")
    trade, fee_usd = _phase_kernel(R, w, p, float(fee), float(gas), float(arb_fee), sig, bool(smooth),
                                   SELECTIONS.index(selection), float(gate_temperature),
                                   float(selection_temperature), float(abs_epsilon))
    return trade, float(fee_usd)


@_jit
def _zero_fee_kernel(r0, weights, prices):
    T, n = weights.shape
    out = np.empty((T, n))
    out[0] = r0
    for t in range(1, T):
        log_mean_x = 0.0  # sum_j w'_j log x_j, x = p / p'
        log_mean_y = 0.0  # sum_j w_j log y_j, y = w / w'
        for j in range(n):
            log_mean_x += weights[t - 1, j] * math.log(prices[t, j] / prices[t - 1, j])
            log_mean_y += weights[t, j] * math.log(weights[t, j] / weights[t - 1, j])
        for i in range(n):
            rho_p = math.exp(log_mean_x) / (prices[t, i] / prices[t - 1, i])
            rho_w = (weights[t, i] / weights[t - 1, i]) / math.exp(log_mean_y)
            out[t, i] = out[t - 1, i] * rho_p * rho_w
    return out


def zero_fee_closed_form(r0, weights, prices) -> np.ndarray:
    """Zero-fee reserves (math.md 2.2): R_t = R_{t-1} rho_p rho_w, a plain loop over minutes.

    rho_p_i = exp(sum_j w'_j log x_j) / x_i with x = P_t / P_{t-1}, w' = w_{t-1};
    rho_w_i = y_i / exp(sum_j w_j log y_j) with y = w_t / w_{t-1}, w = w_t. Returns (T, n).
    """
    weights = _as_f64("weights", weights, 2)
    prices = _as_f64("prices", prices, 2)
    r0 = _as_f64("r0", r0, 1)
    if prices.shape != weights.shape or r0.shape != weights.shape[1:]:
        raise ValueError(f"shapes disagree: r0 {r0.shape}, weights {weights.shape}, prices {prices.shape}")
    return _zero_fee_kernel(r0, weights, prices)


def hodl_reserves(r0, n_rows: int) -> np.ndarray:
    """HODL baseline (math.md 2.6): R_t = R_0 for every row; (n_rows, n)."""
    return np.tile(np.asarray(r0, dtype=np.float64), (n_rows, 1))


__all__ = [
    "VALIDITY_TOLERANCE", "SELECTIONS", "signature_matrix", "candidate_trade", "arbitrage_step",
    "simulate_reserves", "zero_fee_closed_form", "hodl_reserves",
]
