"""Hypothesis strategies shared by the parity properties: every draw is a valid input by construction.

- price paths: GBM with a random volatility and trend per asset, random jumps, price levels across assets
  spread over 1e-6..1e6 (``price_paths``); ``extreme_levels`` spreads them over 1e-150..1e150;
- weights inside the bounded simplex ``[w_min, w_max]`` of a pool (``bounded_weights``);
- pools: fee 0..5% (exactly 0 included), gas, arbitrage fee, chunk periods 1, 5, 60, 1440, interpolation
  periods, interpolation kinds, speed limits, signature sets (``pools``);
- every strategy with parameters in valid ranges (``strategies_for``; tfmm/specs.py STRATEGY_PARAMETERS and
  ``parameter_problems``: memories well below ``max_memory_days``, ``k`` far below 2^40, finite squareplus
  arguments);
- bout starts on and off chunk boundaries (``bout_starts``).

Shapes and static settings are bucketed so that compiled functions are reused across examples: the number
of price rows and the bout lengths come from small fixed sets (``BOUT_LENGTHS``, ``SCENARIO_LENGTHS``), and
everything a compiled simulation holds static (strategy, number of assets, chunk and interpolation periods,
interpolation kind, speed limit, signature set, fees or none) from a fixed palette of PALETTE_SIZE
combinations per property that covers every value of every dimension (``static_settings``).
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
from hypothesis import strategies as st

import tfmm
from tfmm.specs import STRATEGY_PARAMETERS

DAY = 1440
CHUNK_PERIODS = (1, 5, 60, 1440)
TRAINABLE = tuple(k for k, v in STRATEGY_PARAMETERS.items() if v)
ALL_STRATEGIES = tuple(STRATEGY_PARAMETERS)
# bout lengths (minutes) used by the properties; one compile per (length, static pool/strategy settings)
BOUT_LENGTHS = {"step": 2, "short": 301, "day": 1441, "two_days": 2881, "long": 10_081, "month": 30 * DAY + 1}
_MINUTES_PER_YEAR = 525_600.0


def make_prices(seed: int, n: int, n_rows: int, vol, drift, jump_rate: float, jump_size: float,
                levels) -> tfmm.Prices:
    """GBM per asset (annualised ``vol``, ``drift``, one per asset), correlated through a common factor,
    with Poisson jumps (``jump_rate`` per day, log-size sd ``jump_size``), starting at ``levels``."""
    rng = np.random.default_rng(seed)
    vol, drift, levels = (np.broadcast_to(np.asarray(x, dtype=np.float64), (n,)) for x in (vol, drift, levels))
    dt = 1.0 / _MINUTES_PER_YEAR
    common = rng.normal(size=(n_rows - 1, 1))
    own = rng.normal(size=(n_rows - 1, n))
    shocks = np.sqrt(0.3) * common + np.sqrt(0.7) * own
    steps = (drift - 0.5 * vol**2) * dt + vol * np.sqrt(dt) * shocks
    jumps = rng.random((n_rows - 1, n)) < jump_rate / DAY
    steps = steps + jumps * rng.normal(0.0, jump_size, (n_rows - 1, n))
    log_p = np.vstack([np.zeros((1, n)), np.cumsum(steps, axis=0)]) + np.log(levels)
    return tfmm.Prices(np.exp(log_p))


@st.composite
def price_paths(draw, n: int, n_rows: int, level_span: float = 1e6):
    """A random price path of ``n_rows`` minutes: volatility 10%..300% a year and trend -300%..300% a year
    per asset, 0, 2 or 20 jumps a day of 0.5%..10%, levels log-uniform in [1/level_span, level_span]."""
    seed = draw(st.integers(0, 2**32 - 1))
    vol = draw(st.lists(st.floats(0.1, 3.0), min_size=n, max_size=n))
    drift = draw(st.lists(st.floats(-3.0, 3.0), min_size=n, max_size=n))
    jump_rate = draw(st.sampled_from([0.0, 2.0, 20.0]))
    jump_size = draw(st.sampled_from([0.005, 0.02, 0.1]))
    span = np.log10(level_span)
    levels = 10.0 ** np.asarray(draw(st.lists(st.floats(-span, span), min_size=n, max_size=n)))
    return make_prices(seed, n, n_rows, vol, drift, jump_rate, jump_size, levels)


@st.composite
def bounded_weights(draw, n: int, w_min: float | None = None):
    """(n,) weights in ``[w_min, 1 - (n - 1) w_min]`` summing to 1 (default ``w_min = 0.1 / n``, the pool's)."""
    w_min = 0.1 / n if w_min is None else w_min
    raw = np.asarray(draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n))) + 1e-3
    return w_min + (1.0 - n * w_min) * raw / raw.sum()


def fees(max_fee: float = 0.05):
    """Fee rates in [0, max_fee], exactly 0 often."""
    return st.one_of(st.just(0.0), positive_fees(max_fee))


def positive_fees(max_fee: float = 0.05):
    """Fee rates in (0, max_fee]: the usual values and any in between."""
    return st.one_of(st.sampled_from([1e-4, 1e-3, 3e-3, 1e-2, max_fee]), st.floats(1e-5, max_fee))


# --- static settings --------------------------------------------------------------------------------------
#
# Whatever is static for a compiled simulation (tfmm.engine.bout_config: strategy, number of assets, bout
# length, chunk and interpolation periods, interpolation kind, speed limit, signature set, whether the pool
# has fees at all) is drawn from a fixed palette per property, so a thorough run of 1000 examples compiles at
# most PALETTE_SIZE functions per property and backend and reuses them (JAX compiles a simulation in ~0.5 s
# and runs it in milliseconds). Everything else (prices, weights, parameters, fee, gas and arbitrage-fee
# values, bout starts) is drawn freely.

PALETTE_SIZE = 48
# interpolation_period: the pool's default (None, the chunk period), half the chunk period, the chunk period
INTERPOLATION_PERIODS = ("default", "half", "chunk")
# "none": fee = gas = arb_fee = 0 (the closed-form zero-fee path); "fee": fee > 0, gas and arbitrage fee
# 0 or positive; "gas_only": fee = 0, gas > 0 (the zero-fee trade inside the fee path), arbitrage fee 0 or > 0
FRICTIONS = ("none", "fee", "gas_only")


@functools.lru_cache(maxsize=None)
def covering_palette(dimensions: tuple[tuple[str, tuple], ...], size: int = PALETTE_SIZE) -> tuple[dict, ...]:
    """``size`` combinations of the ``(name, values)`` dimensions in which every value of every dimension
    appears floor(size / len) or ceil(size / len) times: each dimension's values repeated to ``size`` and
    shuffled independently. The seed is derived from the dimensions, so every process and run draws the same
    palette for a property (its compiled functions can be reused) and different properties differ."""
    if size < max(len(values) for _, values in dimensions):
        raise ValueError(f"palette size {size} is smaller than a dimension: {dimensions}")
    rng = np.random.default_rng(zlib.crc32(repr(dimensions).encode()))
    columns = {name: rng.permutation(np.arange(size) % len(values)) for name, values in dimensions}
    return tuple({name: values[columns[name][j]] for name, values in dimensions} for j in range(size))


def static_settings(n_assets=(2, 3, 4, 5), names=ALL_STRATEGIES, chunk_periods=CHUNK_PERIODS,
                    frictions=FRICTIONS, **more: tuple):
    """One entry of the palette over n, strategy, chunk period, interpolation period and kind, speed limit,
    signature set, friction (and ``more`` dimensions, e.g. ``length=(720, 1441)``)."""
    dims = dict(n=tuple(n_assets), strategy=tuple(names), chunk_period=tuple(chunk_periods),
                interpolation_period=INTERPOLATION_PERIODS, interpolation=("linear", "approx_optimal"),
                max_change=(3e-4, 2e-3, 1e-2), signatures=("auto", "pairwise"), friction=tuple(frictions))
    dims.update({k: tuple(v) for k, v in more.items()})
    return st.sampled_from(covering_palette(tuple(dims.items())))


def interpolation_minutes(setting: str, chunk_period: int) -> int | None:
    """The pool's ``interpolation_period`` for an INTERPOLATION_PERIODS entry."""
    return {"default": None, "half": max(1, chunk_period // 2), "chunk": chunk_period}[setting]


@st.composite
def pools(draw, settings: dict, fee=None, gas=None, arb_fee=None, max_fee: float = 0.05):
    """A valid pool with the static ``settings`` (a palette entry). ``fee``, ``gas``, ``arb_fee``: strategies
    overriding the defaults for the frictions that draw them (fee 1e-5..5%, gas 0 or 0.1..50 USD (> 0 for
    "gas_only"), arbitrage fee 0 or 1e-5..2e-3)."""
    chunk, friction = settings["chunk_period"], settings["friction"]
    any_gas = st.one_of(st.just(0.0), st.floats(0.1, 50.0))
    any_arb_fee = st.one_of(st.just(0.0), st.floats(1e-5, 2e-3)) if arb_fee is None else arb_fee
    if friction == "none":
        rates = (0.0, 0.0, 0.0)
    elif friction == "fee":
        rates = (draw(positive_fees(max_fee) if fee is None else fee), draw(any_gas if gas is None else gas),
                 draw(any_arb_fee))
    else:
        # a positive gas whatever ``gas`` draws: "gas_only" is a friction (the palette fixes has_fees)
        rates = (0.0, draw(st.floats(0.1, 50.0) if gas is None else gas.filter(lambda g: g > 0.0)), draw(any_arb_fee))
    pool = tfmm.Pool(
        fee=rates[0], gas=rates[1], arb_fee=rates[2], chunk_period=chunk,
        interpolation_period=interpolation_minutes(settings["interpolation_period"], chunk),
        interpolation=settings["interpolation"], max_change=settings["max_change"], signatures=settings["signatures"])
    assert pool.has_fees == (friction != "none"), (friction, rates)  # the static flag the palette fixes
    return pool


@st.composite
def strategies_for(draw, n: int, chunk_period: int, names=ALL_STRATEGIES, noise: float = 0.3):
    """A strategy of one of ``names`` for an ``n``-asset pool with ``chunk_period``: memories 0.25..8 days
    (at least two chunks), k 0.5..50 per day, channel exponents 1.5..4, each parameter perturbed per asset by
    a normal of sd ``noise`` (unconstrained units). All inside the ranges Strategy validation accepts."""
    name = draw(st.sampled_from(names))
    w0 = draw(bounded_weights(n))
    if not STRATEGY_PARAMETERS[name]:
        return tfmm.Strategy(name, {}, w0)
    min_days = max(0.25, 2.0 * chunk_period / DAY)
    memory = draw(st.floats(min_days, max(8.0, 2 * min_days)))
    strategy = tfmm.Strategy.from_memory_days(
        name, n_assets=n, memory_days=memory, k_per_day=draw(st.floats(0.5, 50.0)), chunk_period=chunk_period,
        initial_weights=w0, exponent=draw(st.floats(1.5, 4.0)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return strategy.with_params({k: v + rng.normal(0.0, noise, v.shape) for k, v in strategy.params.items()})


def bout_starts(chunk_period: int, latest: int):
    """A bout start in [0, latest]: on a chunk boundary, or off one (a random offset inside the chunk)."""
    on = st.integers(0, latest // chunk_period).map(lambda k: k * chunk_period)
    off = st.integers(0, latest)
    return st.one_of(on, off)


@st.composite
def scenarios_3way(draw, length_key: str = "day", n_assets=(2, 3, 4, 5), names=ALL_STRATEGIES,
                   pool_kwargs=None, warmup_days: int = 1, level_span: float = 1e6, frictions=FRICTIONS,
                   settings: dict | None = None):
    """(prices, strategy, pool, start, length): a full simulation scenario with a bucketed bout length and
    static settings from the property's palette (or ``settings``, an entry the property drew itself, e.g.
    from a palette with more dimensions)."""
    if settings is None:
        settings = draw(static_settings(n_assets, names, frictions=frictions))
    n = settings["n"]
    pool = draw(pools(settings, **(pool_kwargs or {})))
    length = BOUT_LENGTHS[length_key]
    n_rows = warmup_days * DAY + length + DAY  # room for the start's offset
    prices = draw(price_paths(n, n_rows, level_span))
    strategy = draw(strategies_for(n, pool.chunk_period, (settings["strategy"],)))
    start = draw(bout_starts(pool.chunk_period, n_rows - length + 1))
    return prices, strategy, pool, start, length


# --- the scenarios of test_parity_jax_reference.py (their values as they were: that module's tolerances were
# measured on them; static settings from a palette, bout lengths bucketed) -------------------------------------

SCENARIO_LENGTHS = (DAY // 2, DAY + 1, 2 * DAY)


def scenario_settings(n_assets=None, strategies=ALL_STRATEGIES, frictionless=False, **more: tuple):
    """The palette of :func:`scenarios` (and ``more`` dimensions)."""
    return static_settings((2, 3) if n_assets is None else (n_assets,), strategies, chunk_periods=(60, 240, 1440),
                           frictions=("fee",) if frictionless else FRICTIONS, length=SCENARIO_LENGTHS, **more)


@st.composite
def scenarios(draw, n_assets=None, strategies=ALL_STRATEGIES, frictionless=False, settings: dict | None = None):
    """(prices, strategy, pool, start, length). ``frictionless``: a fee > 0 but no gas and no arbitrage cost,
    where exact-mode decisions sit on their boundaries most often (reference_boundaries.py). ``settings``: a
    palette entry of :func:`scenario_settings` the property drew itself."""
    from tfmm.data import synthetic_prices

    if settings is None:
        settings = draw(scenario_settings(n_assets, strategies, frictionless))
    n, name, chunk, length = settings["n"], settings["strategy"], settings["chunk_period"], settings["length"]
    gas = {"fee": st.just(0.0) if frictionless else st.sampled_from([0.0, 5.0]), "gas_only": st.just(5.0)}
    pool = draw(pools(settings, fee=st.sampled_from([0.001, 0.003, 0.01]), gas=gas.get(settings["friction"]),
                      arb_fee=st.just(0.0) if frictionless else st.sampled_from([0.0, 0.0005])))
    n_days = 4
    prices = synthetic_prices(n_assets=n, n_minutes=n_days * DAY, seed=draw(st.integers(0, 10_000)),
                              vol=draw(st.sampled_from([0.3, 0.9])), corr=0.3)
    w = np.asarray(draw(st.lists(st.floats(0.2, 1.0), min_size=n, max_size=n)))
    w = w / w.sum()
    if STRATEGY_PARAMETERS[name]:
        strategy = tfmm.Strategy.from_memory_days(name, n_assets=n, memory_days=draw(st.sampled_from([0.5, 2.0])),
                                                  k_per_day=draw(st.sampled_from([1.0, 8.0])), chunk_period=chunk,
                                                  initial_weights=w)
        rng = np.random.default_rng(draw(st.integers(0, 1000)))
        strategy = strategy.with_params({k: v + rng.normal(0, 0.3, v.shape) for k, v in strategy.params.items()})
    else:
        strategy = tfmm.Strategy(name, {}, w)
    start = draw(st.integers(0, prices.n_rows - length + 1))
    return prices, strategy, pool, start, length


@st.composite
def pool_states(draw, n_assets=(2, 3, 4, 5)):
    """One minute from an arbitrary state: (r0 (n,), weights (2, n), prices (2, n), fee, gas, arb_fee, kind).
    Reserves near or far from equilibrium with ``weights[0]`` and ``prices[0]``; prices move by 1e-5..30%."""
    n = draw(st.sampled_from(n_assets))
    span = 6.0
    p0 = 10.0 ** np.asarray(draw(st.lists(st.floats(-span, span), min_size=n, max_size=n)))
    move = draw(st.sampled_from([1e-5, 1e-3, 3e-2, 0.3]))
    p1 = p0 * np.exp(move * np.asarray(draw(st.lists(st.floats(-1.0, 1.0), min_size=n, max_size=n))))
    w0 = draw(bounded_weights(n))
    w1 = w0 if draw(st.booleans()) else draw(bounded_weights(n))
    off = draw(st.sampled_from([0.0, 1e-4, 1e-2, 0.3]))
    value = 10.0 ** draw(st.floats(2.0, 9.0))
    r0 = value * w0 / p0 * np.exp(off * np.asarray(draw(st.lists(st.floats(-1.0, 1.0), min_size=n, max_size=n))))
    fee = draw(fees())
    gas = draw(st.one_of(st.just(0.0), st.floats(0.01, 50.0)))
    arb_fee = draw(st.one_of(st.just(0.0), st.floats(1e-5, 2e-3)))
    kind = draw(st.sampled_from(["all", "pairwise"]))
    return r0, np.vstack([w0, w1]), np.vstack([p0, p1]), fee, gas, arb_fee, kind


__all__ = [
    "DAY", "CHUNK_PERIODS", "TRAINABLE", "ALL_STRATEGIES", "BOUT_LENGTHS", "PALETTE_SIZE", "INTERPOLATION_PERIODS",
    "FRICTIONS", "SCENARIO_LENGTHS", "make_prices", "price_paths", "bounded_weights", "fees", "positive_fees",
    "covering_palette", "static_settings", "interpolation_minutes", "pools", "strategies_for", "bout_starts",
    "scenarios_3way", "scenario_settings", "scenarios", "pool_states",
]
