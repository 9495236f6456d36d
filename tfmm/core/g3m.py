"""G3M pool reserves: the zero-fee closed form and the per-minute arbitrage step with fees (MATH.md section 2).

Written once against the Array API (``bk.xp``) plus the backend primitives (``bk.scan``, ``bk.where``,
``bk.cumsum``, ``bk.softmax``, ``bk.sigmoid``, ``bk.one_hot``, ``bk.argmax``, ``bk.stop_gradient``), so the
same code runs under JAX and torch, inside ``jit`` and ``vmap``. Units: reserves in tokens, prices in USD per
token, profits, gas, costs and fees in USD, fee rates dimensionless.

Candidate trades (MATH 2.3) in the form this module evaluates. For a signature ``sigma`` with active set
``A`` (mask ``M_i = |sigma_i|``), ``S_A = sum_{j in A} w_j`` and ``g_i = gamma`` where ``sigma_i = +1``:

    Delta_i = M_i * (exp(e + a_i) - R_i / g_i),
    e = (1 / S_A) * sum_{j in A} w_j log R_j + d,       (log K_A + d)
    a_i = log w_i - log p_i,
    d = (1 / S_A) * (sum_{j in A} w_j (log p_j - log w_j) - log(gamma) * sum_{j: sigma_j = +1} w_j).

This is MATH's ``Delta_i = (K_A (wh_i g_i / p_i) exp(sum_A wh_j log(p_j / (g_j wh_j))) - R_i) / g_i``
rearranged (``g_i`` cancels in the first term). ``a`` and ``d`` depend only on weights and prices, so they are
computed for all minutes before the sequential scan; the scan body only needs ``log R``.

Decisions where MATH.md is silent (or where this module chooses a formulation):

- Validity (MATH 2.3: ``R + Delta > 0`` and ``K(R + g' Delta) >= K(R) (1 - 1e-9)``, ``g'_i = gamma`` where
  ``Delta_i > 0``) is evaluated without the rounding of the identity the candidate satisfies by construction,
  ``K(R + g Delta) = K(R)`` (``g`` from the signature): then
  ``log K(R + g' Delta) - log K(R) = sum_i w_i log1p((g'_i - g_i) Delta_i / (R_i + g_i Delta_i))``, whose terms
  are exactly 0 where the trade's direction agrees with ``sigma`` and ``w_i log1p(-f |Delta_i| / Rt_i) < 0``
  where it does not. This is MATH's test in exact arithmetic, so the tolerance can stay 1e-9 in float32 as
  in float64 (a literal float32 evaluation of ``K`` has rounding errors near 1e-6 and, with any tolerance
  large enough to absorb them, would accept wrong-direction trades of up to ``tol / f`` of the pool).
- With ``gamma == 1`` at a minute (``fee[t] == 0``) the candidate set is replaced by the zero-fee trade of
  docs/smooth_mode.md. It is evaluated as one extra candidate row (all assets active, no fee) that is the
  only selectable row at such minutes; the fee candidates are the selectable rows at the other minutes. The
  validity check is applied to it as well (it always passes up to rounding).
- The candidate set is padded to ``S + 1`` rows; ``fees`` are recorded with the gate applied (0 or 1 in exact
  mode, the sigmoid in smooth mode) and with the executed (mixed, in softmax mode) trade.
- Row 0 of every output is the initial state: reserves ``r0``, zero trade, zero fee; ``fee``, ``gas`` and
  ``arb_fee`` of row 0 are unused. Scalars are accepted for ``fee``, ``gas`` and ``arb_fee`` (broadcast to T).
- Gradients stay finite: the only logarithms in the scan are of reserves (always > 0: a valid candidate
  keeps ``R + Delta > 0`` and every executed trade is a convex combination of those and the zero trade) and,
  in the validity check, of arguments sanitised before the ``log1p`` (the double-where idiom); unselected
  candidates are masked by ``where`` with ``-inf`` scores, which give exact zero gradients.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

SIGNATURE_KINDS = ("pairwise", "all")
INVARIANT_TOLERANCE = 1e-9  # MATH 2.3: relative fall of the fee-adjusted invariant accepted as "not falling"
LOG_FLOOR = float(np.log1p(-INVARIANT_TOLERANCE))


def signature_matrix(n_assets: int, kind: str) -> np.ndarray:
    """Trade-direction signatures ``sigma in {-1, 0, +1}^n`` (MATH 2.3), in ``itertools.product([1, 0, -1])`` order.

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
    """``R_0 = V_0 w_0 / P_0`` (MATH 2.1): tokens, shape (n,); ``V_0`` in USD, ``P_0`` in USD per token."""
    prices0 = xp.asarray(prices0)
    weights0 = xp.asarray(weights0, dtype=prices0.dtype)
    return initial_value * weights0 / prices0


def log_rebalancing_ratios(weights: Any, prices: Any, xp: Any) -> Any:
    """``log(rho_p * rho_w)`` of MATH 2.2 for rows 1..T-1: shape (T - 1, n).

    With ``x = p_t / p_{t-1}`` and ``y = w_t / w_{t-1}``:
    ``log rho_i = sum_j w_{t-1,j} log x_j - log x_i + log y_i - sum_j w_{t,j} log y_j``.
    """
    log_p, log_w = xp.log(prices), xp.log(weights)
    log_x = log_p[1:, ...] - log_p[:-1, ...]
    log_y = log_w[1:, ...] - log_w[:-1, ...]
    common = _sum_last(weights[:-1, ...] * log_x - weights[1:, ...] * log_y, xp)
    return common[..., None] + (log_y - log_x)


def zero_fee_reserves(r0: Any, weights: Any, prices: Any, bk: Any) -> Any:
    """Reserves of a fee-free pool arbitraged to equilibrium every minute (MATH 2.2), shape (T, n).

    ``R_t = r0 * exp(cumsum_{u <= t} log(rho_p,u * rho_w,u))`` with row 0 = ``r0``: one parallel pass over
    time (``bk.cumsum``), no sequential scan. ``r0`` must be in equilibrium with ``weights[0]``, ``prices[0]``
    for this to equal :func:`fee_reserves` with zero fee.
    """
    xp = bk.xp
    prices = xp.asarray(prices)
    dt = prices.dtype
    weights = xp.asarray(weights, dtype=dt)
    r0 = xp.asarray(r0, dtype=dt)
    log_rho = log_rebalancing_ratios(weights, prices, xp)
    zero = xp.zeros_like(log_rho[:1, ...])
    log_growth = bk.cumsum(xp.concat([zero, log_rho], axis=0), axis=0)
    return r0 * xp.exp(log_growth)


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
# candidate trades (MATH 2.3)


@dataclass(frozen=True, eq=False)
class CandidateRows:
    """Static description of the candidate rows: masks ``|sigma| != 0`` and ``sigma = +1`` (S, n) numpy bool;
    the first ``n_checked`` rows get the validity check (later rows: the zero-fee trade, always valid);
    ``full``: every row activates every asset (then ``K_A = K`` for all rows)."""

    active: np.ndarray
    plus: np.ndarray
    n_checked: int

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


def candidate_tables(weights: Any, prices: Any, log_weights: Any, log_prices: Any, log_gamma: Any,
                     rows: CandidateRows, xp: Any) -> tuple[Any, Any, Any]:
    """Reserve-independent factors of the candidate trades, vectorised over leading (time) axes.

    weights, prices and their logs: (..., n); log_gamma: (...,). Returns ``ea = w / p`` (..., n),
    ``inv_sum = 1 / S_A`` (..., S) (None when ``rows.full``: then ``S_A = sum_j w_j = 1``) and
    ``dfac = exp(d)`` (..., S), ``d = (sum_A w (log p - log w) - log(gamma) sum_{sigma=+1} w) / S_A``, so that
    the target over the fee factor is ``Rt_i / g_i = K_A * dfac * ea_i``.
    """
    wl = weights * (log_prices - log_weights)
    plus_weight = _masked_sums(weights, rows.plus, xp)
    if rows.full:
        d = _sum_last(wl, xp)[..., None] - log_gamma[..., None] * plus_weight
        inv_sum = None
    else:
        inv_sum = 1.0 / _masked_sums(weights, rows.active, xp)
        d = inv_sum * (_masked_sums(wl, rows.active, xp) - log_gamma[..., None] * plus_weight)
    return weights / prices, inv_sum, xp.exp(d)


def _candidates(reserves: Any, weights: Any, prices: Any, gamma: Any, gm1: Any, ea: Any, inv_sum: Any,
                dfac: Any, rows: CandidateRows, bk: Any) -> tuple[Any, Any, Any]:
    """Every candidate trade of one state: (deltas (S, n), profits (S,), valid (S,)); invalid ones are zero.

    ``Delta = M * (K_A dfac ea - R / g)``, ``K_A = exp(inv_sum sum_A w log R)``, ``1 / g = 1 + plus gm1``
    (``gm1 = 1 / gamma - 1``); validity as in the module docstring; ``profit = -Delta . p``.
    """
    xp = bk.xp
    dt = reserves.dtype
    plus = xp.asarray(rows.plus.astype(np.float64), dtype=dt)
    wl = weights * xp.log(reserves)
    if rows.full:
        scale = xp.exp(_sum_last(wl, xp)) * dfac
    else:
        scale = xp.exp(inv_sum * _masked_sums(wl, rows.active, xp)) * dfac
    target_over_g = scale[:, None] * ea  # Rt / g, (S, n)
    deltas = target_over_g - (reserves + plus * (reserves * gm1))
    if not rows.full:
        deltas = xp.asarray(rows.active.astype(np.float64), dtype=dt) * deltas
    # validity of the first n_checked rows (module docstring): R + Delta > 0 and
    # sum_i w_i log1p(c_i) >= log1p(-tol), c_i = -f |Delta_i| / (R_i + g_i Delta_i) where g'_i != g_i, else 0
    k = rows.n_checked
    checked = deltas[:k, ...]
    positive = reserves + checked > 0.0
    wrong = bk.where(xp.asarray(rows.plus[:k, ...]), checked < 0.0, checked > 0.0)
    g_sig = 1.0 + plus[:k, ...] * (gamma - 1.0)
    c = -(1.0 - gamma) * xp.abs(checked) / (g_sig * target_over_g[:k, ...])
    c = bk.where(wrong & positive, c, 0.0)
    log_change = _sum_last(weights * (c - 0.5 * c * c), xp)
    valid = _all_last(positive, xp) & (log_change >= LOG_FLOOR)
    n_rows = deltas.shape[0]
    if k < n_rows:
        valid = xp.concat([valid, xp.ones((n_rows - k,), dtype=xp.bool)], axis=0)
    deltas = bk.where(valid[:, None], deltas, 0.0)
    profits = -_sum_last(deltas * prices, xp)
    return deltas, profits, valid


def candidate_trades(reserves: Any, weights: Any, prices: Any, gamma: Any, signatures: np.ndarray,
                     bk: Any) -> tuple[Any, Any, Any]:
    """MATH 2.3 for one pool state: the optimal trade of each signature, with its profit and validity.

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
    ea, inv_sum, dfac = candidate_tables(weights, prices, xp.log(weights), xp.log(prices), xp.log(gamma),
                                         rows, xp)
    return _candidates(reserves, weights, prices, gamma, 1.0 / gamma - 1.0, ea, inv_sum, dfac, rows, bk)


# ----------------------------------------------------------------------------------------------------------
# the per-minute step with fees (MATH 2.4, 2.5; docs/smooth_mode.md)


def _select(profits: Any, selectable: Any, smooth: bool, smoothing: Any, bk: Any) -> Any:
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


def _gate(profit: Any, trade: Any, prices: Any, gas: Any, arb_fee: Any, smooth: bool, smoothing: Any,
          bk: Any) -> Any:
    """Exact: ``1[profit - gas >= 0.5 arb_fee sum|Delta| p]``; smooth: ``sigmoid((profit - gas - cost) / tau)``.

    ``gas`` / ``arb_fee`` None: statically zero (the term is left out).
    """
    xp = bk.xp
    margin = profit if gas is None else profit - gas
    if arb_fee is not None:
        value = trade * prices
        if smooth:
            eps = smoothing.abs_epsilon
            margin = margin - 0.5 * arb_fee * _sum_last(xp.sqrt(value * value + eps * eps), xp)
        else:
            margin = margin - 0.5 * arb_fee * _sum_last(xp.abs(value), xp)
    if smooth:
        return bk.sigmoid(margin / smoothing.gate_temperature)
    return bk.where(margin >= 0.0, 1.0, 0.0)


def _phase(reserves: Any, weights: Any, ea: Any, inv_sum: Any, dfac: Any, shared: tuple, rows: CandidateRows,
           smooth: bool, smoothing: Any, bk: Any) -> tuple[Any, Any, Any]:
    """One arbitrage phase: candidates, selection, gate, update. Returns (reserves, executed trade, fee USD)."""
    xp = bk.xp
    prices, gamma, gm1, gas, arb_fee, selectable = shared
    deltas, profits, _ = _candidates(reserves, weights, prices, gamma, gm1, ea, inv_sum, dfac, rows, bk)
    q = _select(profits, selectable, smooth, smoothing, bk)
    trade = _sum_first(q[:, None] * deltas, xp)
    profit = -_sum_last(trade * prices, xp)
    gate = _gate(profit, trade, prices, gas, arb_fee, smooth, smoothing, bk)
    executed = gate * trade
    fee = (1.0 - gamma) * _sum_last(xp.maximum(executed, 0.0) * prices, xp)
    return reserves + executed, executed, fee


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


def fee_reserves(r0: Any, weights: Any, prices: Any, fee: Any, gas: Any, arb_fee: Any, signatures: np.ndarray,
                 *, smooth: bool, smoothing: Any, bk: Any,
                 checkpoint_every: int | None = None) -> tuple[Any, Any, Any]:
    """Reserves of a pool with fees arbitraged every minute (MATH 2.5), exact or smooth mode.

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
    n_rows = prices.shape[0]
    static_fee, static_gas, static_arb = _static(fee), _static(gas), _static(arb_fee)
    has_zero_fee = static_fee is None or bool(np.any(np.broadcast_to(static_fee, (n_rows,))[1:] == 0.0))
    has_gas = static_gas is None or bool(np.any(static_gas != 0.0))
    has_cost = static_arb is None or bool(np.any(static_arb != 0.0))
    rows = CandidateRows.from_signatures(signatures, zero_fee_row=has_zero_fee)
    is_zero_fee_row = xp.asarray(np.arange(rows.active.shape[0]) == rows.n_checked)

    # everything that does not depend on the reserves, for all minutes at once; a rate that is the same
    # at every minute (and known while tracing) stays a scalar
    table: dict[str, Any] = {}
    consts: dict[str, Any] = {}

    def add(name: str, value: Any, per_step: bool) -> None:
        (table if per_step else consts)[name] = value

    fee, fee_varies = _per_step(fee, static_fee, n_rows, dt, xp)
    gamma = 1.0 - fee
    log_gamma = xp.log(gamma)
    add("g", gamma, fee_varies)
    add("gm1", 1.0 / gamma - 1.0, fee_varies)
    if has_zero_fee:
        add("zf", fee == 0.0, fee_varies)
    if has_gas:
        add("gas", *_per_step(gas, static_gas, n_rows, dt, xp))
    if has_cost:
        add("arb", *_per_step(arb_fee, static_arb, n_rows, dt, xp))
    p_now = prices[1:, ...]
    log_p = xp.log(p_now)
    log_w = xp.log(weights)
    w_prev, w_new = weights[:-1, ...], weights[1:, ...]
    ea_a, inv_a, dfac_a = candidate_tables(w_prev, p_now, log_w[:-1, ...], log_p, log_gamma, rows, xp)
    ea_b, inv_b, dfac_b = candidate_tables(w_new, p_now, log_w[1:, ...], log_p, log_gamma, rows, xp)
    table.update(wa=w_prev, eaa=ea_a, dfa=dfac_a, wb=w_new, eab=ea_b, dfb=dfac_b, p=p_now)
    if not rows.full:
        table.update(ia=inv_a, ib=inv_b)
    names = tuple(table)

    def step(r, x):
        x = {**consts, **dict(zip(names, x))}
        selectable = bk.where(x["zf"], is_zero_fee_row, ~is_zero_fee_row) if has_zero_fee else None
        shared = (x["p"], x["g"], x["gm1"], x.get("gas"), x.get("arb"), selectable)
        r_a, t_a, f_a = _phase(r, x["wa"], x["eaa"], x.get("ia"), x["dfa"], shared, rows, smooth, smoothing, bk)
        r_b, t_b, f_b = _phase(r_a, x["wb"], x["eab"], x.get("ib"), x["dfb"], shared, rows, smooth, smoothing, bk)
        return r_b, (r_b, t_a + t_b, f_a + f_b)

    xs = tuple(table[k] for k in names)
    if checkpoint_every is None:
        _, (res, trades, fees) = bk.scan(step, r0, xs)
    else:
        _, (res, trades, fees) = bk.scan(step, r0, xs, checkpoint_every=checkpoint_every)
    reserves = xp.concat([r0[None, :], res], axis=0)
    trades = xp.concat([xp.zeros_like(r0)[None, :], trades], axis=0)
    fees = xp.concat([xp.zeros_like(r0[:1]), fees], axis=0)
    return reserves, trades, fees


__all__ = [
    "SIGNATURE_KINDS", "INVARIANT_TOLERANCE", "signature_matrix", "initial_reserves", "log_rebalancing_ratios",
    "zero_fee_reserves", "CandidateRows", "candidate_tables", "candidate_trades", "fee_reserves",
]
