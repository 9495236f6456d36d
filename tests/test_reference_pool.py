"""The reference pool (tfmm.reference.pool) against docs/math.md section 2 and docs/smooth_mode.md.

Reference values are the ones printed in docs/math.md; properties are checked on random pools with hypothesis.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfmm import Smoothing
from tfmm.reference import pool

GAMMA = 0.997
SIG2 = pool.signature_matrix(2, "all")


def invariant(x, w):
    """K(x) = exp(sum_i w_i log x_i)."""
    return math.exp(float(np.sum(np.asarray(w) * np.log(x))))


# --- hypothesis strategies ------------------------------------------------------------------------

@st.composite
def pool_states(draw, n=None):
    """(R, w, p) with reserves, weights summing to 1 and prices of assorted scales."""
    n = draw(st.integers(2, 3)) if n is None else n
    raw = draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    w = np.array(raw) / sum(raw)
    R = np.exp(draw(st.lists(st.floats(-3.0, 8.0), min_size=n, max_size=n)))
    p = np.exp(draw(st.lists(st.floats(-3.0, 8.0), min_size=n, max_size=n)))
    return R, w, p


@st.composite
def paths(draw, n=2, max_rows=40):
    """(r0, weights (T, n), prices (T, n)): a random walk of prices and weights, r0 in equilibrium."""
    T = draw(st.integers(2, max_rows))
    seed = draw(st.integers(0, 2**31 - 1))
    vol = draw(st.sampled_from([1e-4, 1e-3, 1e-2, 5e-2]))
    rng = np.random.default_rng(seed)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, (T, n)), axis=0))
    logits = np.cumsum(rng.normal(0.0, draw(st.sampled_from([0.0, 1e-3, 3e-2])), (T, n)), axis=0)
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    r0 = 1e6 * weights[0] / prices[0]
    return r0, weights, prices


# --- signatures -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 3, 4, 5])
def test_signature_sets_have_the_stated_sizes_and_order(n):
    pairwise = pool.signature_matrix(n, "pairwise")
    every = pool.signature_matrix(n, "all")
    assert len(pairwise) == n * (n - 1)
    assert len(every) == 3**n - 2 ** (n + 1) + 1
    assert all(row.count(1) == 1 and row.count(-1) == 1 for row in pairwise.tolist())
    rank = {1: 0, 0: 1, -1: 2}  # itertools.product([1, 0, -1]) is lexicographic in this rank
    for rows in (pairwise.tolist(), every.tolist()):
        keys = [[rank[v] for v in row] for row in rows]
        assert keys == sorted(keys)
    assert {tuple(r) for r in every.tolist()} == {
        s for s in itertools.product([1, 0, -1], repeat=n) if 1 in s and -1 in s
    }


def test_signature_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        pool.signature_matrix(3, "some")
    with pytest.raises(ValueError, match="n=1"):
        pool.signature_matrix(1, "all")


# --- math.md 2.2: zero-fee closed form ---------------------------------------------------------------

def test_zero_fee_rho_reference_value():
    weights = np.array([[0.5, 0.5], [0.6, 0.4]])
    prices = np.array([[100.0, 2000.0], [105.0, 1950.0]])
    r = pool.zero_fee_closed_form([1.0, 1.0], weights, prices)
    np.testing.assert_allclose(r[1], [1.133298103321631, 0.813649920333479], rtol=1e-14)


def test_rebalancing_cost_reference_value():
    weights = np.array([[0.5, 0.5], [0.6, 0.4]])
    prices = np.array([[100.0, 2000.0], [100.0, 2000.0]])
    r0 = 1e6 * weights[0] / prices[0]
    r = pool.zero_fee_closed_form(r0, weights, prices)
    ratio = (r[1] @ prices[1]) / (r[0] @ prices[0])
    assert ratio == pytest.approx(0.9800658521, abs=1e-10)
    assert ratio == pytest.approx(0.5**0.6 / 0.6**0.6 * (0.5 / 0.4) ** 0.4, rel=1e-14)


@pytest.mark.parametrize("fn", ["closed_form", "fee_path"])
def test_four_step_fee_free_scan_reference_values(fn):
    r0 = [5000.0, 250.0]
    weights = np.array([(0.5, 0.5), (0.5, 0.5), (0.6, 0.4), (0.6, 0.4)])
    prices = np.array([(100.0, 2000.0), (103.0, 1990.0), (103.0, 1990.0), (99.0, 2010.0)])
    if fn == "closed_form":
        r = pool.zero_fee_closed_form(r0, weights, prices)
    else:
        r, trades, fees = pool.simulate_reserves(r0, weights, prices, 0.0, 0.0, 0.0, SIG2)
        np.testing.assert_allclose(np.cumsum(trades, axis=0) + r0, r, rtol=1e-14)
        assert np.all(fees == 0.0)
    np.testing.assert_array_equal(r[0], r0)
    np.testing.assert_allclose(r[1], [4914.314340464313, 254.35898345116797], rtol=1e-13)
    np.testing.assert_allclose(r[2], [5779.622005912255, 199.4308430850795], rtol=1e-13)
    np.testing.assert_allclose(r[3], [5895.456516025832, 193.5821542575646], rtol=1e-13)


# --- math.md 2.3: candidate trades -------------------------------------------------------------------

def test_two_asset_candidate_reference_values():
    delta, profit, valid = pool.candidate_trade([1000.0, 50.0], [0.5, 0.5], [1.0, 25.0], GAMMA, [1, -1])
    assert valid
    np.testing.assert_allclose(delta, [116.70579547, -5.21140710], rtol=1e-9)
    assert profit == pytest.approx(13.57938197, rel=1e-9)
    delta, _, valid = pool.candidate_trade([800.0, 50.0], [0.8, 0.2], [1.0, 5.0], GAMMA, [1, -1])
    assert valid
    np.testing.assert_allclose(delta, [36.11748417, -8.07376471], rtol=1e-9)


def test_wrong_direction_is_invalid_and_zero():
    delta, profit, valid = pool.candidate_trade([1000.0, 50.0], [0.5, 0.5], [1.0, 25.0], GAMMA, [-1, 1])
    assert not valid and profit == 0.0 and np.all(delta == 0.0)


def test_three_asset_pairwise_and_all_signature_reference_values():
    R, w, p = [1000.0, 500.0, 250.0], [0.4, 0.35, 0.25], [1.0, 2.5, 5.0]
    pairwise = pool.signature_matrix(3, "pairwise")
    results = [pool.candidate_trade(R, w, p, GAMMA, s) for s in pairwise]
    best = int(np.argmax([r[1] for r in results]))
    assert pairwise[best].tolist() == [1, 0, -1]
    np.testing.assert_allclose(results[best][0], [304.91870143, 0.0, -86.50903394], rtol=1e-9, atol=1e-12)
    assert results[best][1] == pytest.approx(127.62646826, rel=1e-9)
    trade, fee_usd = pool.arbitrage_step(R, w, p, 1 - GAMMA, signatures=pairwise)
    np.testing.assert_allclose(trade, [304.91870143, 0.0, -86.50903394], rtol=1e-9, atol=1e-12)
    assert fee_usd == pytest.approx((1 - GAMMA) * 304.91870143 * 1.0, rel=1e-9)
    trade, _ = pool.arbitrage_step(R, w, p, 1 - GAMMA, signatures=pool.signature_matrix(3, "all"))
    np.testing.assert_allclose(trade, [345.93870275, -27.86829456, -81.38153377], rtol=1e-9)
    assert -trade @ np.array(p) == pytest.approx(130.63970251, rel=1e-9)


def test_trade_on_the_invariant_surface_is_executed():
    R, w, p = [5000.0, 250.0], [0.5, 0.5], [103.0, 1990.0]
    trade, fee_usd = pool.arbitrage_step(R, w, p, 1 - GAMMA)
    np.testing.assert_allclose(trade, [-78.29756064, 3.98912577], rtol=1e-9)
    assert -trade @ np.array(p) == pytest.approx(126.29, abs=5e-3)
    assert fee_usd == pytest.approx((1 - GAMMA) * 3.98912577 * 1990.0, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(pool_states(n=2), st.floats(1e-4, 0.05))
def test_two_asset_candidate_matches_the_closed_form(state, fee):
    R, w, p = state
    gamma = 1.0 - fee
    K = invariant(R, w)
    expected = np.array([
        (K * (gamma * w[0] * p[1] / (w[1] * p[0])) ** w[1] - R[0]) / gamma,
        K * (w[1] * p[0] / (gamma * w[0] * p[1])) ** w[0] - R[1],
    ])
    delta, profit, valid = pool.candidate_trade(R, w, p, gamma, [1, -1])
    if expected[0] > 0 > expected[1] and valid:
        np.testing.assert_allclose(delta, expected, rtol=1e-9)
        assert profit == pytest.approx(-(expected @ p), rel=1e-8, abs=1e-9 * float(R @ p))
    elif not valid:
        assert np.all(delta == 0.0) and profit == 0.0


@settings(max_examples=50, deadline=None)
@given(pool_states(), st.floats(1e-4, 0.05), st.data())
def test_validity_shortcut_equals_the_direct_comparison(state, fee, data):
    """_invariant_holds skips logarithms only when the bound decides; it must agree with the direct test,
    also for trades within a few 1e-9 of the invariant surface."""
    R, w, p = state
    gamma = 1.0 - fee
    n = len(R)
    sig = np.array(data.draw(st.sampled_from(pool.signature_matrix(n, "all").tolist())))
    active = sig != 0
    g = np.where(sig > 0, gamma, 1.0)
    wh = np.where(active, w / w[active].sum(), 0.0)
    log_scale = np.sum(np.where(active, wh * (np.log(R) + np.log(p / (g * np.where(active, wh, 1.0)))), 0.0))
    out = np.where(active, (np.exp(log_scale) * wh * g / p - R) / g, 0.0)  # math.md 2.3, before validity
    trades = [out]
    for eps in (1e-12, 3e-10, 1e-9, 1.5e-9, 3e-9, 1e-7):
        for sign in (1.0, -1.0):
            t = out.copy()
            t[sig < 0] *= 1.0 + sign * eps  # take a little more / less out
            trades.append(t)
    trades.append(R * np.array(data.draw(st.lists(st.floats(-0.9, 5.0), min_size=n, max_size=n))) * (sig != 0))
    for t in trades:
        if np.any(R + t <= 0):
            continue
        direct = pool._invariant_change(R, np.log(R), w, gamma, sig, t) >= pool.LOG_VALIDITY_TOLERANCE
        assert pool._invariant_holds(R, np.log(R), 1 / R, w, gamma, sig, t) == direct


# --- math.md 2.4 / 2.5: selection, gate, the scan ----------------------------------------------------

def test_exact_ties_go_to_the_lowest_index_and_are_not_summed():
    # assets 1 and 2 are identical, so candidates (-1, 1, 0) and (-1, 0, 1) tie bit for bit
    R, w, p = [1000.0, 500.0, 500.0], [0.5, 0.25, 0.25], [1.2, 1.0, 1.0]
    sig = pool.signature_matrix(3, "pairwise")
    trade, _ = pool.arbitrage_step(R, w, p, 0.003, signatures=sig)
    first = sig.tolist().index([-1, 1, 0])
    assert sig.tolist().index([-1, 0, 1]) > first
    expected, profit, valid = pool.candidate_trade(R, w, p, 0.997, sig[first])
    assert valid and profit > 0
    np.testing.assert_array_equal(trade, expected)
    assert trade[2] == 0.0
    # the softmax mixture splits the tie evenly
    soft, _ = pool.arbitrage_step(R, w, p, 0.003, signatures=sig, smooth=True, selection="softmax",
                                  gate_temperature=1e-6, selection_temperature=1e-6)
    np.testing.assert_allclose(soft, [expected[0], expected[1] / 2, expected[1] / 2], rtol=1e-12)


def test_exact_gate_uses_gas_and_arbitrage_fee():
    R, w, p = [1000.0, 50.0], [0.5, 0.5], [1.0, 25.0]
    profit = 13.57938197
    volume = 116.70579547 * 1.0 + 5.21140710 * 25.0
    assert np.any(pool.arbitrage_step(R, w, p, 0.003, gas=profit - 1e-6)[0] != 0)
    assert np.all(pool.arbitrage_step(R, w, p, 0.003, gas=profit + 1e-6)[0] == 0)
    rate = 2 * profit / volume  # cost 0.5 * rate * volume = profit
    assert np.any(pool.arbitrage_step(R, w, p, 0.003, arb_fee=rate * (1 - 1e-6))[0] != 0)
    assert np.all(pool.arbitrage_step(R, w, p, 0.003, arb_fee=rate * (1 + 1e-6))[0] == 0)


def test_smooth_gate_and_fee_accounting():
    R, w, p = [1000.0, 50.0], [0.5, 0.5], [1.0, 25.0]
    delta, profit, _ = pool.candidate_trade(R, w, p, GAMMA, [1, -1])
    gas, rate, tau, eps = 3.0, 0.01, 2.0, 0.5
    cost = 0.5 * rate * np.sum(np.sqrt((delta * np.array(p)) ** 2 + eps**2))
    gate = 1.0 / (1.0 + math.exp(-(profit - gas - cost) / tau))
    for selection in ("straight_through", "hard"):
        trade, fee_usd = pool.arbitrage_step(R, w, p, 1 - GAMMA, gas=gas, arb_fee=rate, smooth=True,
                                             selection=selection, gate_temperature=tau, abs_epsilon=eps)
        np.testing.assert_allclose(trade, gate * delta, rtol=1e-13)
        assert fee_usd == pytest.approx((1 - GAMMA) * gate * delta[0] * p[0], rel=1e-13)


@settings(max_examples=40, deadline=None)
@given(pool_states(), st.floats(1e-4, 0.05))
def test_softmax_selection_mixes_candidates(state, fee):
    R, w, p = state
    sig = pool.signature_matrix(len(R), "all")
    tau = float(np.sum(R * p)) * 1e-4
    cands = [pool.candidate_trade(R, w, p, 1 - fee, s) for s in sig]
    profits = np.array([c[1] for c in cands])
    q = np.exp((profits - profits.max()) / tau)
    q /= q.sum()
    mix = q @ np.array([c[0] for c in cands])
    gate = 1.0 / (1.0 + math.exp(-float(-mix @ p) / tau))
    trade, _ = pool.arbitrage_step(R, w, p, fee, signatures=sig, smooth=True, selection="softmax",
                                   gate_temperature=tau, selection_temperature=tau)
    np.testing.assert_allclose(trade, gate * mix, rtol=1e-10, atol=1e-12 * float(np.max(R)))


@settings(max_examples=40, deadline=None)
@given(pool_states(n=2), st.floats(1e-3, 0.05), st.floats(0.1, 0.9))
def test_no_trade_inside_the_no_arbitrage_band(state, fee, where):
    """gamma * spot <= p0/p1 <= spot / gamma gives no trade (math.md 2.3).

    Not arbitrarily close to the edges: there a wrong-direction candidate loses the invariant only
    about w0 w1 f d (d the log distance to the edge), which the 1e-9 validity tolerance accepts.
    """
    R, w, p = state
    gamma = 1.0 - fee
    spot = w[0] * R[1] / (w[1] * R[0])
    ratio = math.exp(math.log(gamma * spot) + where * (math.log(spot / gamma) - math.log(gamma * spot)))
    prices = np.array([ratio * p[1], p[1]])
    trade, fee_usd = pool.arbitrage_step(R, w, prices, fee)
    assert np.all(trade == 0.0) and fee_usd == 0.0


@settings(max_examples=40, deadline=None)
@given(pool_states(), st.floats(1e-4, 0.02), st.floats(1.05, 4.0))
def test_a_higher_fee_never_gives_a_larger_trade(state, fee, factor):
    """Compared on the value taken out of the pool, sum_i max(-Delta_i, 0) p_i: the amount paid in,
    (Rt_i - R_i) / gamma, includes the fee and can grow with it (e.g. R = (1, 1), w = (.8, .2),
    p = (1, 7.39): 7.868 USD of volume at 1.6% and 7.871 USD at 3.1%).

    Up to the trades that the 1e-9 validity tolerance admits next to the edge of the no-arbitrage band:
    a wrong-direction candidate loses about sum_i w_i f |Delta_i| / R_i of the invariant, so it passes
    while its legs are worth up to about 1e-9 R_i p_i / (w_i f) each.
    """
    R, w, p = state
    taken = []
    fees = (fee, min(fee * factor, 0.5))
    for f in fees:
        trade, _ = pool.arbitrage_step(R, w, p, f)
        taken.append(float(np.sum(np.maximum(-trade, 0.0) * p)))
    admitted = len(R) * 1e-9 * float(np.max(R * p / w)) / fees[1]
    assert taken[1] <= taken[0] * (1 + 1e-9) + admitted


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3).flatmap(lambda n: paths(n=n)), st.floats(1e-4, 0.03))
def test_executed_arbitrage_never_lowers_the_fee_adjusted_invariant(path, fee):
    """Every executed phase keeps K(R + gamma^{1[D>0]} D) >= K(R) (1 - 1e-9) (checked phase by phase,
    so the weights are those of the phase); the arbitrageur never loses; fees are collected on inflows."""
    r0, weights, prices = path
    sig = pool.signature_matrix(len(r0), "all")
    reserves, trades, fees = pool.simulate_reserves(r0, weights, prices, fee, 0.0, 0.0, sig)
    R = r0.copy()
    for t in range(1, len(prices)):
        for w in (weights[t - 1], weights[t]):
            trade, fee_usd = pool.arbitrage_step(R, w, prices[t], fee, signatures=sig)
            paid = np.where(trade > 0, (1 - fee) * trade, trade)
            assert invariant(R + paid, w) >= invariant(R, w) * (1 - 1e-9) * (1 - 1e-12)
            assert invariant(R + trade, w) >= invariant(R, w) * (1 - 1e-9) * (1 - 1e-12)
            assert -trade @ prices[t] >= 0.0
            assert fee_usd == pytest.approx(fee * np.sum(np.maximum(trade, 0) * prices[t]), rel=1e-12, abs=0)
            R = R + trade
        np.testing.assert_allclose(reserves[t], R, rtol=1e-12)
        assert -trades[t] @ prices[t] >= -1e-12 * float(R @ prices[t])
        assert fees[t] >= fee * np.sum(np.maximum(trades[t], 0) * prices[t]) * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3).flatmap(lambda n: paths(n=n)), st.floats(0.0, 0.05), st.booleans())
def test_reserves_stay_positive_and_rows_align(path, fee, smooth):
    r0, weights, prices = path
    n = len(r0)
    reserves, trades, fees = pool.simulate_reserves(r0, weights, prices, fee, 0.0, 0.0,
                                                    pool.signature_matrix(n, "all"), smooth=smooth)
    assert reserves.shape == prices.shape and trades.shape == prices.shape and fees.shape == (len(prices),)
    assert np.all(reserves > 0) and np.all(np.isfinite(reserves))
    np.testing.assert_array_equal(reserves[0], r0)
    assert np.all(trades[0] == 0) and fees[0] == 0 and np.all(fees >= 0)
    np.testing.assert_allclose(r0 + np.cumsum(trades, axis=0), reserves, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3).flatmap(lambda n: paths(n=n)))
def test_fee_free_path_equals_the_closed_form(path):
    """Up to 1e-7: a trade whose profit (~V w (1-w) d^2 / 2 for a relative price move d) is below the
    rounding of the profit itself (~1e-15 V) can be refused by the exact gate, leaving the pool off by
    about d ~ 1e-7 for a minute (both paths keep the invariant, so the next trade catches up)."""
    r0, weights, prices = path
    n = len(r0)
    reserves, _, fees = pool.simulate_reserves(r0, weights, prices, 0.0, 0.0, 0.0, pool.signature_matrix(n, "all"))
    np.testing.assert_allclose(reserves, pool.zero_fee_closed_form(r0, weights, prices), rtol=1e-7)
    assert np.all(fees == 0.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 3).flatmap(lambda n: paths(n=n, max_rows=30)), st.floats(1e-3, 0.01),
       st.sampled_from(["softmax", "straight_through", "hard"]))
def test_smooth_pool_converges_to_exact_as_temperatures_vanish(path, fee, selection):
    """To 1e-6: trades whose profit is below the gate temperature are half executed in smooth mode; the
    largest such exact-mode trades are the tiny ones the validity tolerance admits (~1e-7 of the pool)."""
    r0, weights, prices = path
    sig = pool.signature_matrix(len(r0), "all")
    exact, _, exact_fees = pool.simulate_reserves(r0, weights, prices, fee, 0.0, 0.0, sig)
    errors = []
    for factor in (1e-2, 1e-6, 1e-10):
        s = Smoothing(selection=selection).scaled(factor)
        smooth, _, smooth_fees = pool.simulate_reserves(
            r0, weights, prices, fee, 0.0, 0.0, sig, smooth=True, selection=selection,
            gate_temperature=s.gate_temperature, selection_temperature=s.selection_temperature,
            abs_epsilon=s.abs_epsilon)
        errors.append(float(np.max(np.abs(smooth - exact) / exact)))
    assert errors[-1] < 1e-6
    assert errors[-1] <= errors[0] + 1e-12


def test_straight_through_forward_equals_hard():
    rng = np.random.default_rng(3)
    T = 200
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 3e-3, (T, 3)), axis=0))
    weights = np.tile([0.5, 0.3, 0.2], (T, 1))
    weights[100:] = [0.4, 0.3, 0.3]
    r0 = 1e6 * weights[0] / prices[0]
    sig = pool.signature_matrix(3, "all")
    out = [pool.simulate_reserves(r0, weights, prices, 0.003, 1.0, 0.001, sig, smooth=True, selection=sel)[0]
           for sel in ("straight_through", "hard")]
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("smooth", [False, True])
def test_scan_is_phase_a_then_phase_b_every_minute(smooth):
    """Each row is Phase A (w_{t-1}, P_t) then Phase B (w_t, P_t), also when the weights repeat."""
    rng = np.random.default_rng(0)
    T = 60
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 5e-3, (T, 3)), axis=0))
    weights = np.tile([0.5, 0.3, 0.2], (T, 1))
    weights[30:] = [0.4, 0.3, 0.3]
    weights[45] = [0.41, 0.3, 0.29]
    r0 = 1e6 * weights[0] / prices[0]
    sig = pool.signature_matrix(3, "all")
    kw = dict(smooth=smooth, selection="softmax", gate_temperature=0.5, selection_temperature=0.5)
    reserves, trades, fees = pool.simulate_reserves(r0, weights, prices, 0.003, 0.1, 1e-3, sig, **kw)
    R = r0.copy()
    for t in range(1, T):
        a, fee_a = pool.arbitrage_step(R, weights[t - 1], prices[t], 0.003, 0.1, 1e-3, sig, **kw)
        b, fee_b = pool.arbitrage_step(R + a, weights[t], prices[t], 0.003, 0.1, 1e-3, sig, **kw)
        R = R + a + b
        np.testing.assert_allclose(reserves[t], R, rtol=1e-12)
        np.testing.assert_allclose(trades[t], a + b, rtol=1e-9, atol=1e-9)
        assert fees[t] == pytest.approx(fee_a + fee_b, rel=1e-9, abs=1e-12)
    value_share = reserves[31] * prices[31] / (reserves[31] @ prices[31])
    assert abs(value_share[0] - 0.4) < 0.01


def test_per_minute_rates_are_aligned_with_rows():
    rng = np.random.default_rng(1)
    T = 30
    prices = 100 * np.exp(np.cumsum(rng.normal(0, 1e-2, (T, 2)), axis=0))
    weights = np.tile([0.5, 0.5], (T, 1))
    r0 = 1e6 * weights[0] / prices[0]
    fee = np.full(T, 0.003)
    fee[17] = 0.0  # the fee-free closed form at exactly that minute
    reserves, _, fees = pool.simulate_reserves(r0, weights, prices, fee, 0.0, 0.0, SIG2)
    w, p = weights[16], prices[17]  # zero-fee optimum: Rt_i = K (w_i / p_i) prod_j (p_j / w_j)^{w_j}
    expected = invariant(reserves[16], w) * w / p * math.exp(float(np.sum(w * np.log(p / w))))
    np.testing.assert_allclose(reserves[17], expected, rtol=1e-12)
    assert fees[17] == 0.0
    gas = np.zeros(T)
    gas[5:] = 1e12  # no arbitrage from row 5 on
    reserves, _, _ = pool.simulate_reserves(r0, weights, prices, 0.003, gas, 0.0, SIG2)
    assert np.all(reserves[5:] == reserves[4])


def test_hodl_reserves_are_constant():
    np.testing.assert_array_equal(pool.hodl_reserves([1.0, 2.0], 3), [[1.0, 2.0]] * 3)


def test_simulate_reserves_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shapes"):
        pool.simulate_reserves([1.0, 1.0], np.ones((3, 2)) / 2, np.ones((4, 2)), 0.0, 0.0, 0.0, SIG2)
    with pytest.raises(ValueError, match="selection"):
        pool.simulate_reserves([1.0, 1.0], np.ones((3, 2)) / 2, np.ones((3, 2)), 0.0, 0.0, 0.0, SIG2,
                               smooth=True, selection="argmax")
    with pytest.raises(ValueError, match="fee"):
        pool.simulate_reserves([1.0, 1.0], np.ones((3, 2)) / 2, np.ones((3, 2)), np.zeros(2), 0.0, 0.0, SIG2)
