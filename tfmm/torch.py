"""A TFMM pool as a layer of a PyTorch model: :class:`PoolModule`.

``import tfmm.torch`` imports torch (``import tfmm`` alone does not). The module holds the strategy's
parameters as an ``nn.ParameterDict`` and evaluates the pool with :func:`tfmm.objective_fn` /
:func:`tfmm.simulate_fn` built on the torch backend, so its results are tensors connected to autograd:

>>> import torch, tfmm, tfmm.torch
>>> prices = tfmm.synthetic_prices(n_assets=2, n_minutes=4 * 1440, seed=0)
>>> pool = tfmm.Pool(fee=0.003, chunk_period=60)
>>> strategy = tfmm.Strategy.from_memory_days("momentum", n_assets=2, memory_days=1, k_per_day=20,
...                                           chunk_period=60)
>>> module = tfmm.torch.PoolModule(strategy, pool)
>>> loss = -module(prices, torch.tensor([0, 60]), 3 * 1440)
>>> loss.backward()
>>> sorted(name for name, p in module.named_parameters() if p.grad is not None)
['params.log_k', 'params.logit_lambda']

Decisions:

- **Scenario cache.** Validating a scenario (prices, bout length, mode, dtype) and converting the prices to
  tensors happens once per scenario: built functions are kept in an LRU cache (8 entries) keyed by
  (kind, mode, ``id(prices)``, shape, length, dtype), and each entry holds a reference to its prices object,
  so the id cannot be reused by another object while the entry lives. A torch tensor's in-place version
  counter is checked too (an in-place change of the prices rebuilds the scenario); a numpy array changed
  in place is *not* noticed: pass a new array, or call :meth:`PoolModule.clear_cache`. Gradients do not
  flow to the prices (they are data: the scenario holds a copy).
- **dtype.** The simulation runs in the parameters' dtype: ``module.double()`` (the default, float64) or
  ``module.float()`` (float32; the fused fee kernel still computes in float64 and rounds its outputs
  once). Other dtypes raise ``TypeError``.
- **Devices.** The torch backend computes on the CPU. Parameters on another device (``module.to("cuda")``)
  are copied to the CPU for the simulation (a differentiable copy) and the results are moved back to the
  parameters' device, so gradients arrive on that device. Prices and starts may be on any device.
- **start.** An ``int`` (one bout) or a 1-D integer tensor / array / sequence (a batch of bouts of one
  length: the objective is their mean). Prefer a tensor for starts that change between calls under
  ``torch.compile`` (a Python int is specialised on, a new value recompiles).
- **Parameter sets.** A strategy whose parameters have a leading set axis ``(sets, n)`` gives parameters of
  that shape, and :meth:`forward` returns one objective per set, ``(sets,)``.
- **torch.func.** :meth:`forward` reads ``self.params``, so ``torch.func.functional_call`` replaces them
  (``torch.func.grad`` over a dict of parameters, ``vmap`` over starts).
- **torch.compile.** On a cache hit the Python path of :meth:`forward` (type checks, the cache lookup by
  ``id``) is traceable by dynamo without a graph break; a cache miss builds the scenario in a function
  marked ``torch.compiler.disable`` (a graph break: call the module once eagerly, or :meth:`prepare`, before
  a ``fullgraph=True`` compile). Whether the simulation itself traces depends on :mod:`tfmm.core` and the
  backend (see tests/test_pool_module.py for what holds today).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import tfmm
from tfmm.records import Simulation
from tfmm.data import Prices
from tfmm.specs import MODES, OBJECTIVES, Pool, Smoothing, Strategy

_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32"}
_CACHE_SIZE = 8


def _check_length(length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
        raise TypeError(f"length must be an integer number of minutes, got {type(length).__name__} {length!r}")
    return int(length)


def _host_prices(prices: Any) -> Any:
    """What :func:`tfmm.objective_fn` accepts: a Prices, a numpy (T, N) array or a DataFrame."""
    if isinstance(prices, Prices):
        return prices
    if isinstance(prices, torch.Tensor):
        if prices.ndim != 2:
            raise ValueError(f"prices must be a (T, N) tensor of USD prices, got shape {tuple(prices.shape)}")
        if prices.is_complex() or prices.dtype == torch.bool:
            raise TypeError(f"prices must be a real tensor, got dtype {prices.dtype}")
        return prices.detach().cpu().to(torch.float64).numpy()
    if isinstance(prices, np.ndarray):
        if prices.ndim != 2:
            raise ValueError(f"prices must be a (T, N) array of USD prices, got shape {prices.shape}")
        return prices
    if type(prices).__name__ == "DataFrame":  # pandas, validated by tfmm.data.as_prices
        return prices
    raise TypeError(f"prices must be a tfmm.Prices, a (T, N) torch tensor or numpy array, or a pandas DataFrame; "
                    f"got {type(prices).__name__}")


def _shape_of(prices: Any) -> tuple:
    if isinstance(prices, Prices):
        return (prices.n_rows, prices.n_assets)
    shape = getattr(prices, "shape", None)
    return tuple(shape) if shape is not None else None


class PoolModule(nn.Module):
    """A TFMM pool whose strategy parameters are ``nn.Parameter``\\ s.

    Args:
        strategy: a trainable :class:`tfmm.Strategy` (its parameters initialise :attr:`params`; its name,
            initial weights, beta, memory cap and chunk period are kept).
        pool: the :class:`tfmm.Pool`.
        objective: the objective :meth:`forward` returns (one of ``tfmm.specs.OBJECTIVES``; larger is
            better, e.g. minimise ``-module(...)``).
        mode: "smooth" (default, for training) or "exact"; :meth:`simulate` takes its own ``mode=``.
        smoothing: smooth-mode temperatures (default ``tfmm.Smoothing()``).

    Attributes:
        params: ``nn.ParameterDict`` name -> float64 parameter of ``strategy.params``' shape.
    """

    def __init__(self, strategy: Strategy, pool: Pool, *, objective: str = "daily_log_sharpe",
                 mode: str = "smooth", smoothing: Smoothing | None = None) -> None:
        super().__init__()
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a tfmm.Strategy, got {type(strategy).__name__}")
        if not isinstance(pool, Pool):
            raise TypeError(f"pool must be a tfmm.Pool, got {type(pool).__name__}")
        if not strategy.is_trainable:
            raise ValueError(f"strategy {strategy.name!r} has no trainable parameters: a PoolModule needs some")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r} is invalid: allowed one of {', '.join(OBJECTIVES)}")
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid: allowed one of {', '.join(map(repr, MODES))}")
        if smoothing is not None and not isinstance(smoothing, Smoothing):
            raise TypeError(f"smoothing must be a tfmm.Smoothing or None, got {type(smoothing).__name__}")
        if strategy.chunk_period is not None and strategy.chunk_period != pool.chunk_period:
            raise ValueError(f"the strategy's parameters were converted for chunk_period={strategy.chunk_period} "
                             f"but pool.chunk_period={pool.chunk_period}; build the strategy with "
                             f"Strategy.from_memory_days(..., pool=pool)")
        self.strategy = strategy
        self.pool = pool
        self.objective = objective
        self.mode = mode
        self.smoothing = smoothing
        self.params = nn.ParameterDict({
            name: nn.Parameter(torch.tensor(np.asarray(value, dtype=np.float64), dtype=torch.float64))
            for name, value in strategy.params.items()
        })
        self._scenarios: OrderedDict[tuple, tuple[Any, int | None, Callable]] = OrderedDict()

    # -- scenario cache ----------------------------------------------------------------------------------
    def _dtype(self) -> torch.dtype:
        dtypes = {p.dtype for p in self.params.values()}
        if len(dtypes) != 1 or next(iter(dtypes)) not in _DTYPE_NAMES:
            raise TypeError(f"PoolModule parameters must all be float64 or all float32 (module.double() / "
                            f"module.float()), got {sorted(str(d) for d in dtypes)}")
        return next(iter(dtypes))

    def _function(self, kind: str, prices: Any, length: int, mode: str) -> Callable:
        """The scenario's pure function ``f(params, start)``, from the cache or built (cache miss)."""
        dtype = _DTYPE_NAMES[self._dtype()]
        key = (kind, mode, id(prices), _shape_of(prices), length, dtype)
        entry = self._scenarios.get(key)
        if entry is not None and entry[0] is prices:
            if torch.compiler.is_compiling():
                return entry[2]
            if entry[1] is None or entry[1] == prices._version:
                self._scenarios.move_to_end(key)
                return entry[2]
        return self._build(kind, prices, length, mode, dtype, key)

    @torch.compiler.disable
    def _build(self, kind: str, prices: Any, length: int, mode: str, dtype: str, key: tuple) -> Callable:
        host = _host_prices(prices)
        with tfmm.use("torch"):
            if kind == "objective":
                fn = tfmm.objective_fn(host, self.strategy, self.pool, length=length, objective=self.objective,
                                       mode=mode, smoothing=self.smoothing, dtype=dtype)
            else:
                fn = tfmm.simulate_fn(host, self.strategy, self.pool, length=length, mode=mode,
                                      smoothing=self.smoothing, dtype=dtype)
        version = prices._version if isinstance(prices, torch.Tensor) else None
        self._scenarios[key] = (prices, version, fn)
        self._scenarios.move_to_end(key)
        while len(self._scenarios) > _CACHE_SIZE:
            self._scenarios.popitem(last=False)
        return fn

    def prepare(self, prices: Any, length: int, *, simulate_mode: str | None = None) -> "PoolModule":
        """Validate and cache the scenario of ``prices`` and ``length`` now (for :meth:`forward`, and for
        :meth:`simulate` with ``simulate_mode``), e.g. before ``torch.compile(..., fullgraph=True)``."""
        length = _check_length(length)
        self._function("objective", prices, length, self.mode)
        if simulate_mode is not None:
            self._check_mode(simulate_mode)
            self._function("simulate", prices, length, simulate_mode)
        return self

    def clear_cache(self) -> None:
        """Forget every cached scenario (e.g. after changing a numpy prices array in place)."""
        self._scenarios.clear()

    # -- inputs ------------------------------------------------------------------------------------------
    @staticmethod
    def _check_mode(mode: Any) -> str:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid: allowed one of {', '.join(map(repr, MODES))}")
        return mode

    @staticmethod
    def _start(start: Any) -> Any:
        """``start`` as the pure functions take it: a Python int, or a CPU integer tensor of rank 0 or 1."""
        if isinstance(start, torch.Tensor):
            if start.is_floating_point() or start.is_complex() or start.dtype == torch.bool:
                raise TypeError(f"start must be an integer tensor, got dtype {start.dtype}")
            if start.ndim > 1:
                raise ValueError(f"start must be an int or a 1-D tensor of row indices, got shape "
                                 f"{tuple(start.shape)}")
            return start.cpu() if start.device.type != "cpu" else start
        if isinstance(start, bool):
            raise TypeError("start must be an integer row index or a 1-D integer tensor, got a bool")
        if isinstance(start, (int, np.integer)):
            return int(start)
        if isinstance(start, (np.ndarray, list, tuple)):
            arr = np.asarray(start)
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
                raise TypeError(f"start must be an integer row index or a 1-D integer array, got {start!r}")
            return arr.astype(np.int64)
        raise TypeError(f"start must be an int or a 1-D integer tensor, got {type(start).__name__} {start!r}")

    def _compute_params(self) -> tuple[dict[str, torch.Tensor], torch.device]:
        """The parameters as CPU tensors (differentiable copies when they live elsewhere) and their device."""
        params = dict(self.params.items())
        device = next(iter(params.values())).device
        if device.type != "cpu":
            params = {k: v.cpu() for k, v in params.items()}
        return params, device

    # -- public ------------------------------------------------------------------------------------------
    def forward(self, prices: Any, start: Any, length: int) -> torch.Tensor:
        """The objective of the bouts at ``start`` (mean over them), connected to autograd.

        Args:
            prices: a ``tfmm.Prices``, a (T, N) tensor or array of USD prices (rows are minutes), or a
                DataFrame; cached by identity (see the module docstring).
            start: an int or a 1-D integer tensor of bout starts (row indices).
            length: the bout length in minutes.

        Returns:
            A 0-d tensor (or ``(sets,)`` for a strategy with parameter sets) in the parameters' dtype and on
            their device.
        """
        length = _check_length(length)
        start = self._start(start)
        fn = self._function("objective", prices, length, self.mode)
        params, device = self._compute_params()
        value = fn(params, start)
        return value if device.type == "cpu" else value.to(device)

    def simulate(self, prices: Any, start: Any, length: int, *, mode: str | None = None) -> Simulation:
        """A :class:`tfmm.Simulation` of tensors connected to autograd (``mode`` defaults to the module's).

        Leading axes as in :func:`tfmm.simulate_fn`: (sets,) when the parameters have a set axis, then
        (starts,) when ``start`` is 1-D. ``timestamps`` are numpy (None under a transformation); arrays are on
        the parameters' device. For :func:`tfmm.metrics`, simulate under ``torch.no_grad()`` (the metrics read
        the arrays as numpy, which a tensor that requires grad refuses).
        """
        length = _check_length(length)
        mode = self.mode if mode is None else self._check_mode(mode)
        start = self._start(start)
        fn = self._function("simulate", prices, length, mode)
        params, device = self._compute_params()
        sim = fn(params, start)
        if device.type == "cpu":
            return sim
        moved = {f: getattr(sim, f).to(device) for f in ("reserves", "weights", "values", "trades", "fees", "prices")}
        return dataclasses.replace(sim, **moved)

    def to_strategy(self) -> Strategy:
        """A :class:`tfmm.Strategy` with the current parameter values (float64 numpy) and everything else of
        the strategy the module was built from (name, initial weights, beta, memory cap, chunk period).
        Raises ``ValueError`` if training took a parameter out of its valid range."""
        values = {k: v.detach().cpu().to(torch.float64).numpy().copy() for k, v in self.params.items()}
        return self.strategy.with_params(values)

    def load_strategy(self, strategy: Strategy) -> None:
        """Copy ``strategy``'s parameter values into :attr:`params` (same names and shapes), in place."""
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a tfmm.Strategy, got {type(strategy).__name__}")
        if set(strategy.params) != set(self.params.keys()):
            raise ValueError(f"strategy params {sorted(strategy.params)} do not match the module's "
                             f"{sorted(self.params.keys())}")
        with torch.no_grad():
            for k, p in self.params.items():
                value = torch.tensor(np.array(strategy.params[k], dtype=np.float64), dtype=p.dtype, device=p.device)
                if value.shape != p.shape:
                    raise ValueError(f"strategy params[{k!r}] has shape {tuple(value.shape)}, the module's "
                                     f"{tuple(p.shape)}")
                p.copy_(value)

    def extra_repr(self) -> str:
        return (f"strategy={self.strategy.name!r}, n_assets={self.strategy.n_assets}, objective={self.objective!r}, "
                f"mode={self.mode!r}, fee={self.pool.fee!r}, chunk_period={self.pool.chunk_period}")

    def __getstate__(self) -> dict:
        """Pickling (``torch.save(module)``, ``copy.deepcopy``) drops the scenario cache (it holds closures)."""
        state = self.__dict__.copy()
        state["_scenarios"] = OrderedDict()
        return state


__all__ = ["PoolModule"]
