"""G3M pool reserves: the zero-fee closed form and the per-minute arbitrage step with fees (docs/math.md section 2).

Written once against the Array API (``bk.xp``) plus the backend primitives (``bk.scan``, ``bk.where``,
``bk.cumsum``, ``bk.softmax``, ``bk.sigmoid``, ``bk.one_hot``, ``bk.argmax``, ``bk.stop_gradient``), so the
same code runs under JAX and torch, inside ``jit`` and ``vmap``. Units: reserves in tokens, prices in USD per
token; profits, gas, costs and fees in USD; fee rates dimensionless.

Candidate trades (math.md 2.3) in the form evaluated here. For a signature ``sigma`` with active set ``A``,
``S_A = sum_{j in A} w_j``, ``wh = w / S_A``, ``g_i = gamma`` where ``sigma_i = +1`` (else 1):

    y_i = R_i p_i / (g_i wh_i)        (USD; all equal at the candidate's optimum)
    C   = exp(sum_A wh_j log y_j),    u_i = log y_i - log C
    Rt_i = R_i exp(-u_i),   Delta_i = (R_i / g_i) expm1(-u_i),
    profit = -Delta . p = sum_A wh_i y_i - C = C sum_A wh_i (expm1(u_i) - u_i)   (weighted AM - GM >= 0)

which is math.md's ``Rt_i = K_A (wh_i g_i / p_i) exp(sum_A wh_j log(p_j / (g_j wh_j)))``,
``Delta_i = (Rt_i - R_i) / g_i`` rearranged. ``u`` comes from logs of the ratios ``y_i / y_r`` (``r`` the
row's first active asset), which are close to 1 near equilibrium. **[fix]** Computing ``Rt - R`` and
``-Delta . p`` directly cancels: a trade of 1e-4 of the pool has a profit of ~1e-8 of the pool, below the
rounding of its legs in float32 (~1e-7), so the gate executed rounding noise and a 30-day float32 run drifted
0.7% from float64. This form keeps float32 within ~1e-5 of float64 (tests/test_jax_backend.py) at a cost of
1.5-2x in the scan body (bench/README.md). The scan body computes the ratios, ``S x n`` logs and ``expm1``s,
validity, profits, selection and the gate; weights and prices enter per minute.

Decisions where docs/math.md is silent, or where this module picks a formulation:

- Validity (math.md 2.3: ``R + Delta > 0`` and ``K(R + g' Delta) >= K(R) (1 - 1e-9)``, ``g'_i = gamma`` where
  ``Delta_i > 0``, else 1) is evaluated without the rounding of the identity every candidate satisfies by
  construction, ``K(R + g Delta) = K(R)`` (``g`` from the signature). Dividing by it,
  ``log K(R + g' Delta) - log K(R) = sum_i w_i log1p(c_i)``, ``c_i = (g'_i - g_i) Delta_i / (R_i + g_i Delta_i)``:
  exactly 0 where the trade's direction agrees with ``sigma`` and ``-f |Delta_i| / Rt_i < 0`` where it does
  not. ``log1p(c)`` is taken as ``c - c^2 / 2``: where the test is close (the sum within 1e-9) ``|c|`` is
  below ``1e-9 / w_i`` and the neglected ``|c|^3 / 3`` is some 1e-11 of the tolerance, far below the
  rounding of any literal evaluation of ``K``; where it is not close the sign of the comparison is the same.
  This is math.md's test in exact arithmetic, and it keeps the 1e-9 tolerance meaningful in float32 (a literal
  float32 evaluation of ``K`` has rounding errors near 1e-6; a tolerance large enough to absorb them would
  accept wrong-direction trades of up to ``tol / f`` of the pool). It differs from a literal float64
  evaluation only for trades that drain a reserve to about 1e-9 of itself, where the literal ``K(R + g Delta)``
  itself rounds by more than the tolerance.
- The tolerance admits wrong-direction candidates whose invariant fall is below 1e-9 (``|Delta_i| / R_i``
  up to about ``1e-9 / (f w_i)``), as math.md specifies, and an admitted one with a positive profit is
  executed. Deep inside the no-arbitrage band a wrong-direction candidate has ``|Delta| / R`` of order
  ``f`` and lowers the invariant by about ``f^2 w / 2``, so it is rejected unless the fee is below about
  1e-4. At the band's edge, where Phase A leaves the pool, it is as small as the distance to the edge and
  is admitted at any fee: with no gas or arbitrage cost most Phase Bs after a trade execute such a tiny
  trade (its profit is ~1e-16 of the pool). Each costs the pool at most 1e-9 of its invariant; these
  near-zero margins are the decision boundaries the parity tests exclude from strict comparisons.
- With ``gamma == 1`` at a minute (``fee[t] == 0``) the candidate set is replaced by the zero-fee trade of
  docs/smooth_mode.md, evaluated as one extra candidate row (all assets active, no fee) that is the only
  selectable row at such minutes (the signature rows are the selectable ones at the other minutes; masking
  uses ``where`` with a score of ``-inf``). It gets the same validity check, which it always passes.
  The row is left out when ``fee`` is known while tracing (a Python or numpy value) and never 0 after row 0,
  and when every signature activates every asset (n = 2): then each signature's candidate at ``gamma = 1``
  is the zero-fee trade bit for bit, so the selection (exact, or any smooth mix of identical trades)
  gives that trade.
- ``fees`` are recorded with the gate applied (0 or 1 in exact mode, the sigmoid in smooth mode) and with the
  executed (mixed, in softmax mode) trade of each phase. ``trades`` (both phases' executed trades) are
  returned as the reserve changes ``R_t - R_{t-1}``, taken after the scan: equal to the sum of the two
  executed trades up to the rounding of the reserves (about 1e-16 of them), and one output fewer in the loop.
- float32 works (inputs stay float32): with the cancellation-free profits above, a 30-day float32 bout stays
  within about 1e-5 of float64 on the scan (1.2e-5 measured; 1.5e-7 on the fused kernel, which computes in
  float64 and rounds once). An earlier literal form lost 0.85% over 30 days: the gate then executed
  rounding noise in the arbitrageur's favour. Use float64 to evaluate pools.
- Row 0 of every output is the initial state: reserves ``r0``, zero trade, zero fee; ``fee``, ``gas`` and
  ``arb_fee`` of row 0 are unused. Scalars are accepted for ``fee``, ``gas`` and ``arb_fee`` (broadcast to T).
- Gradients stay finite: the scan takes logarithms of prices, weights and reserves only (the reserves stay
  > 0: a valid candidate keeps ``R + Delta > 0`` and every executed trade is a convex combination of valid
  candidates and the zero trade); validity only selects through ``where`` (its inputs are sanitised so
  nothing is NaN), and unselectable candidates get a ``-inf`` score, whose softmax weight and gradient are
  exactly 0.
- Speed (XLA:CPU): sums over the few assets and candidates are written as explicit adds (``_sum_last``)
  because XLA reduces tiny trailing axes slowly; the carry is the reserves and the previous weights row.
  The scan runs several times faster when XLA compiles the whole loop into one kernel, which it does
  only below a size threshold unless told otherwise
  (``XLA_FLAGS=--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=1000000000000``, set
  before JAX starts); see bench/bench_pool_step.py.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

SIGNATURE_KINDS = ("pairwise", "all")
INVARIANT_TOLERANCE = 1e-9  # math.md 2.3: relative fall of the fee-adjusted invariant accepted as "not falling"
LOG_FLOOR = float(np.log1p(-INVARIANT_TOLERANCE))


def signature_matrix(n_assets: int, kind: str) -> np.ndarray:
    """Trade-direction signatures ``sigma in {-1, 0, +1}^n`` (math.md 2.3), in ``itertools.product([1, 0, -1])`` order.

    kind "pairwise": exactly one +1 and one -1, ``n (n - 1)`` rows; "all": at least one +1 and one -1,
    ``3^n - 2^(n+1) + 1`` rows. Returns an (S, n) int8 numpy array (static configuration, not traced).
    """
    if kind not in SIGNATURE_KINDS:
        raise ValueError(f"kind={kind!r} is invalid: allowed one of {', '.join(map(repr, SIGNATURE_KINDS))}")
    if isinstance(n_assets, bool) or not isinstance(n_assets, (int, np.integer)) or n_assets < 2:
        raise ValueError(f"n_assets={n_assets!r} is invalid: allowed an integer >= 2")
    rows = []
    for sigma in itertools.product((1, 0, -1), repeat=int(n_assets)):
        plus, minus = sigma.count(1), sigma.count(-1)
        if (plus == 1 and minus == 1) if kind == "pairwise" else (plus >= 1 and minus >= 1):
            rows.append(sigma)
    return np.array(rows, dtype=np.int8)


def initial_reserves(initial_value: Any, weights0: Any, prices0: Any, xp: Any) -> Any:
    """``R_0 = V_0 w_0 / P_0`` (math.md 2.1): tokens, shape (n,); ``V_0`` in USD, ``P_0`` in USD per token."""
    prices0 = xp.asarray(prices0)
    weights0 = xp.asarray(weights0, dtype=prices0.dtype)
    return initial_value * weights0 / prices0


def log_rebalancing_ratios(weights: Any, prices: Any, xp: Any) -> Any:
    """``log(rho_p * rho_w)`` of math.md 2.2 for rows 1..T-1: shape (T - 1, n).

    With ``x = p_t / p_{t-1}`` and ``y = w_t / w_{t-1}``:
    ``log rho_i = sum_j w_{t-1,j} log x_j - log x_i + log y_i - sum_j w_{t,j} log y_j``.
    """
    log_p, log_w = xp.log(prices), xp.log(weights)
    log_x = log_p[1:, ...] - log_p[:-1, ...]
    log_y = log_w[1:, ...] - log_w[:-1, ...]
    common = _sum_last(weights[:-1, ...] * log_x - weights[1:, ...] * log_y, xp)
    return common[..., None] + (log_y - log_x)


def zero_fee_reserves(r0: Any, weights: Any, prices: Any, bk: Any) -> Any:
    """Reserves of a fee-free pool arbitraged to equilibrium every minute (math.md 2.2), shape (T, n).

    ``R_t = r0 * exp(cumsum_{u <= t} log(rho_p,u * rho_w,u))``, row 0 = ``r0``: one parallel pass over time
    (``bk.cumsum``), no sequential scan. The per-asset part of ``log rho`` telescopes,
    ``sum_{u <= t} (log y_u,i - log x_u,i) = log(w_t,i / w_0,i) - log(p_t,i / p_0,i)``, so only the common part
    ``c_u = sum_j (w_{u-1,j} log x_u,j - w_u,j log y_u,j)`` is accumulated:
    ``R_t,i = r0_i exp(C_t) (w_t,i / w_0,i) (p_0,i / p_t,i)`` with ``C_t = sum_{u <= t} c_u`` (in logs).
    ``r0`` must be in equilibrium with ``weights[0]``, ``prices[0]`` for this to equal :func:`reserves_with_fees`
    with zero fee.
    """
    xp = bk.xp
    prices = xp.asarray(prices)
    dt = prices.dtype
    weights = xp.asarray(weights, dtype=dt)
    r0 = xp.asarray(r0, dtype=dt)
    log_p, log_w = xp.log(prices), xp.log(weights)
    growth = _log_growth(weights, log_w, log_p, bk)
    log_growth = growth[:, None] + ((log_w - log_w[:1, ...]) - (log_p - log_p[:1, ...]))
    # in the log domain throughout: r0 * exp(log_growth) overflows (or underflows) in the exponential alone
    # when a tiny (huge) reserve meets a large (small) growth, although the product is representable
    return xp.exp(xp.log(r0) + log_growth)


def _log_growth(weights: Any, log_w: Any, log_p: Any, bk: Any) -> Any:
    """``C_t = sum_{u <= t} sum_j (w_{u-1,j} log x_u,j - w_u,j log y_u,j)``, (T,), ``C_0 = 0``."""
    xp = bk.xp
    log_x = log_p[1:, ...] - log_p[:-1, ...]
    log_y = log_w[1:, ...] - log_w[:-1, ...]
    common = _sum_last(weights[:-1, ...] * log_x - weights[1:, ...] * log_y, xp)
    return bk.cumsum(xp.concat([xp.zeros_like(log_p[:1, 0]), common], axis=0), axis=0)


def zero_fee_values(initial_value: Any, weights: Any, prices: Any, bk: Any) -> Any:
    """Value (USD) of the fee-free pool of :func:`zero_fee_reserves` started in equilibrium,
    ``R_0 = V_0 w_0 / P_0``: ``V_t = sum_i R_t,i p_t,i = V_0 exp(C_t) sum_i w_t,i = V_0 exp(C_t)``, (T,).
    The same numbers as summing the reserves' values, without the per-asset exponentials."""
    xp = bk.xp
    prices = xp.asarray(prices)
    weights = xp.asarray(weights, dtype=prices.dtype)
    growth = _log_growth(weights, xp.log(weights), xp.log(prices), bk)
    return initial_value * xp.exp(growth)


# ----------------------------------------------------------------------------------------------------------
# small static reductions: unrolled into slices and adds (XLA:CPU reduces tiny trailing axes slowly)

UNROLL_LIMIT = 8  # largest axis summed by explicit adds; longer axes use xp.sum / a matmul


def _sum_last(x: Any, xp: Any) -> Any:
    """``sum(x, axis=-1)``, unrolled for a short static last axis."""
    n = x.shape[-1]
    if n > UNROLL_LIMIT:
        return xp.sum(x, axis=-1)
    total = x[..., 0]
    for j in range(1, n):
        total = total + x[..., j]
    return total


def _sum_first(x: Any, xp: Any) -> Any:
    """``sum(x, axis=0)``, unrolled for a short static first axis."""
    m = x.shape[0]
    if m > UNROLL_LIMIT:
        return xp.sum(x, axis=0)
    total = x[0, ...]
    for j in range(1, m):
        total = total + x[j, ...]
    return total


def _all_last(x: Any, xp: Any) -> Any:
    """``all(x, axis=-1)``, unrolled for a short static last axis."""
    n = x.shape[-1]
    if n > UNROLL_LIMIT:
        return xp.all(x, axis=-1)
    out = x[..., 0]
    for j in range(1, n):
        out = out & x[..., j]
    return out


def _masked_sums(x: Any, mask: np.ndarray, xp: Any) -> Any:
    """``y[..., s] = sum_{j: mask[s, j]} x[..., j]`` for a static 0/1 mask (S, n): shape (..., S)."""
    if mask.size > 4 * UNROLL_LIMIT * UNROLL_LIMIT:
        return x @ xp.asarray(mask.T.astype(np.float64), dtype=x.dtype)
    cols = []
    for row in mask:
        idx = np.nonzero(row)[0]
        if idx.size == 0:
            cols.append(xp.zeros_like(x[..., 0]))
            continue
        acc = x[..., int(idx[0])]
        for j in idx[1:]:
            acc = acc + x[..., int(j)]
        cols.append(acc)
    return xp.stack(cols, axis=-1)


# ----------------------------------------------------------------------------------------------------------
# candidate trades (math.md 2.3)


@dataclass(frozen=True, eq=False)
class CandidateRows:
    """Static description of the candidate rows: masks ``|sigma| != 0`` and ``sigma = +1`` (S, n) numpy bool;
    ``n_fee_rows``: the rows that are signatures (a last row, if any, is the zero-fee trade);
    ``full``: every row activates every asset (then ``S_A = sum_j w_j`` for all rows)."""

    active: np.ndarray
    plus: np.ndarray
    n_fee_rows: int

    @property
    def full(self) -> bool:
        return bool(np.all(self.active))

    @classmethod
    def from_signatures(cls, signatures: np.ndarray, zero_fee_row: bool = False) -> "CandidateRows":
        """Rows of ``signatures`` (S, n), plus, when ``zero_fee_row``, the zero-fee trade as row S (all assets
        active, no fee: ``plus`` all False)."""
        sig = np.asarray(signatures)
        active, plus = sig != 0, sig == 1
        if zero_fee_row:
            n = sig.shape[1]
            active = np.concatenate([active, np.ones((1, n), dtype=bool)], axis=0)
            plus = np.concatenate([plus, np.zeros((1, n), dtype=bool)], axis=0)
        return cls(active, plus, sig.shape[0])


def _phi(u: Any, em: Any, bk: Any) -> Any:
    """``expm1(u) - u >= 0`` without cancellation, given ``em = expm1(-u)``: a 5-term series for
    ``|u| < 1e-3`` (relative error < 1e-16), else ``-em / (1 + em) - u`` (``expm1(u) = -em / (1 + em)``)."""
    xp = bk.xp
    small = xp.abs(u) < 1e-3
    us = bk.where(small, u, 0.0)
    series = us * us * (0.5 + us * (1.0 / 6.0 + us * (1.0 / 24.0 + us / 120.0)))
    return bk.where(small, series, -em / (1.0 + em) - u)


def _candidates(reserves: Any, weights: Any, log_price_over_weight: Any, prices: Any, gamma: Any, log_gamma: Any,
                gm1: Any, rows: CandidateRows, bk: Any) -> tuple[Any, Any, Any]:
    """Every candidate trade of one state: (deltas (S, n), profits (S,), valid (S,)); invalid ones are zero.

    Cancellation-free form of math.md 2.3. With ``y_i = R_i p_i / (g_i wh_i)`` (USD; equal for all active
    assets at the candidate's optimum), ``C = exp(sum_A wh_j log y_j)`` and ``u_i = log y_i - log C``:

        Rt_i = R_i exp(-u_i),   Delta_i = (R_i / g_i) expm1(-u_i),
        profit = -Delta . p = sum_A wh_i y_i - C = C sum_A wh_i (expm1(u_i) - u_i)   (AM - GM >= 0).

    ``u`` is formed from logs of ratios ``y_i / y_r`` (r: the row's first active asset), which are near 1
    close to equilibrium, so trades and profits keep full relative precision even when they are 1e-6 of
    the pool (``-Delta . p`` would cancel to the rounding of the legs: 1e-7 of the pool value in float32).
    Validity as in the module docstring.
    """
    xp = bk.xp
    dt = reserves.dtype
    plus = xp.asarray(rows.plus.astype(np.float64), dtype=dt)
    g_sig = 1.0 + plus * (gamma - 1.0)  # (S, n), exact: gamma - 1 = -f
    price_over_weight = prices / weights
    if rows.full:  # every row activates every asset: reference asset 0 for all rows, no masks
        active = None
        g_ref = g_sig[:, 0]
        r_ref, pw_ref = reserves[0], price_over_weight[0]
        rest = ((reserves[1:] / r_ref) * (price_over_weight[1:] / pw_ref))[None, :] * (g_ref[:, None] / g_sig[:, 1:])
        log_ratio = xp.concat([xp.zeros_like(g_sig[:, :1]), xp.log(rest)], axis=1)  # log(y_i / y_0)
        s_a = _sum_last(weights, xp)
        wh = (weights / s_a)[None, :]
        mean_log = _sum_last(wh * log_ratio, xp)  # log(C / y_0)
        u = log_ratio - mean_log[:, None]
        em = xp.expm1(-u)
        deltas = reserves[None, :] * em / g_sig
        scale = r_ref * pw_ref * s_a / g_ref * xp.exp(mean_log)  # C, USD
    else:
        ref = np.argmax(rows.active, axis=1)  # first active asset of each row (static)
        active = xp.asarray(rows.active)
        g_ref = 1.0 + xp.asarray(rows.plus[np.arange(ref.size), ref].astype(np.float64), dtype=dt) * (gamma - 1.0)
        r_ref = xp.stack([reserves[int(r)] for r in ref])
        pw_ref = xp.stack([price_over_weight[int(r)] for r in ref])
        ratio = ((reserves[None, :] / r_ref[:, None]) * (price_over_weight[None, :] / pw_ref[:, None])
                 * (g_ref[:, None] / g_sig))
        log_ratio = bk.where(active, xp.log(bk.where(active, ratio, 1.0)), 0.0)  # log(y_i / y_r), 0 off A
        masked_w = bk.where(active, weights[None, :], 0.0)
        s_a = _sum_last(masked_w, xp)  # S_A
        wh = masked_w / s_a[:, None]
        mean_log = _sum_last(wh * log_ratio, xp)  # log(C / y_r)
        u = bk.where(active, log_ratio - mean_log[:, None], 0.0)
        em = xp.expm1(-u)
        deltas = bk.where(active, reserves[None, :] * em / g_sig, 0.0)
        scale = r_ref * pw_ref * s_a / g_ref * xp.exp(mean_log)  # C, USD
    targets = reserves[None, :] + g_sig * deltas  # Rt = R exp(-u)
    profits = scale * _sum_last(wh * _phi(u, em, bk), xp)
    # validity (module docstring): R + Delta > 0 and sum_i w_i log1p(c_i) >= log1p(-tol) with
    # c_i = -f |Delta_i| / Rt_i where the direction disagrees with sigma, else 0.
    positive = reserves + deltas > 0.0
    wrong = bk.where(xp.asarray(rows.plus), deltas < 0.0, deltas > 0.0)
    if active is None:
        c = bk.where(wrong & positive, -(1.0 - gamma) * xp.abs(deltas) / targets, 0.0)
    else:
        c = -(1.0 - gamma) * xp.abs(deltas) / bk.where(active, targets, 1.0)
        c = bk.where(wrong & positive & active, c, 0.0)
    log_change = _sum_last(weights * (c - 0.5 * c * c), xp)
    valid = _all_last(positive, xp) & (log_change >= LOG_FLOOR)
    deltas = bk.where(valid[:, None], deltas, 0.0)
    profits = bk.where(valid, profits, 0.0)
    return deltas, profits, valid


def candidate_trades(reserves: Any, weights: Any, prices: Any, gamma: Any, signatures: np.ndarray,
                     bk: Any) -> tuple[Any, Any, Any]:
    """math.md 2.3 for one pool state: the optimal trade of each signature, with its profit and validity.

    reserves R (n,) tokens, weights w (n,), prices p (n,) USD, fee factor ``gamma = 1 - fee``, signatures (S, n).
    Returns (deltas (S, n) reserve changes, > 0 into the pool; profits (S,) USD ``= -Delta . p``; valid (S,)
    bool). Invalid candidates (``R + Delta <= 0`` or the fee-adjusted invariant falls by more than the
    tolerance) are zero trades with profit 0.
    """
    xp = bk.xp
    prices = xp.asarray(prices)
    dt = prices.dtype
    reserves = xp.asarray(reserves, dtype=dt)
    weights = xp.asarray(weights, dtype=dt)
    gamma = xp.asarray(gamma, dtype=dt)
    rows = CandidateRows.from_signatures(signatures)
    lpw = xp.log(prices) - xp.log(weights)
    return _candidates(reserves, weights, lpw, prices, gamma, xp.log(gamma), 1.0 / gamma - 1.0, rows, bk)


# ----------------------------------------------------------------------------------------------------------
# the per-minute step with fees (math.md 2.4, 2.5; docs/smooth_mode.md)


def selection_weights(profits: Any, selectable: Any, smooth: bool, smoothing: Any, bk: Any) -> Any:
    """Selection weights q (S,) over candidates: exact one-hot of the first maximum, or smooth mode's."""
    xp = bk.xp
    score = profits if selectable is None else bk.where(selectable, profits, -xp.inf)
    n = profits.shape[-1]
    if not smooth or smoothing.selection in ("hard", "straight_through"):
        hard = bk.one_hot(bk.argmax(score, axis=-1), n, profits.dtype)
        if not smooth or smoothing.selection == "hard":
            return hard
    soft = bk.softmax(score / smoothing.selection_temperature, axis=-1)
    if smoothing.selection == "softmax":
        return soft
    return soft + bk.stop_gradient(hard - soft)


def gate_margin(profit: Any, trade: Any, prices: Any, gas: Any, arb_fee: Any, smoothing: Any, bk: Any) -> Any:
    """``profit - gas - cost`` (USD), ``cost = 0.5 arb_fee sum_i |Delta_i p_i|``; with ``smoothing`` (smooth mode)
    ``|x|`` is ``sqrt(x^2 + eps^2)``. ``gas`` / ``arb_fee`` None: statically zero (the term is left out)."""
    xp = bk.xp
    margin = profit if gas is None else profit - gas
    if arb_fee is not None:
        value = trade * prices
        if smoothing is not None:
            eps = smoothing.abs_epsilon
            margin = margin - 0.5 * arb_fee * _sum_last(xp.sqrt(value * value + eps * eps), xp)
        else:
            margin = margin - 0.5 * arb_fee * _sum_last(xp.abs(value), xp)
    return margin


def _gate(profit: Any, trade: Any, prices: Any, gas: Any, arb_fee: Any, smoothing: Any, bk: Any) -> Any:
    """Smooth mode's gate ``sigmoid(margin / tau)``; exact mode (``smoothing`` None): ``margin >= 0``."""
    margin = gate_margin(profit, trade, prices, gas, arb_fee, smoothing, bk)
    if smoothing is not None:
        return bk.sigmoid(margin / smoothing.gate_temperature)
    return margin >= 0.0


class Minute(NamedTuple):
    """What both phases of one minute share: prices (n,) USD per token; gamma = 1 - fee, log(gamma) and
    1 / gamma - 1; gas USD and arb_fee (None when 0 everywhere); selectable (candidates,) bool or None (the
    zero-fee row alone at a minute without a fee, the signature rows otherwise)."""

    prices: Any
    gamma: Any
    log_gamma: Any
    inv_gamma_m1: Any
    gas: Any
    arb_fee: Any
    selectable: Any


def _phase(reserves: Any, weights: Any, log_price_over_weight: Any, minute: Minute, rows: CandidateRows,
           smooth: bool, smoothing: Any, bk: Any) -> tuple[Any, Any]:
    """One arbitrage phase: candidates, selection, gate, update. Returns (reserves, executed trade)."""
    xp = bk.xp
    deltas, profits, _ = _candidates(reserves, weights, log_price_over_weight, minute.prices, minute.gamma,
                                     minute.log_gamma, minute.inv_gamma_m1, rows, bk)
    q = selection_weights(profits, minute.selectable, smooth, smoothing, bk)
    trade = _sum_first(q[:, None] * deltas, xp)
    profit = _sum_last(q * profits, xp)  # = -trade . p, without its cancellation
    gate = _gate(profit, trade, minute.prices, minute.gas, minute.arb_fee, smoothing if smooth else None, bk)
    executed = gate * trade if smooth else bk.where(gate, trade, 0.0)
    return reserves + executed, executed


def _as_rows(x: Any, n_rows: int, dtype: Any, xp: Any) -> Any:
    x = xp.asarray(x, dtype=dtype)
    return xp.broadcast_to(x, (n_rows,)) if x.ndim == 0 else x


def _per_step(x: Any, static: np.ndarray | None, n_rows: int, dtype: Any, xp: Any) -> tuple[Any, bool]:
    """(values for steps 1..T-1, varies): a 0-d array when ``x`` is known and the same at every step,
    else the (T - 1,) array."""
    if static is not None:
        values = np.broadcast_to(static, (n_rows,))[1:]
        if values.size == 0 or bool(np.all(values == values[0])):
            return xp.asarray(float(values[0]) if values.size else 0.0, dtype=dtype), False
    return _as_rows(x, n_rows, dtype, xp)[1:], True


def _static(x: Any) -> np.ndarray | None:
    """The value of a Python or numpy number/array (known while tracing), else None (a traced array)."""
    if isinstance(x, (int, float, np.ndarray, np.generic)):
        return np.asarray(x, dtype=np.float64)
    return None


def reserves_with_fees(r0: Any, weights: Any, prices: Any, fee: Any, gas: Any, arb_fee: Any, signatures: np.ndarray,
                       *, smooth: bool, smoothing: Any, bk: Any,
                       checkpoint_every: int | None = None) -> tuple[Any, Any, Any]:
    """Reserves of a pool with fees arbitraged every minute (math.md 2.5), exact or smooth mode.

    r0 (n,) tokens; weights, prices (T, n); fee, gas (USD), arb_fee: (T,) per row (or scalars), row t's
    values apply to step t; signatures (S, n) from :func:`signature_matrix`; smoothing: a ``tfmm.Smoothing``
    (used when ``smooth``). For t >= 1: Phase A (weights ``w_{t-1}``, prices ``P_t``), then Phase B
    (weights ``w_t``, prices ``P_t``). Returns (reserves (T, n), trades (T, n) executed reserve change of both
    phases, > 0 into the pool; fees (T,) USD collected ``sum_i f max(Delta_i, 0) p_i`` times the gate); row 0
    is ``r0``, zero trade, zero fee. ``checkpoint_every`` rematerialises scan segments of that many minutes
    on the backward pass (memory ``O(T / k + k)``).

    Passing ``fee``, ``gas`` and ``arb_fee`` as Python or numpy values (not traced arrays) lets the scan body
    leave out what they make unnecessary: the zero-fee candidate when no fee is 0, gas and the arbitrage cost
    when they are 0 everywhere. Results are the same either way.
    """
    xp = bk.xp
    prices = xp.asarray(prices)
    dt = prices.dtype
    weights = xp.asarray(weights, dtype=dt)
    r0 = xp.asarray(r0, dtype=dt)
    table, consts, rows = _rate_table(prices, weights, fee, gas, arb_fee, signatures, xp)
    names = tuple(table)
    is_zero_fee_row = xp.asarray(np.arange(rows.active.shape[0]) == rows.n_fee_rows)

    def step(carry, x):
        r, w_prev, lw_prev = carry
        x = {**consts, **dict(zip(names, x))}
        lp, lw = xp.log(x["prices"]), xp.log(x["weights"])
        zero_fee = x.get("zero_fee")
        selectable = None if zero_fee is None else bk.where(zero_fee, is_zero_fee_row, ~is_zero_fee_row)
        minute = Minute(x["prices"], x["gamma"], x["log_gamma"], x["inv_gamma_m1"], x.get("gas"), x.get("arb_fee"),
                        selectable)
        r_a, t_a = _phase(r, w_prev, lp - lw_prev, minute, rows, smooth, smoothing, bk)
        r_b, t_b = _phase(r_a, x["weights"], lp - lw, minute, rows, smooth, smoothing, bk)
        return (r_b, x["weights"], lw), (r_b, _fees_collected(t_a, t_b, minute, bk))

    xs = tuple(table[k] for k in names)
    carry = (r0, weights[0, ...], xp.log(weights[0, ...]))
    if checkpoint_every is None:
        _, (res, fees) = bk.scan(step, carry, xs)
    else:
        _, (res, fees) = bk.scan(step, carry, xs, checkpoint_every=checkpoint_every)
    reserves = xp.concat([r0[None, :], res], axis=0)
    # the executed trades of both phases are the reserve changes (up to rounding of the reserves), taken
    # after the scan so that the loop writes fewer outputs
    trades = reserves - xp.concat([r0[None, :], reserves[:-1, ...]], axis=0)
    fees = xp.concat([xp.zeros_like(r0[:1]), fees], axis=0)
    return reserves, trades, fees


def _fees_collected(trade_a: Any, trade_b: Any, minute: Minute, bk: Any) -> Any:
    """USD collected in one minute: f sum_i max(Delta_i, 0) p_i over both phases' executed trades. ``where``
    rather than ``maximum``, whose gradient at a leg of exactly 0 (not traded) is 1/2 in JAX and torch: a leg
    that is not traded collects no fee, and its derivative is taken as 0 (as the fused kernel does)."""
    inflow = bk.where(trade_a > 0.0, trade_a, 0.0) + bk.where(trade_b > 0.0, trade_b, 0.0)
    return (1.0 - minute.gamma) * _sum_last(inflow * minute.prices, bk.xp)


def _rate_table(prices: Any, weights: Any, fee: Any, gas: Any, arb_fee: Any, signatures: np.ndarray,
                xp: Any) -> tuple[dict[str, Any], dict[str, Any], CandidateRows]:
    """Everything that does not depend on the reserves, for minutes 1..T-1 at once: (per-minute arrays by name,
    constants by name, candidate rows). A rate known while tracing and the same at every minute stays a scalar
    (a constant); what a known rate makes unnecessary is left out: the zero-fee candidate when no fee is 0,
    gas and the arbitrage cost when they are 0 everywhere."""
    n_rows, dt = prices.shape[0], prices.dtype
    static_fee, static_gas, static_arb = _static(fee), _static(gas), _static(arb_fee)
    has_zero_fee = static_fee is None or bool(np.any(np.broadcast_to(static_fee, (n_rows,))[1:] == 0.0))
    # When every signature activates every asset (n = 2), each candidate at gamma = 1 is the zero-fee trade
    # itself, bit for bit (log(gamma) = 0 and 1 / gamma - 1 = 0 remove every signature-specific term), so
    # the extra row is only needed otherwise.
    has_zero_fee = has_zero_fee and not bool(np.all(np.asarray(signatures) != 0))
    table: dict[str, Any] = {}
    consts: dict[str, Any] = {}

    def add(name: str, value: Any, per_step: bool) -> None:
        (table if per_step else consts)[name] = value

    fee, fee_varies = _per_step(fee, static_fee, n_rows, dt, xp)
    gamma = 1.0 - fee
    add("gamma", gamma, fee_varies)
    add("log_gamma", xp.log(gamma), fee_varies)
    add("inv_gamma_m1", 1.0 / gamma - 1.0, fee_varies)
    if has_zero_fee:
        add("zero_fee", fee == 0.0, fee_varies)
    if static_gas is None or bool(np.any(static_gas != 0.0)):
        add("gas", *_per_step(gas, static_gas, n_rows, dt, xp))
    if static_arb is None or bool(np.any(static_arb != 0.0)):
        add("arb_fee", *_per_step(arb_fee, static_arb, n_rows, dt, xp))
    table.update(weights=weights[1:, ...], prices=prices[1:, ...])
    return table, consts, CandidateRows.from_signatures(signatures, zero_fee_row=has_zero_fee)


__all__ = [
    "SIGNATURE_KINDS", "INVARIANT_TOLERANCE", "signature_matrix", "initial_reserves", "log_rebalancing_ratios",
    "zero_fee_reserves", "zero_fee_values", "CandidateRows", "candidate_trades", "reserves_with_fees",
]
