"""Drives :mod:`tfmm.core.simulate` on an array backend: batching, compilation cache, objectives.

Batching is always (parameter sets) x (bout starts) internally: ``vmap`` over sets outside (so each
set's rule outputs are computed once on the whole price array) and over starts inside. Leading axes
the caller did not ask for are squeezed away. Compiled functions are cached per static
:class:`~tfmm.core.simulate.BoutConfig` (and objective), so a training loop never recompiles.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from typing import Any, Callable

import numpy as np

from tfmm.records import Simulation, SimulationRequest, keep_requested_axes
from tfmm.core import g3m, weights as weights_mod
from tfmm.core.objectives import all_objectives, objective as objective_fn
from tfmm.core.simulate import BoutConfig, rule_outputs_for, simulate_bout


def bout_config(request: SimulationRequest, checkpoint_every: int | None = 4096) -> BoutConfig:
    """The static part of a request."""
    pool, strategy = request.pool, request.strategy
    n = request.n_assets
    w_min, w_max = pool.weight_bounds(n)
    signatures = g3m.signature_matrix(n, pool.signature_set(n))
    return BoutConfig(
        strategy=strategy.name, rule_kind=strategy.rule_kind, n_assets=n, length=request.length,
        chunk_period=pool.chunk_period, interpolation_period=pool.interpolation_minutes,
        interpolation=pool.interpolation, w_min=w_min, w_max=w_max, max_change=pool.max_change,
        initial_value=pool.initial_value, signatures=tuple(map(tuple, signatures.tolist())),
        smooth=request.mode == "smooth", smoothing=request.smoothing, has_fees=pool.has_fees,
        beta=strategy.beta, max_memory_days=strategy.max_memory_days, checkpoint_every=checkpoint_every,
    )


def default_cache_size() -> int:
    """Bound of each engine's cache of compiled functions: ``TFMM_COMPILED_CACHE_SIZE`` (default 64). Each
    backend instance (name and options) has its own engine. A compiled function costs about 110 memory
    mappings on XLA:CPU (Linux allows 65,530 per process by default), so a bound of 64 keeps one engine near
    7,000."""
    raw = os.environ.get("TFMM_COMPILED_CACHE_SIZE", "64")
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"TFMM_COMPILED_CACHE_SIZE={raw!r} is invalid: allowed an integer >= 1")
    return size


class CompiledCache:
    """Compiled functions by static key, least recently used first out beyond ``maxsize``: a process that
    sweeps many configurations (bout lengths, strategies, modes) keeps at most ``maxsize`` of them alive, and
    each evicted function's compiled code is freed with it."""

    def __init__(self, maxsize: int | None = None) -> None:
        self.maxsize = default_cache_size() if maxsize is None else int(maxsize)
        self._entries: OrderedDict[Any, Callable] = OrderedDict()
        self.evictions = 0

    def get(self, key: Any, build: Callable[[], Callable]) -> Callable:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        fn = self._entries[key] = build()
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)
            self.evictions += 1
        return fn

    def forget(self, predicate: Callable[[Any], bool]) -> int:
        """Drop the entries whose key satisfies ``predicate``; returns how many."""
        keys = [k for k in self._entries if predicate(k)]
        for k in keys:
            del self._entries[k]
        return len(keys)

    def clear(self) -> None:
        self._entries.clear()

    def items(self) -> list[tuple[Any, Callable]]:
        return list(self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries


def mentions_strategy(key: Any, name: str) -> bool:
    """Whether a cache key holds a :class:`BoutConfig` of strategy ``name``."""
    parts = key if isinstance(key, tuple) else (key,)
    return any(getattr(part, "strategy", None) == name for part in parts)


class ArrayEngine:
    """simulate / value_and_grad / metrics for a backend that supplies xp, jit, vmap and autodiff."""

    def __init__(self, bk: Any, cache_size: int | None = None) -> None:
        self.bk = bk
        self._cache = CompiledCache(cache_size)

    def forget_strategy(self, name: str) -> int:
        """Drop the compiled functions of strategy ``name`` (its rule was replaced or unregistered)."""
        return self._cache.forget(lambda key: mentions_strategy(key, name))

    def clear_compiled(self) -> int:
        """Drop every compiled function; returns how many."""
        count = len(self._cache)
        self._cache.clear()
        return count

    # -- inputs ------------------------------------------------------------------------------------
    def inputs(self, request: SimulationRequest) -> dict[str, Any]:
        """Backend arrays of one dtype: prices, chunk prices, per-minute rates, starts, w_init, params."""
        return {"params": self.param_inputs(request.strategy.params, request.strategy.n_sets, request.dtype),
                **self.data_inputs(request)}

    def param_inputs(self, params: dict[str, Any], n_sets: int | None, dtype: str) -> dict[str, Any]:
        """Parameters as backend arrays with a leading set axis (added when ``n_sets`` is None)."""
        arrays = {k: np.asarray(v) for k, v in params.items()}
        if n_sets is None:
            arrays = {k: v[None] for k, v in arrays.items()}
        return {k: self.bk.asarray(v, dtype) for k, v in arrays.items()}

    def data_inputs(self, request: SimulationRequest) -> dict[str, Any]:
        """The request's data as backend arrays: prices, chunk prices, per-minute rates, starts, w_init."""
        bk, dt = self.bk, request.dtype
        strategy = request.strategy
        return {
            "prices": bk.asarray(request.prices, dt),
            "chunk_prices": bk.asarray(request.prices[:: request.pool.chunk_period], dt),
            "fee": bk.asarray(request.fee, dt),
            "gas": bk.asarray(request.gas, dt),
            "arb_fee": bk.asarray(request.arb_fee, dt),
            "starts": bk.asarray(request.starts, "int64" if dt == "float64" else "int32"),
            "w_init": bk.asarray(strategy.initial_weights, dt),
        }

    # -- compiled functions --------------------------------------------------------------------------
    def batched_simulator(self, cfg: BoutConfig) -> Callable:
        """f(params (sets, n), prices, chunk_prices, fee, gas, arb_fee, starts, w_init) -> dict of
        arrays with leading axes (sets, starts). Not compiled (compose it inside jitted functions)."""
        bk = self.bk

        def per_set(params, prices, chunk_prices, fee, gas, arb_fee, starts, w_init):
            outputs = rule_outputs_for(chunk_prices, params, cfg, bk)

            def per_start(start):
                return simulate_bout(prices, fee, gas, arb_fee, outputs, start, params, w_init, cfg, bk)

            return bk.vmap(per_start)(starts)

        if cfg.rule_kind == "constant":
            def constant(params, *args):
                out = per_set(params, *args)
                return {k: v[None] for k, v in out.items()}
            return constant
        return bk.vmap(per_set, in_axes=(0, None, None, None, None, None, None, None))

    def _compiled(self, key: Any, build: Callable[[], Callable]) -> Callable:
        return self._cache.get(key, build)

    def simulate_fn(self, cfg: BoutConfig) -> Callable:
        return self._compiled(("simulate", cfg), lambda: self.bk.jit(self.batched_simulator(cfg)))

    def objective_per_set(self, cfg: BoutConfig, objective: str) -> Callable:
        """f(params, ...) -> (sets,) objective averaged over the starts (traceable, not compiled)."""
        bk = self.bk
        simulator = self.batched_simulator(cfg)

        def per_bout(values, reserves0, prices):
            return objective_fn(objective, values, reserves0, prices, bk)

        def f(params, prices, chunk_prices, fee, gas, arb_fee, starts, w_init):
            out = simulator(params, prices, chunk_prices, fee, gas, arb_fee, starts, w_init)
            r0 = out["reserves"][:, :, 0, :]
            obj = bk.vmap(bk.vmap(per_bout))(out["values"], r0, out["prices"])
            return bk.xp.mean(obj, axis=1)

        return f

    def value_and_grad_fn(self, cfg: BoutConfig, objective: str) -> Callable:
        """Compiled f(params, ...) -> ((sum over sets, per-set objective), grads)."""
        bk = self.bk

        def build():
            per_set = self.objective_per_set(cfg, objective)

            def total(params, *args):
                values = per_set(params, *args)
                return bk.xp.sum(values), values

            return bk.jit_value_and_grad(total, has_aux=True)

        return self._compiled(("value_and_grad", cfg, objective), build)

    # -- public entry points ---------------------------------------------------------------------------
    def simulate(self, request: SimulationRequest) -> Simulation:
        return self.simulator_for(request)(request.strategy.params)

    def simulator_for(self, request: SimulationRequest) -> Callable[[dict[str, Any]], Simulation]:
        """``params -> Simulation`` of ``request`` with its strategy's parameters replaced by ``params`` (same
        names; a leading set axis when the strategy has one). The prices and rates become backend arrays
        once, here, so repeated evaluations of one scenario (validation during training) transfer nothing."""
        cfg = bout_config(request)
        data = self.data_inputs(request)
        fn = self.simulate_fn(cfg)
        strategy = request.strategy

        def run(params: dict[str, Any]) -> Simulation:
            n_sets = None if strategy.n_sets is None else int(np.shape(next(iter(params.values())))[0])
            x = {"params": self.param_inputs(params, n_sets, request.dtype), **data}
            out = fn(x["params"], x["prices"], x["chunk_prices"], x["fee"], x["gas"], x["arb_fee"], x["starts"],
                     x["w_init"])
            same = params is strategy.params
            return self._simulation(request if same else dataclasses.replace(
                request, strategy=strategy.with_params(params)), out)

        return run

    def _simulation(self, request: SimulationRequest, out: dict[str, Any]) -> Simulation:
        """The :class:`Simulation` of ``request`` from the simulator's (sets, starts, ...) outputs."""
        keep_starts = request.batched_starts

        def squeeze(v):
            return keep_requested_axes(v, request)

        prices = out["prices"][0]
        rows = np.arange(request.n_out)
        timestamps = request.timestamps[request.starts[:, None] + rows[None, :]]
        return Simulation(
            reserves=squeeze(out["reserves"]), weights=squeeze(out["weights"]), values=squeeze(out["values"]),
            trades=squeeze(out["trades"]), fees=squeeze(out["fees"]),
            prices=prices if keep_starts else prices[0],
            timestamps=timestamps if keep_starts else timestamps[0],
            assets=request.assets, backend=self.bk.name, mode=request.mode, request=request,
        )

    def value_and_grad(self, request: SimulationRequest, objective: str) -> tuple[Any, dict[str, Any]]:
        cfg = bout_config(request)
        x = self.inputs(request)
        (_, per_set), grads = self.value_and_grad_fn(cfg, objective)(
            x["params"], x["prices"], x["chunk_prices"], x["fee"], x["gas"], x["arb_fee"], x["starts"], x["w_init"]
        )
        if request.strategy.n_sets is None:
            return per_set[0], {k: v[0] for k, v in grads.items()}
        return per_set, dict(grads)

    def metrics(self, sim: Simulation) -> dict[str, Any]:
        """Every objective, per bout (arrays with the simulation's leading axes when batched)."""
        bk = self.bk
        sim_np = sim.to_numpy()
        values = sim_np.values
        lead = values.shape[:-1]
        n = sim_np.reserves.shape[-1]
        t = values.shape[-1]
        flat_v = values.reshape(-1, t)
        flat_r0 = sim_np.reserves[..., 0, :].reshape(-1, n)
        flat_p = np.broadcast_to(sim_np.prices, lead + (t, n)).reshape(-1, t, n)  # prices shared by sets
        dt = "float32" if values.dtype == np.float32 else "float64"
        fn = self._compiled(("metrics", t, n, dt), lambda: bk.jit(bk.vmap(lambda v, r, p: all_objectives(v, r, p, bk))))
        out = fn(bk.asarray(flat_v, dt), bk.asarray(flat_r0, dt), bk.asarray(flat_p, dt))
        result = {}
        for name, arr in out.items():
            arr = np.asarray(arr).reshape(lead)
            result[name] = float(arr) if arr.ndim == 0 else arr
        return result


FEE_PATHS = ("auto", "kernel", "scan")
WEIGHT_PATHS = FEE_PATHS


def check_fee_path(fee_path: str, option: str = "fee_path") -> str:
    """Validate the ``fee_path`` (or ``weight_path``) backend option: "auto", "kernel" or "scan"."""
    if fee_path not in FEE_PATHS:
        raise ValueError(f"{option}={fee_path!r} is invalid: allowed one of {', '.join(map(repr, FEE_PATHS))}")
    return fee_path


class EngineBackend:
    """Mixin for array backends: simulate / value_and_grad_objective / metrics through one shared
    :class:`ArrayEngine` over the backend's own primitives, and the fee path as an overridable operation.

    ``fee_path``: "scan" runs :func:`tfmm.core.g3m.reserves_with_fees` (the core's per-minute scan); "kernel" the
    fused CPU kernel of :mod:`tfmm.backends.kernels.fee_path` through the backend's :meth:`fee_kernel`
    (a differentiable wrapper); "auto" (default) the backend's kernel for the device its arrays live on
    (the Numba kernel on the CPU; on a GPU the Pallas kernel on JAX, the Triton kernel on torch), else the scan.
    """

    fee_path: str = "auto"
    # how the estimators run their affine recurrences (tfmm.core.estimators): "sequential" (bk.scan) or
    # "associative" (bk.associative_scan)
    affine_scan_method: str = "sequential"

    def fee_kernel(self, settings: Any) -> Callable | None:
        """The backend's differentiable wrapper of the fused kernel for ``settings``, or None."""
        return None

    def uses_fee_kernel(self, prices: Any) -> bool:
        """Whether the fee path of ``prices``' simulation runs the fused kernel (backends refine "auto")."""
        return self.fee_path == "kernel"

    def reserves_with_fees(self, r0: Any, weights: Any, prices: Any, fee: Any, gas: Any, arb_fee: Any,
                           signatures: np.ndarray, *, smooth: bool, smoothing: Any,
                           checkpoint_every: int | None = None) -> tuple[Any, Any, Any]:
        """(reserves, trades, fees) of a pool with fees: the contract of :func:`tfmm.core.g3m.reserves_with_fees`."""
        if not self.uses_fee_kernel(prices):
            return g3m.reserves_with_fees(r0, weights, prices, fee, gas, arb_fee, signatures, smooth=smooth,
                                    smoothing=smoothing, bk=self, checkpoint_every=checkpoint_every)
        from tfmm.backends.kernels.fee_path import FeePathSettings

        xp = self.xp
        dt = prices.dtype
        n_rows = prices.shape[0]
        rates = [xp.broadcast_to(xp.asarray(x, dtype=dt), (n_rows,)) for x in (fee, gas, arb_fee)]
        kernel = self.fee_kernel(FeePathSettings.from_smoothing(signatures, smooth, smoothing))
        reserves, fees = kernel(xp.asarray(r0, dtype=dt), xp.asarray(weights, dtype=dt), prices, *rates)
        trades = reserves - xp.concat([reserves[:1, ...], reserves[:-1, ...]], axis=0)
        return reserves, trades, fees

    weight_path: str = "scan"

    def jit_value_and_grad(self, fn: Callable, has_aux: bool = False) -> Callable:
        """A compiled ``value_and_grad(fn)``: ``jit(value_and_grad(fn))`` (a backend whose compiler cannot
        trace its autodiff, torch's, differentiates the compiled function instead)."""
        return self.jit(self.value_and_grad(fn, has_aux=has_aux))

    def weight_kernel(self, settings: Any) -> Callable | None:
        """The backend's differentiable wrapper of the weight-path kernel for ``settings``, or None."""
        return None

    def uses_weight_kernel(self, outputs: Any) -> bool:
        """Whether the coarse weight recursion over ``outputs`` runs the kernel (backends refine "auto")."""
        return self.weight_path == "kernel"

    def coarse_weights(self, outputs: Any, w_init: Any, *, kind: str, alpha: Any, w_min: float, w_max: float,
                       max_change: float, interpolation_period: int, smooth: bool, temperature: float
                       ) -> tuple[Any, Any]:
        """(a, delta) of the coarse weight recursion: the contract of :func:`tfmm.core.weights.coarse_weights`,
        run by the core's scan or by the kernel of :mod:`tfmm.backends.kernels.weight_path`."""
        if outputs.shape[0] == 0 or not self.uses_weight_kernel(outputs):
            return weights_mod.coarse_weights(
                outputs, w_init, kind=kind, alpha=alpha, w_min=w_min, w_max=w_max, max_change=max_change,
                interpolation_period=interpolation_period, smooth=smooth, temperature=temperature, bk=self)
        from tfmm.backends.kernels.weight_path import WeightPathSettings

        xp = self.xp
        dt = outputs.dtype
        if kind == "weight":
            if alpha is None:
                raise ValueError("a weight rule needs alpha (n,): u = alpha a + (1 - alpha) r")
            alpha = xp.asarray(alpha, dtype=dt)
        else:
            alpha = xp.zeros_like(outputs[0])
        settings = WeightPathSettings(kind, w_min, w_max, max_change, interpolation_period, smooth, temperature)
        return self.weight_kernel(settings)(xp.asarray(w_init, dtype=dt), outputs, alpha)

    def forget_strategy(self, name: str) -> int:
        """Drop this backend's compiled functions of strategy ``name`` (none if nothing was compiled)."""
        engine = getattr(self, "_engine", None)
        return 0 if engine is None else engine.forget_strategy(name)

    def clear_compiled(self) -> int:
        """Drop every compiled function of this backend's engine; returns how many. Each holds its compiled
        code (on XLA:CPU about 110 memory mappings: Linux's default limit of 65,530 per process is reached near
        580 live functions), so a process that moves on to other configurations can free them at once."""
        engine = getattr(self, "_engine", None)
        return 0 if engine is None else engine.clear_compiled()

    @property
    def engine(self) -> ArrayEngine:
        if getattr(self, "_engine", None) is None:
            self._engine = ArrayEngine(self)
        return self._engine

    def simulate(self, request: SimulationRequest) -> Simulation:
        return self.engine.simulate(request)

    def simulator_for(self, request: SimulationRequest) -> Callable[[dict[str, Any]], Simulation]:
        return self.engine.simulator_for(request)

    def value_and_grad_objective(self, request: SimulationRequest, objective: str) -> tuple[Any, dict[str, Any]]:
        return self.engine.value_and_grad(request, objective)

    def metrics(self, sim: Simulation) -> dict[str, Any]:
        return self.engine.metrics(sim)

