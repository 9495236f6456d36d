"""Pure functions of the strategy parameters, for use inside users' own JAX or torch code.

:func:`objective_fn` and :func:`simulate_fn` validate a scenario once (prices, strategy, pool, bout length,
mode) and return a function of ``(params, start)`` built from the current backend's primitives only: no
conversion to numpy, so it composes with the framework's transformations (JAX: ``jit``, ``grad``, ``vmap``,
optax; torch: autograd, ``torch.func``, ``torch.compile``).

``params`` maps each parameter name of ``strategy.params`` to an array of the backend with the same shape,
optionally with a leading parameter-set axis (then every result has that axis first). ``start`` is a row
index or a 1-D integer array of them (a batch of bouts of one length; the objective is their mean); it
may be traced. A concrete ``start`` is checked against the prices; a traced one cannot be, and a start
past ``T - length + 1`` is then clamped to the last valid start (``dynamic_slice`` semantics).
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

import numpy as np

from tfmm.api import Simulation, check_objective_length, make_request
from tfmm.backend import get_backend
from tfmm.engine import bout_config
from tfmm.specs import Pool, Smoothing, Strategy


def _concrete_starts(start: Any) -> np.ndarray | None:
    """The starts as a numpy array when they are concrete (Python, numpy, an eager tensor), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.compiler.is_compiling():  # a traced tensor: no value, and no graph break
        return None
    try:
        return np.atleast_1d(np.asarray(start))
    except Exception:  # a tracer (jit, grad, vmap, torch.compile) has no value yet
        return None


class _Scenario:
    """A validated scenario on one backend: static bout config and the backend arrays of its inputs."""

    def __init__(self, prices: Any, strategy: Strategy, pool: Pool, length: int, mode: str,
                 smoothing: Smoothing | None, dtype: str) -> None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
            raise TypeError(f"length must be an integer number of minutes, got {length!r}")
        self.request = make_request(prices, strategy, pool, 0, int(length), mode, smoothing, dtype)
        self.bk = get_backend()
        self.cfg = bout_config(self.request)
        self.inputs = self.bk.engine.inputs(self.request)
        self.strategy = strategy
        self.n_rows = self.request.n_rows
        self.length = int(length)

    def params_with_sets(self, params: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """(params with a leading set axis, whether the caller gave one); checks names and shapes."""
        expected = self.strategy.params
        if not isinstance(params, Mapping) or set(params) != set(expected):
            got = sorted(params) if isinstance(params, Mapping) else type(params).__name__
            raise ValueError(f"params must map exactly {sorted(expected)} to arrays; got {got}")
        base = {k: np.shape(v)[-1:] for k, v in expected.items()}  # (n,)
        sets = None
        for k, v in params.items():
            shape = tuple(v.shape)
            if shape[-1:] != base[k] or len(shape) not in (1, 2):
                raise ValueError(f"params[{k!r}] has shape {shape}: allowed {base[k]} or (sets,) + {base[k]}")
            sets = len(shape) == 2 if sets is None else sets
            if sets != (len(shape) == 2):
                raise ValueError("params must all have a parameter-set axis, or none of them")
        if sets:
            return dict(params), True
        return {k: v[None, ...] for k, v in params.items()}, False

    def starts(self, start: Any) -> Any:
        """A 1-D integer backend array of starts, checked when concrete."""
        xp = self.bk.xp
        concrete = _concrete_starts(start)
        if concrete is not None:
            if concrete.ndim != 1 or concrete.size == 0 or not np.issubdtype(concrete.dtype, np.integer):
                raise TypeError(f"start must be an integer row index or a 1-D array of them, got {start!r}")
            last = self.n_rows - self.length + 1
            if np.any(concrete < 0) or np.any(concrete > last):
                raise ValueError(f"start={concrete.tolist()} is invalid: allowed row indices in [0, {last}] for "
                                 f"length={self.length} and {self.n_rows} price rows")
        if hasattr(start, "shape") and not isinstance(start, np.ndarray):
            return xp.reshape(start, (-1,))
        return self.bk.asarray(np.atleast_1d(np.asarray(start)), "int64" if self.request.dtype == "float64"
                               else "int32")

    def args(self, starts: Any) -> tuple:
        x = self.inputs
        return (x["prices"], x["chunk_prices"], x["fee"], x["gas"], x["arb_fee"], starts, x["w_init"])


def objective_fn(prices: Any, strategy: Strategy, pool: Pool, *, length: int, objective: str = "daily_log_sharpe",
                 mode: str = "smooth", smoothing: Smoothing | None = None,
                 dtype: str = "float64") -> Callable[[Mapping[str, Any], Any], Any]:
    """``f(params, start)``: the objective of the bouts at ``start`` (mean over them), a backend scalar, or
    ``(sets,)`` when ``params`` carry a parameter-set axis.

    Args:
        prices: a ``tfmm.Prices`` or (T, N) array of USD prices, one row per minute.
        strategy: gives the parameter names and shapes, the rule and the initial weights.
        pool: the pool (fee, gas, chunk period, ...).
        length: bout length B in minutes (each bout has B - 1 rows).
        objective, mode, smoothing, dtype: as in :func:`tfmm.value_and_grad`.

    Returns:
        ``f(params, start)`` for the current backend, pure in ``params`` and ``start``.

    >>> import jax, tfmm
    >>> _ = tfmm.use("jax")
    >>> prices = tfmm.synthetic_prices(n_assets=2, n_minutes=4 * 1440, seed=0)
    >>> pool = tfmm.Pool(fee=0.003, chunk_period=60)
    >>> strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20,
    ...                                           chunk_period=60)
    >>> f = tfmm.objective_fn(prices, strategy, pool, length=3 * 1440)
    >>> params = {k: jax.numpy.asarray(v) for k, v in strategy.params.items()}
    >>> sorted(jax.jit(jax.grad(f))(params, 60))
    ['log_k', 'logit_lambda']
    """
    if not strategy.is_trainable:
        raise ValueError(f"strategy {strategy.name!r} has no trainable parameters")
    scenario = _Scenario(prices, strategy, pool, length, mode, smoothing, dtype)
    check_objective_length(objective, scenario.length)
    per_set = scenario.bk.engine.objective_per_set(scenario.cfg, objective)

    def f(params: Mapping[str, Any], start: Any) -> Any:
        with_sets, batched = scenario.params_with_sets(params)
        values = per_set(with_sets, *scenario.args(scenario.starts(start)))
        return values if batched else values[0]

    return f


def simulate_fn(prices: Any, strategy: Strategy, pool: Pool, *, length: int, mode: str = "exact",
                smoothing: Smoothing | None = None, dtype: str = "float64") -> Callable[[Mapping[str, Any], Any],
                                                                                      Simulation]:
    """``f(params, start)``: a :class:`tfmm.Simulation` of backend arrays connected to the framework's
    autodiff, with leading axes (sets, starts) as far as ``params`` / ``start`` carry them. ``timestamps`` are
    filled when ``start`` is concrete (None under a transformation). Args as in :func:`objective_fn`."""
    scenario = _Scenario(prices, strategy, pool, length, mode, smoothing, dtype)
    simulator = scenario.bk.engine.batched_simulator(scenario.cfg)
    request = scenario.request

    def f(params: Mapping[str, Any], start: Any) -> Simulation:
        with_sets, batched = scenario.params_with_sets(params) if strategy.is_trainable else (
            {}, False)
        out = simulator(with_sets, *scenario.args(scenario.starts(start)))
        keep_starts = np.ndim(start) == 1 or (hasattr(start, "ndim") and start.ndim == 1)

        def squeeze(v):
            v = v if keep_starts else v[:, 0]
            return v if batched else v[0]

        concrete = _concrete_starts(start)
        timestamps = None
        if concrete is not None:
            rows = concrete[:, None] + np.arange(request.n_out)[None, :]
            timestamps = request.timestamps[rows] if keep_starts else request.timestamps[rows[0]]
        prices_used = out["prices"][0]
        return Simulation(
            reserves=squeeze(out["reserves"]), weights=squeeze(out["weights"]), values=squeeze(out["values"]),
            trades=squeeze(out["trades"]), fees=squeeze(out["fees"]),
            prices=prices_used if keep_starts else prices_used[0], timestamps=timestamps, assets=request.assets,
            backend=scenario.bk.name, mode=mode, request=request,
        )

    return f


__all__ = ["objective_fn", "simulate_fn"]
