"""Three-way parity: the Numba reference, JAX and torch compute the same pool (issue 10).

Per-backend properties take the root conftest's ``bk`` fixture (every installed array backend, a missing one
reported as skipped); the properties that need all three at once (trajectories, gradients) run JAX and torch
on the same draw and compare each with the reference and with each other.

Cost: every new static configuration (strategy, n, chunk period, interpolation, length, smoothing, ...)
compiles a new JAX function (~1-3 s); shapes are bucketed (strategies.BOUT_LENGTHS) and the expensive
properties ask for a few examples under the quick profiles (``parity_settings``); ``thorough`` runs the
profile's count.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st

import tfmm
from tfmm.backends.kernels import fee_path as fused
from tfmm.core import g3m
from tfmm.reference import pool as rpool

from parity_settings import parity_settings
from reference_boundaries import near_boundary, step_near_boundary
from strategies import (DAY, TRAINABLE, make_prices, pool_states, pools, scenarios_3way, static_settings,
                        strategies_for)

pytest.importorskip("jax")
TINY64 = np.finfo(np.float64).tiny


def both_array_backends() -> None:
    """The properties comparing JAX with torch need both: skipped, with the reason, otherwise."""
    for name in ("jax", "torch"):
        if name not in tfmm.available_backends():
            pytest.skip(f"backend {name!r} unavailable (pip install 'tfmm[{name}]')")


def run(backend, prices, strategy, pool, start, length, mode="exact", smoothing=None, dtype="float64", **opts):
    with tfmm.use(backend, **opts):
        return tfmm.simulate(prices, strategy, pool, start=start, length=length, mode=mode, smoothing=smoothing,
                             dtype=dtype).to_numpy()


def grads_of(backend, prices, strategy, pool, start, length, smoothing, dtype="float64", objective="returns", **opts):
    with tfmm.use(backend, **opts):
        value, grads = tfmm.value_and_grad(prices, strategy, pool, start=start, length=length, objective=objective,
                                           mode="smooth", smoothing=smoothing, dtype=dtype)
    host = lambda x: np.asarray(x.detach() if hasattr(x, "detach") else x)  # noqa: E731
    return host(value), {k: host(v) for k, v in grads.items()}


def assert_scaled(actual, expected, rtol, what, scale=None):
    """max |actual - expected| <= rtol max |expected| (entries near 0 judged on the array's scale, or on
    ``scale`` when given, e.g. the whole gradient's; the floor finfo.tiny keeps all-zero data comparable)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(expected), initial=0.0))
    scale = max(scale, TINY64)
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    assert err <= rtol * scale, f"{what}: max error {err:.3e} > {rtol:.0e} x {scale:.3e}"


# ---------------------------------------------------------------------------------------------------------
# one step from identical states


@pytest.fixture(autouse=True)
def free_compiled_fee_paths():
    """Each property's compiled one-minute fee paths are dropped after it (parity_tests/conftest.py)."""
    yield
    compiled_fee_path.cache_clear()


@functools.lru_cache(maxsize=None)
def compiled_fee_path(name: str, fee_path: str, n: int, kind: str, smooth: bool = False, smoothing=None,
                      minutes_axis: bool = False):
    """(backend, f): ``f(r0, w, p, fee, gas, arb_fee) -> (reserves, fees)``, one fee path of a backend ("scan":
    the core's scan, "kernel": the fused kernel) over two rows (one minute: Phase A, then Phase B), compiled
    once per static setting and reused by every example. ``minutes_axis``: vmapped over a leading axis of
    minutes, returning row 1 of each. (Eager JAX traces and compiles a new scan at every call: a thorough run
    of 1000 examples crashed XLA with a segmentation fault in compilation.)"""
    bk = tfmm.get_backend(name, fee_path=fee_path)
    sigs = g3m.signature_matrix(n, kind)

    def minute(r0, w, p, fee, gas, arb_fee):
        reserves, _, fees = bk.reserves_with_fees(r0, w, p, fee, gas, arb_fee, sigs, smooth=smooth,
                                                  smoothing=smoothing)
        return (reserves[1], fees[1]) if minutes_axis else (reserves, fees)

    return bk, bk.jit(bk.vmap(minute) if minutes_axis else minute)


@parity_settings(ci=10, dev=20)  # compiled once per (n, signature set) and fee path
@given(state=pool_states())
def test_one_step_reserves_equal_reference(bk, state):
    """One minute (Phase A at w0, Phase B at w1, both at p1) from the same arbitrary state: the core's scan and
    the backend's fused kernel against the reference's pool step, exact mode, float64."""
    r0, w, p, fee, gas, arb_fee, kind = state
    n = r0.size
    sigs = g3m.signature_matrix(n, kind)
    per_row = [np.full(2, x) for x in (fee, gas, arb_fee)]
    ref, _, _ = rpool.simulate_reserves(r0, w, p, *per_row, rpool.signature_matrix(n, kind))
    # a decision within the reference's rounding of its boundary may go either way (reference_boundaries.py)
    assume(not step_near_boundary(ref, w, p, fee, gas, arb_fee, sigs))
    for fee_path in ("scan", "kernel"):
        backend, minute = compiled_fee_path(bk.name, fee_path, n, kind)
        reserves, _ = minute(*[backend.asarray(x) for x in (r0, w, p, *per_row)])
        # the same decisions and closed forms: a few ulps of exp/log per phase (1e-15 measured), 1e-12 leaves
        # room
        np.testing.assert_allclose(np.asarray(reserves)[1], ref[1], rtol=1e-12, err_msg=fee_path)


# ---------------------------------------------------------------------------------------------------------
# trajectories >= 10,000 minutes: reference, JAX and torch


@parity_settings(ci=3, dev=6)  # three simulations of 10,080 minutes and a JAX compile per example
@given(case=scenarios_3way(length_key="long"))
def test_trajectories_three_way(case):
    both_array_backends()
    prices, strategy, pool, start, length = case
    jx = run("jax", prices, strategy, pool, start, length)
    tc = run("torch", prices, strategy, pool, start, length)
    ref = run("reference", prices, strategy, pool, start, length)
    # weights do not depend on reserves: estimator and recursion rounding, ~1e-15 between JAX and the
    # reference (both sequential), judged to 1e-9 relative or 2e-10 absolute (weights are O(1 / n) numbers)
    np.testing.assert_allclose(ref.weights, jx.weights, rtol=1e-9, atol=2e-10, err_msg="reference")
    # torch's estimators use associative scans: another association order over 10,080 one-minute chunks,
    # amplified where a weight is a difference of two long EWMAs (difference momentum, lambdas within 4e-4 of
    # 1): 6.4e-10 absolute at a weight of 0.32 measured (6.7e-11 at 0.06 for momentum), so 1e-8 or 2e-9
    # absolute, as torch's reserves below
    np.testing.assert_allclose(tc.weights, jx.weights, rtol=1e-8, atol=2e-9, err_msg="torch")
    # On a decision within rounding of its boundary any two backends may choose differently (JAX and torch
    # too: their weights differ by ~1e-16). The flipped trade has ~zero profit, but from there the paths sit
    # at different points of the no-arbitrage band and make different rebalancing trades, whose value effects
    # (~fee^2 of the pool each) add up like a random walk: measured 2.9e-7 over 10,080 minutes (5 assets,
    # fee 1e-4, no gas, all three backends pairwise alike). 1e-5 bounds that with a 30-fold margin; the
    # values test of test_parity_jax_reference.py holds such draws to 1e-8 over shorter bouts
    for sim in (tc, ref):
        np.testing.assert_allclose(sim.values, jx.values, rtol=1e-5, err_msg=sim.backend)
    assume(not near_boundary(ref))
    # the same decisions every minute: rounding of 10,080 steps (~1e-13 measured)
    # torch's weights differ from JAX's and the reference's by up to ~1.3e-9 (association order, above), and
    # its reserves follow them: 1.9e-9 measured (fee 0, gas 1 USD); JAX against the reference: 1e-9
    for a, b in ((tc, jx), (jx, ref), (tc, ref)):
        for q in ("reserves", "values"):
            np.testing.assert_allclose(getattr(a, q), getattr(b, q), rtol=1e-8 if "torch" in (a.backend, b.backend)
                                       else 1e-9, err_msg=f"{a.backend} vs {b.backend} {q}")


# ---------------------------------------------------------------------------------------------------------
# fused kernel against the core's scan, on each backend
#
# Both evaluate the same formulas, so they agree to rounding at every step. Exact mode keeps them within
# rounding over whole bouts (measured: <= 2.4e-15 over two days, 40 draws). Smooth mode is a continuous map
# that can be chaotic: at a minute whose gate margin m is within a few temperatures of 0 the executed trade
# sigmoid(m / tau) Delta moves with the reserves through m, and multiplies a perturbation by about
# (gas + cost) / (2 tau) (the profit at the threshold over twice the gate temperature); between such minutes
# the reserves stand still. With gas 49 USD and tau 2 USD one-step Jacobians of 10..40 every few minutes
# grow rounding (1e-16) to ~1e-2 within a few hundred minutes: the scan against itself with r0 moved by
# 1e-15 parts as far as the kernel does, and the scan's own derivative dR_t / dr0 reaches 1e17; gas <= tau
# amplifies nothing. Smooth bouts are therefore compared (1) one minute at a time from the same state, over
# the whole bout, which checks every step's formulas, and (2) as free-running paths on the rows where the
# map keeps rounding-sized perturbations small (rounding_horizon, measured on each draw).

SELECTIONS = ("softmax", "straight_through", "hard")
# torch's scan is an eager loop (~1 ms per minute, autograd keeps every step): 300 minutes; JAX: two days
SCAN_LENGTH = {"jax": "two_days", "torch": "short"}
# bout lengths the gradient comparison is cut to (the longest within the draw's rounding horizon); a few
# fixed lengths so that JAX compiles are reused across examples
GRADIENT_LENGTHS = (302, 152, 77, 40, 21)
# rounding_horizon: every price perturbed by NOISE relative (~4.5 ulp), which moves a gate margin by
# ~1e-15 of the trade's value, above the paths' own rounding of it (cancellation-free profits); the horizon
# ends where the perturbed path has parted by GROWTH, so the compared paths' rounding differences are still
# ~1e-13 or less there, ten times under the 1e-12 they are judged at
NOISE, GROWTH, NOISE_DRAWS = 1e-15, 1e-13, 4


def rounding_horizon(sim) -> int:
    """Rows of an unbatched smooth-mode simulation over which its fee path keeps rounding-sized
    perturbations below GROWTH: the path recomputed on ``sim``'s own weights and prices against NOISE_DRAWS
    copies with every price perturbed by NOISE relative (the fused kernel's numpy entry point, one batched
    call; the one-step comparison holds it to the scan's formulas). The first row where the worst copy has
    parted by more than GROWTH, or the number of rows if none has."""
    req = sim.request
    s, T = int(req.starts[0]), sim.reserves.shape[0]
    n = sim.reserves.shape[1]
    settings = fused.FeePathSettings.from_smoothing(g3m.signature_matrix(n, req.pool.signature_set(n)), True,
                                                    req.smoothing)
    rates = [np.asarray(x, dtype=np.float64)[s:s + T] for x in (req.fee, req.gas, req.arb_fee)]
    prices = np.asarray(sim.prices, dtype=np.float64)
    noise = NOISE * np.random.default_rng(0).standard_normal((NOISE_DRAWS,) + prices.shape)
    prices = np.concatenate([prices[None], prices * (1.0 + noise)])
    paths = fused.forward(settings, sim.reserves[0], sim.weights, prices, *rates)[0]
    parted = np.max(np.abs(paths[1:] / paths[0] - 1.0), axis=(0, 2))
    over = np.nonzero(parted > GROWTH)[0]
    return int(over[0]) if over.size else T


def one_step_each_minute(name, fee_path, sim, smoothing):
    """(reserves (T - 1, n), fees (T - 1,)): minute t of ``sim`` (smooth mode, unbatched) recomputed by one fee
    path from ``sim``'s own reserves at t - 1, for every t at once (the backend's vmap over minutes)."""
    req = sim.request
    s, T = int(req.starts[0]), sim.reserves.shape[0]
    n = sim.reserves.shape[1]
    bk, minutes = compiled_fee_path(name, fee_path, n, req.pool.signature_set(n), True, smoothing, True)
    pair = lambda x: np.ascontiguousarray(np.stack([x[:-1], x[1:]], axis=1))  # noqa: E731  rows (t - 1, t)
    rates = [pair(np.asarray(x, dtype=np.float64)[s:s + T]) for x in (req.fee, req.gas, req.arb_fee)]
    args = [bk.asarray(x) for x in (np.ascontiguousarray(sim.reserves[:-1]), pair(sim.weights), pair(sim.prices),
                                    *rates)]
    host = lambda x: np.asarray(x.detach() if hasattr(x, "detach") else x)  # noqa: E731
    return tuple(host(x) for x in minutes(*args))


@parity_settings(ci=2, dev=4)  # two compiles (kernel, scan) x (forward, one-step vmap) per example on JAX
@given(data=st.data())
def test_kernel_equals_scan(bk, data):
    # mode and selection are part of the palette: one compile per entry and fee path
    settings = data.draw(static_settings((2, 3, 4), TRAINABLE, mode=("exact", "smooth"), selection=SELECTIONS))
    prices, strategy, pool, start, length = data.draw(
        scenarios_3way(length_key=SCAN_LENGTH[bk.name], settings=settings))
    mode = settings["mode"]
    smoothing = None if mode == "exact" else tfmm.Smoothing(
        selection=settings["selection"], gate_temperature=2.0, selection_temperature=2.0, weight_temperature=1e-3)
    sims = {fp: run(bk.name, prices, strategy, pool, start, length, mode, smoothing, fee_path=fp)
            for fp in ("kernel", "scan")}
    rows = sims["scan"].reserves.shape[0]
    if mode == "exact":
        # A decision within rounding of its boundary may go either way between any two compiled evaluations
        # of the same formulas (measured: frictionless fee 1e-4, Phase B candidates tied to 1e-16 of the pool
        # every minute; kernel and scan parted at minute 8 by a trade of ~fee of a reserve, values 5e-9
        # apart): values agree to 1e-8 always (as in test_trajectories_three_way), paths only off boundaries
        np.testing.assert_allclose(sims["kernel"].values, sims["scan"].values, rtol=1e-8, err_msg="values")
        assume(not near_boundary(run("reference", prices, strategy, pool, start, length)))
    if mode == "smooth":
        # (1) every minute from the scan's state: one step of rounding, through the gate's slope where the
        # margin is near 0 (<= 4.5e-14 measured, gas 49 USD), so 1e-12 as for tests/test_fee_kernel.py's step
        one = {fp: one_step_each_minute(bk.name, fp, sims["scan"], smoothing) for fp in ("kernel", "scan")}
        if settings["selection"] == "hard":
            # hard selection is an argmax: where two candidates tie to rounding (frictionless pools, fee 1e-4)
            # kernel and scan may pick either from the same state (2 of 1,196 entries measured, apart by
            # 5e-5 ~ the fee); those minutes hold to the no-arbitrage band, every other one to 1e-12
            rel = np.abs(one["kernel"][0] / one["scan"][0] - 1.0)
            flipped = np.any(rel > 1e-12, axis=1)
            assert flipped.mean() <= 0.01 and float(rel.max()) <= 2 * pool.fee + 1e-12, (flipped.sum(), rel.max())
        else:
            np.testing.assert_allclose(one["kernel"][0], one["scan"][0], rtol=1e-12, err_msg="one-step reserves")
        # USD per minute, exactly 0 where nothing traded: judged on the bout's largest fee
        assert_scaled(one["kernel"][1], one["scan"][1], 1e-10, "one-step fees")
        # (2) free-running paths while rounding is not amplified past 100-fold
        rows = rounding_horizon(sims["scan"])
    # the kernel evaluates the scan body's formulas in the same order: rounding only (1e-15 measured, exact
    # mode over whole bouts; smooth mode, up to the horizon, amplified at most 100-fold: <= 1e-13)
    for q in ("reserves", "values"):
        np.testing.assert_allclose(getattr(sims["kernel"], q)[:rows], getattr(sims["scan"], q)[:rows], rtol=1e-12,
                                   err_msg=f"{q} (rows compared: {rows})")
    # USD per minute, exactly 0 where nothing traded: judged on the compared rows' largest fee
    assert_scaled(sims["kernel"].fees[:rows], sims["scan"].fees[:rows], 1e-10, "fees")


@parity_settings(ci=2, dev=4)  # two gradient compiles (kernel, scan) per example and length on JAX
@given(data=st.data())
def test_kernel_equals_scan_gradients(bk, data):
    settings = data.draw(static_settings((2, 3, 4), TRAINABLE, selection=SELECTIONS))
    prices, strategy, pool, start, length = data.draw(
        scenarios_3way(length_key=SCAN_LENGTH[bk.name], settings=settings))
    smoothing = tfmm.Smoothing(selection=settings["selection"], gate_temperature=2.0, selection_temperature=2.0,
                               weight_temperature=1e-3)
    # the longest bout within the draw's rounding horizon (module comment above): beyond it the two paths'
    # trajectories, and so their gradients, are decided by amplified rounding. Measured on the reference's
    # simulation of the draw (its weights are the backends' to 1e-9, and it needs no compile)
    lengths = (min(length, GRADIENT_LENGTHS[0]),) + GRADIENT_LENGTHS[1:]
    probe = run("reference", prices, strategy, pool, start, lengths[0], "smooth", smoothing)
    horizon = rounding_horizon(probe)
    length = next((b for b in lengths if b - 1 <= horizon), None)
    assume(length is not None)  # amplified within 20 minutes (rare: gas near 50 USD and fast weight changes)
    g = {fp: grads_of(bk.name, prices, strategy, pool, start, length, smoothing, fee_path=fp)
         for fp in ("kernel", "scan")}
    # the objective (a return V_T / V_0 - 1, ~1e-4 here and there) is the difference of O(1) numbers: rounding
    # ~1e-11 relative, or a few eps absolute (1.3e-15 measured on a return of 1.1e-4)
    np.testing.assert_allclose(g["kernel"][0], g["scan"][0], rtol=1e-11, atol=1e-14)
    # judged on the whole gradient's scale (a parameter's gradient can be 0 up to rounding); the strategy's
    # gradient passes through the weights and both adjoints (2.4e-8 of that scale measured): 1e-7.
    # The scale is at least 1e-6 |objective| (per unit parameter): on draws whose parameters hardly move
    # the weights within the bout the whole gradient is ~1e-16 |objective| (measured down to 1e-61), the
    # cancelling sum of terms some 1e13 times larger, so the adjoints' ~1e-12 relative rounding of
    # dobjective / dweights leaves the two gradients up to 2.5e-15 |objective| apart (measured)
    whole = max([float(np.max(np.abs(v), initial=0.0)) for v in g["scan"][1].values()]
                + [1e-6 * float(np.abs(g["scan"][0]))])
    for k in g["scan"][1]:
        assert_scaled(g["kernel"][1][k], g["scan"][1][k], 1e-7, k, scale=whole)


# ---------------------------------------------------------------------------------------------------------
# log-domain products


@st.composite
def extreme_rows(draw, n=8, rows=4):
    """Price rows whose every entry is log-uniform in 1e-150..1e150 (row-to-row ratios up to 1e300), weights
    in the bounded simplex, equilibrium reserves of a 1e6 USD pool."""
    logs = np.asarray(draw(st.lists(st.floats(-150.0, 150.0), min_size=n * rows, max_size=n * rows)))
    prices = 10.0 ** logs.reshape(rows, n)
    raw = np.asarray(draw(st.lists(st.floats(0.0, 1.0), min_size=n * rows, max_size=n * rows))).reshape(rows, n)
    w_min = 0.1 / n
    weights = w_min + (1.0 - n * w_min) * (raw + 1e-3) / (raw + 1e-3).sum(axis=1, keepdims=True)
    return prices, weights, 1e6 * weights[0] / prices[0]


def naive_rho(weights, prices):
    """rho_p * rho_w of math.md 2.2 as a literal product of powers (over/underflows for extreme ratios)."""
    with np.errstate(all="ignore"):
        x, y = prices[1:] / prices[:-1], weights[1:] / weights[:-1]
        rho_p = np.prod(x ** weights[:-1], axis=1, keepdims=True) / x
        rho_w = y / np.prod(y ** weights[1:], axis=1, keepdims=True)
        return rho_p * rho_w


@parity_settings(ci=10, dev=20)  # a handful of eager array ops per example
@given(rows=extreme_rows())
def test_log_domain_products(bk, rows):
    """log(rho) (g3m.log_rebalancing_ratios) and the zero-fee reserves (g3m.zero_fee_reserves) equal the literal
    product of powers where that is a normal float, and stay finite where it over- or underflows."""
    prices, weights, r0 = rows
    xp = bk.xp
    log_rho = np.asarray(g3m.log_rebalancing_ratios(bk.asarray(weights), bk.asarray(prices), xp))
    naive = naive_rho(weights, prices)
    assert np.all(np.isfinite(log_rho))
    ok = np.isfinite(naive) & (naive >= np.finfo(np.float64).tiny)
    # |log rho| up to ~1400 carries ~1400 x 1.1e-16 ~ 2e-13 of absolute rounding, so exp() of it ~2e-13 relative
    np.testing.assert_allclose(np.exp(log_rho[ok]), naive[ok], rtol=1e-12)


def true_log_reserves(weights, prices, r0):
    """log R_t of the zero-fee pool (math.md 2.2), summed in logs in numpy."""
    lx, ly = np.log(prices[1:] / prices[:-1]), np.log(weights[1:] / weights[:-1])
    steps = (ly - lx + np.sum(weights[:-1] * lx, axis=1, keepdims=True)
             - np.sum(weights[1:] * ly, axis=1, keepdims=True))
    return np.log(r0) + np.vstack([np.zeros((1, r0.size)), np.cumsum(steps, axis=0)])


@parity_settings(ci=10, dev=20)
@given(rows=extreme_rows())
def test_zero_fee_reserves_finite_where_representable(bk, rows):
    prices, weights, r0 = rows
    with np.errstate(all="ignore"):
        reserves = np.asarray(g3m.zero_fee_reserves(bk.asarray(r0), bk.asarray(weights), bk.asarray(prices), bk))
        representable = np.abs(true_log_reserves(weights, prices, r0)) < 700.0  # e^700 ~ 1e304
    assert np.all(np.isfinite(reserves[representable]) & (reserves[representable] > 0))
    # against the log-domain truth, not the reference: the reference's zero-fee closed form multiplies
    # per-minute factors and loses up to ~4e-9 relative at price levels 1e-150..1e150 (measured), so it
    # cannot arbitrate here; where levels are moderate the trajectory tests compare it at 1e-9
    truth = true_log_reserves(weights, prices, r0)
    good = np.isfinite(reserves) & (reserves > 0) & representable
    # the same log terms summed in another order: absolute error ~ eps x the largest term x a few steps
    np.testing.assert_allclose(np.log(reserves[good]), truth[good], rtol=0,
                               atol=64 * np.finfo(np.float64).eps * (1.0 + np.max(np.abs(truth[good]), initial=0.0)))




@parity_settings(ci=1, dev=2)  # 8 assets, 56 pairwise signatures: a long JAX compile
@given(seed=st.integers(0, 2**32 - 1), fee=st.sampled_from([0.0, 0.003]))
def test_simulation_at_extreme_price_levels(bk, seed, fee):
    """8 assets whose price levels span 1e-150..1e150: the simulation's values stay finite and equal the
    reference's."""
    levels = np.logspace(-150, 150, 8)
    prices = make_prices(seed, 8, 2 * DAY, vol=0.8, drift=0.0, jump_rate=2.0, jump_size=0.02, levels=levels)
    pool = tfmm.Pool(fee=fee, gas=1.0, chunk_period=60)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=8, memory_days=0.5, k_per_day=4, chunk_period=60)
    sim = run(bk.name, prices, strategy, pool, DAY, DAY + 1)
    ref = run("reference", prices, strategy, pool, DAY, DAY + 1)
    assert np.all(np.isfinite(sim.values)) and np.all(sim.reserves > 0)
    # values are sums of R_i p_i ~ 1e5 USD whatever the levels: rounding of 1,440 steps of 56 candidates
    np.testing.assert_allclose(sim.values, ref.values, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------
# smooth-mode gradients: JAX autodiff vs torch autograd vs the reference's central differences

GRAD_SMOOTHING = tfmm.Smoothing(gate_temperature=2.0, selection_temperature=2.0, weight_temperature=1e-3)


@pytest.mark.parametrize("name", TRAINABLE)
@parity_settings(ci=1, dev=2)  # a JAX gradient compile and 2 x (parameters x assets) reference runs per example
@given(data=st.data())
def test_smooth_gradients_three_way(name, data):
    both_array_backends()
    settings = data.draw(static_settings(n_assets=(2, 3), names=(name,), chunk_periods=(5, 60)))
    # gas <= 2 x the gate temperature, as for test_float32_gradients: above it the smooth map amplifies
    # float64 rounding too (measured, gas 19 USD: JAX and torch gradients 8.7e-7 apart, at 4 USD 1e-12)
    pool = data.draw(pools(settings, fee=st.sampled_from([0.003, 0.01]),
                           gas=st.one_of(st.just(0.0), st.floats(0.1, 2 * GRAD_SMOOTHING.gate_temperature))))
    n = settings["n"]
    strategy = data.draw(strategies_for(n, pool.chunk_period, names=(name,), noise=0.1))
    prices = data.draw(st.builds(make_prices, st.integers(0, 2**32 - 1), st.just(n), st.just(3 * DAY),
                                 vol=st.just(0.8), drift=st.just(0.0), jump_rate=st.just(0.0),
                                 jump_size=st.just(0.0), levels=st.just(100.0)))
    start, length = DAY, DAY + 1
    v_jax, g_jax = grads_of("jax", prices, strategy, pool, start, length, GRAD_SMOOTHING)
    v_tc, g_tc = grads_of("torch", prices, strategy, pool, start, length, GRAD_SMOOTHING)
    # The reference objective's roughness at steps of 1e-7 (objective_noise): 1e-14..3e-13 measured on
    # well-conditioned draws. Above 1e-11 the smooth map amplifies rounding a millionfold or more (a
    # difference-momentum pool at fee 0.3%, gas 0, k ~ 7 per day: 1.5e-8, the reference's differences 10%
    # off at every step while autodiff moved by 4e-9 under +-4e-16 price nudges, 1e-13 on the others): no
    # difference quotient and no second implementation resolves a gradient there, so such a draw checks
    # values only (torch and JAX 1.8e-10 apart measured; 1e-8)
    noise = objective_noise(prices, strategy, pool, start, length, GRAD_SMOOTHING)
    rough = noise > 1e-11
    event(f"objective rough at 1e-7 steps (> 1e-11): {rough}")
    # the same smooth function on both array backends: rounding of the forward pass (a return V_T / V_0 - 1
    # carries V_T's rounding in absolute terms: 2.4e-15 measured on a return of 8.7e-7)
    np.testing.assert_allclose(v_tc, v_jax, rtol=1e-8 if rough else 1e-10, atol=1e-13)
    if rough:
        return
    # judged on the whole gradient's largest entry (a parameter the objective hardly depends on has a
    # gradient of ~1e-15 that only rounding decides), at least 1e-12: the returns objective's own rounding is
    # ~1e-14 (below), so a smaller gradient is 0 to any measurement (measured: a pinned pool's whole gradient
    # 7.9e-51 in JAX, exactly 0 in torch)
    scale = max(max(float(np.max(np.abs(g))) for g in g_jax.values()), 1e-12)
    # plus what rounding-sized changes of the input move JAX's own gradient by (rounding_sensitivity): where
    # the map amplifies rounding the two implementations' roundings part them as much (measured: mean-
    # reversion channel, 5-minute chunks, k ~ 90 per day: 1.6e-7 relative apart, the same order)
    sensitivity = rounding_sensitivity(prices, strategy, pool, start, length, g_jax)
    for k in STRATEGY_KEYS(strategy):
        np.testing.assert_allclose(g_tc[k], g_jax[k], rtol=1e-8, atol=1e-8 * scale + 10.0 * sensitivity,
                                   err_msg=f"torch vs jax {k}")
    # The reference's difference quotients (reference_slopes), each exact to O(s^2) or better where the
    # objective is smooth across its stencil: the Richardson-extrapolated central difference (a draw with a
    # sharp smooth speed limit had h^2 |f^(3)| / 6 = 2.3e-4 relative at the plain step) and second-order
    # one-sided differences to the left and to the right. Smooth mode is only piecewise smooth: candidate
    # validity and the gas threshold stay hard, so kinks remain, dense where many minutes sit at the edge of
    # the no-arbitrage band. A kink inside a stencil makes it a mean slope across it (measured: 1.1e-4
    # relative off at steps 3e-5 and 1e-5, 1e-7 at <= 3e-6; another draw 2e-3, 7e-4 and 4e-5 off at steps
    # 3e-5, 3e-4 and 3e-6), and autodiff gives the derivative on the kink-free side, so at least one stencil
    # at one step must agree to 1e-5 (plus 1e-5 of the gradient's scale). Each also carries the objective's
    # rounding e_f divided by the step, measured on each example (objective_noise: 1.8e-14 at fee 1%, 3e-13
    # at fee 0 with gas 0.5 USD, where the gate sits mid-sigmoid), which bounds how small a step helps
    from tfmm.reference.backend import DEFAULT_RELATIVE_STEP

    slopes = {}
    for h in (DEFAULT_RELATIVE_STEP, DEFAULT_RELATIVE_STEP * 10, DEFAULT_RELATIVE_STEP / 10,
              DEFAULT_RELATIVE_STEP / 100):
        slopes[h] = reference_slopes(prices, strategy, pool, start, length, GRAD_SMOOTHING, h)
        outside = {k: reference_gap(g_jax[k], slopes, k, strategy.params[k], noise, 1e-5, 1e-5 * scale)
                   for k in STRATEGY_KEYS(strategy)}
        outside = {k: gap for k, gap in outside.items() if gap > 0}
        if not outside:
            break
    assert not outside, (f"reference vs jax: {outside} past the tolerance; objective noise {noise:.2e}; jax "
                         f"{g_jax}, reference (central, left, right) by relative step {slopes}")


def rounding_sensitivity(prices, strategy, pool, start, length, g_jax) -> float:
    """Largest change of JAX's float64 gradient when every price moves by a few eps (relative +-4e-16, fixed
    pseudo-random signs): the size of gradient differences that rounding alone can cause on this example."""
    rng = np.random.default_rng(0)
    values = np.asarray(prices.values, dtype=np.float64)
    nudged = tfmm.Prices(values * (1.0 + 4e-16 * rng.choice([-1.0, 1.0], values.shape)))
    _, g = grads_of("jax", nudged, strategy, pool, start, length, GRAD_SMOOTHING)
    return max(float(np.max(np.abs(g[k] - g_jax[k]))) for k in g_jax)


def _reference_returns(prices, strategy, pool, start, length, smoothing, params) -> float:
    """The reference's smooth-mode returns objective with the strategy's parameters replaced by ``params``."""
    from tfmm.api import make_request

    ref = tfmm.get_backend("reference")
    request = make_request(prices, strategy.with_params(params), pool, start=start, length=length, mode="smooth",
                           smoothing=smoothing)
    return float(ref.metrics(ref.simulate(request))["returns"])


def _shifted(params: dict, key: str, index: int, d: float) -> dict:
    out = {k: np.array(v, dtype=np.float64) for k, v in params.items()}
    out[key].flat[index] += d
    return out


def objective_noise(prices, strategy, pool, start, length, smoothing, probes: int = 9, spacing: float = 1e-7) -> float:
    """Rounding noise of the reference's returns objective, e_f: three times the largest deviation from a
    fitted parabola of f at ``probes`` points along all parameters at once, ``spacing`` x max(1, |x|) apart
    (large enough to reshuffle every rounding, small enough that the cubic term, ~|f^(3)| (4 spacing)^3, is
    ~1e-19; the factor covers the larger maximum over a gradient's hundreds of evaluations)."""
    shifts = spacing * np.arange(-(probes // 2), probes // 2 + 1)
    def moved(t):
        return {k: np.asarray(v, dtype=np.float64) + t * np.maximum(1.0, np.abs(v)) for k, v in strategy.params.items()}
    values = np.array([_reference_returns(prices, strategy, pool, start, length, smoothing, moved(t)) for t in shifts])
    residual = values - np.polyval(np.polyfit(shifts, values, 2), shifts)
    return 3.0 * float(np.max(np.abs(residual)))


# noise amplification of each stencil below: its error from evaluations off by <= e_f is <= factor e_f / s
SLOPE_NOISE_FACTORS = np.array([3.0, 8.0, 8.0])


def reference_slopes(prices, strategy, pool, start, length, smoothing, h) -> dict:
    """key -> (3, *shape): at the absolute step s = h max(1, |x|), from f at x, x +- s / 2 and x +- s:
    the Richardson central difference (4 D(s / 2) - D(s)) / 3, D(s) = (f(x + s) - f(x - s)) / (2 s), and the
    one-sided (-3 f(x) + 4 f(x + s / 2) - f(x + s)) / s and (3 f(x) - 4 f(x - s / 2) + f(x - s)) / s, all with
    truncation O(s^2) or smaller. s is taken as (x + s) - x as rounded (tfmm.finite_differences does likewise),
    so x + s is exact and the other points are off by at most eps |x| (~3e-10 of the smallest step)."""
    f = functools.partial(_reference_returns, prices, strategy, pool, start, length, smoothing)
    f0 = f(strategy.params)
    out = {}
    for key, x in strategy.params.items():
        x = np.asarray(x, dtype=np.float64)
        slopes = np.empty((3, x.size))
        for index, xi in enumerate(x.flat):
            s = (xi + h * max(1.0, abs(float(xi)))) - xi
            fp, fm, fhp, fhm = (f(_shifted(strategy.params, key, index, d)) for d in (s, -s, s / 2, -s / 2))
            central = (4.0 * (fhp - fhm) / s - (fp - fm) / (2.0 * s)) / 3.0
            left = (3.0 * f0 - 4.0 * fhm + fm) / s
            right = (-3.0 * f0 + 4.0 * fhp - fp) / s
            slopes[:, index] = (central, left, right)
        out[key] = slopes.reshape((3,) + x.shape)
    return out


def reference_gap(grad, slopes: dict, key: str, x, noise: float, rtol: float, atol: float) -> float:
    """How far (largest entry, objective units per parameter unit) ``grad`` lies outside the closest of the
    reference's slopes at any step, allowing rtol |grad| + atol + factor e_f / s (0 or less when inside)."""
    grad, x = np.asarray(grad, dtype=np.float64), np.asarray(x, dtype=np.float64)
    gaps = []
    for h, by_key in slopes.items():
        step = h * np.maximum(1.0, np.abs(x))
        for estimate, factor in zip(by_key[key], SLOPE_NOISE_FACTORS):
            allowed = rtol * np.abs(grad) + atol + factor * noise / step
            gaps.append(np.abs(estimate - grad) - allowed)
    return float(np.max(np.min(np.stack(gaps), axis=0)))


def STRATEGY_KEYS(strategy):  # noqa: N802
    return tuple(strategy.params)


@parity_settings(ci=1, dev=2)  # two gradient compiles (float32, float64) per backend and example
@given(data=st.data())
def test_float32_gradients(bk, data):
    """float32 gradients within 5e-3 of float64 (same backend; with a weight pinned at a bound 5e-2): float32
    prices, weights and parameters carry ~6e-8 relative rounding, and the estimators' sums and the backward
    recursion over 1,440 minutes amplify it (weights are differences of EWMAs, so a gradient loses ~3 digits
    to cancellation: ~1e-4..1e-3 measured)."""
    settings = data.draw(static_settings(n_assets=(2, 3), names=("momentum", "power_channel", "min_variance"),
                                         chunk_periods=(60,), frictions=("fee",)))
    # gas <= 2 x the gate temperature (2 USD): a gate event's one-step amplification (gas + cost) / (2 tau) is
    # then about 1 or less. Above it the smooth map is chaotic (docs/decisions.md, the fee path): float32
    # rounding (6e-8) grows to O(1) within a day (measured, gas 10 USD: float32 gradients of JAX and torch
    # of opposite signs, float64 ones equal to 1e-12), so no float32 gradient is meaningful there
    pool = data.draw(pools(settings, fee=st.sampled_from([0.003, 0.01]),
                           gas=st.one_of(st.just(0.0), st.floats(0.1, 4.0))))
    n = settings["n"]
    strategy = data.draw(strategies_for(n, 60, names=(settings["strategy"],), noise=0.1))
    prices = make_prices(data.draw(st.integers(0, 2**32 - 1)), n, 3 * DAY, 0.8, 0.0, 0.0, 0.0, 100.0)
    out = {dt: grads_of(bk.name, prices, strategy, pool, DAY, DAY + 1, GRAD_SMOOTHING, dtype=dt)
           for dt in ("float32", "float64")}
    g = {dt: grads for dt, (_, grads) in out.items()}
    # judged on the whole gradient's largest entry, at least 1e-6 |objective| per unit parameter: a parameter
    # the objective hardly depends on (k where the speed limit binds: 2.6e-8 against 1.1e-6 for lambda)
    # has a gradient whose float32 rounding (~9e-11 measured, eps32 |objective| amplified) is a large part
    whole = max([float(np.max(np.abs(v))) for v in g["float64"].values()] + [1e-6 * float(abs(out["float64"][0]))])
    # 5e-3 with every weight off its bounds: 1e-6..1e-4 typical, the worst of a thorough run 2.4e-3 (power
    # channel, gas 2.1 USD at a gate temperature of 2 USD, where the smooth map amplifies float32 rounding
    # about twofold), above the 2e-3 first set here. A weight pinned within a few weight
    # temperatures of its floor or ceiling (the smooth clip's knee) loses more in the backward pass, with
    # float32 weights still within 3e-6 of float64: 6.3e-3 measured (power channel, a weight 8e-5 above its
    # floor) and 3.0e-2 (momentum with k ~ 200 per day, weights driven into their bounds). That is a known
    # float32 limitation (docs/decisions.md), not a precision target: such bouts are held to 5e-2 so that a
    # regression beyond it still fails
    sim = run(bk.name, prices, strategy, pool, DAY, DAY + 1, "smooth", GRAD_SMOOTHING)
    w_min, w_max = pool.weight_bounds(n)
    knee = 10 * GRAD_SMOOTHING.weight_temperature
    pinned = bool(np.any(sim.weights < w_min + knee) or np.any(sim.weights > w_max - knee))
    for k in g["float64"]:
        assert g["float32"][k].dtype == np.float32
        assert_scaled(g["float32"][k], g["float64"][k], 5e-2 if pinned else 5e-3, f"{k} (pinned: {pinned})",
                      scale=whole)


# ---------------------------------------------------------------------------------------------------------
# smooth -> exact, float32 vs float64, dtype preservation


@parity_settings(ci=1, dev=2)  # one compile per temperature on JAX
@given(case=scenarios_3way(length_key="day", n_assets=(2, 3), names=TRAINABLE,
                           pool_kwargs=dict(gas=st.floats(1.0, 20.0)), frictions=("fee", "gas_only")))
def test_smooth_approaches_exact(bk, case):
    """As every temperature falls (Smoothing.scaled(f), f = 1, 1e-3, 1e-6, 1e-9), smooth mode's values
    approach exact mode's: the gap ends below 1e-7, and no farther than it started.

    The gap need not fall at every step: a thorough run drew a pool (fee 0, gas 3.5 USD) whose gap was
    3.7e-6 at f = 1 and 4.4e-6 at f = 1e-3 on every backend alike. At a gate temperature of 1e-3 USD a trade
    whose margin is within ~1e-2 USD of the gas threshold executes in part, the path parts from exact mode's
    there, and later decisions differ by whole trades; a warmer gate executes more partial trades whose
    effects partly cancel. Only the limit is a property of the smooth map."""
    prices, strategy, pool, start, length = case
    exact = run(bk.name, prices, strategy, pool, start, length)
    base = tfmm.Smoothing(selection="softmax")
    gaps = []
    for f in (1.0, 1e-3, 1e-6, 1e-9):
        sim = run(bk.name, prices, strategy, pool, start, length, "smooth", base.scaled(f))
        gaps.append(float(np.max(np.abs(sim.values / exact.values - 1.0))))
    # temperatures of 1e-9 USD and 1e-13 weight units decide as exact mode, except a decision whose margin
    # is below the temperature (~1e-15 of the pool): 1e-7 allows one such flip of a tiny trade
    assert gaps[-1] < 1e-7, gaps
    assert gaps[-1] <= gaps[0] + 1e-9, gaps  # 1e-9: the exact path's own flips


@parity_settings(ci=1, dev=2)  # a 30-day bout in each dtype
@given(seed=st.integers(0, 2**32 - 1), n=st.sampled_from([2, 3]))
def test_float32_vs_float64_30_days(bk, seed, n):
    """A 30-day bout in float32 stays within 1e-5 of float64: the fused kernel computes the pool in float64;
    float32 enters through the prices and the weights (~6e-8 relative each, the weights' recursion
    accumulating over 720 chunks) — the bound of tests/test_fee_kernel.py."""
    prices = make_prices(seed, n, 31 * DAY + 1, 0.7, 0.0, 2.0, 0.02, 100.0)
    pool = tfmm.Pool(fee=0.003, chunk_period=60)
    strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=n, memory_days=1, k_per_day=20, chunk_period=60)
    sims = {dt: run(bk.name, prices, strategy, pool, DAY, 30 * DAY + 1, dtype=dt) for dt in ("float32", "float64")}
    assert sims["float32"].values.dtype == np.float32
    rel = float(np.max(np.abs(sims["float32"].values / sims["float64"].values - 1.0)))
    assert rel < 1e-5, rel


@parity_settings(ci=2, dev=4)  # compiles simulate, value_and_grad and metrics in float32
@given(case=scenarios_3way(length_key="short", n_assets=(2, 3), names=TRAINABLE))
def test_dtype_preservation(bk, case):
    """float32 in, float32 out: simulate (every array), value_and_grad (value and every gradient), metrics
    (batched, so arrays are returned)."""
    prices, strategy, pool, start, length = case
    with tfmm.use(bk.name):
        sim = tfmm.simulate(prices, strategy, pool, start=np.array([start, start]), length=length, dtype="float32")
        for q in ("reserves", "weights", "values", "trades", "fees", "prices"):
            assert np.asarray(getattr(sim, q)).dtype == np.float32, q
        for name, value in tfmm.metrics(sim).items():
            assert np.asarray(value).dtype == np.float32, name
        value, grads = tfmm.value_and_grad(prices, strategy, pool, start=start, length=length, objective="returns",
                                           dtype="float32")
        host = lambda x: np.asarray(x.detach() if hasattr(x, "detach") else x)  # noqa: E731
        assert host(value).dtype == np.float32
        for k, g in grads.items():
            assert host(g).dtype == np.float32, k
