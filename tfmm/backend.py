"""Backend registry and the current backend (a context variable).

Two contracts. :class:`Executor` is what the API calls: run a validated request (``simulate``,
``simulator_for``, ``value_and_grad_objective``, ``metrics``). :class:`ArrayOps` is what :mod:`tfmm.core` is
written against: an array namespace ``xp``, the primitives the Array API lacks (scans, ``where``,
``softmax``, ...), the transformations ``jit``, ``vmap``, ``value_and_grad``, and the pool's two time loops.
The array backends (jax, torch) are both (:class:`Backend`); the reference is an executor of its own
simulator. Backends are imported lazily: ``import tfmm`` imports neither jax nor torch.

``tfmm.use(name)`` sets the current backend and returns a context manager that restores the
previous one on exit, so both ``tfmm.use("jax")`` and ``with tfmm.use("reference"): ...`` work.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable


@runtime_checkable
class ArrayOps(Protocol):
    """The array operations :mod:`tfmm.core` is written against (what an array backend supplies).

    ``xp`` is an Array API namespace; the rest are the primitives the math calls that the Array API lacks
    (scans, masked selection, autodiff helpers) and the transformations (``jit``, ``vmap``,
    ``value_and_grad``). ``affine_scan_method`` ("sequential" or "associative") says how the estimators run
    their affine recurrences. ``reserves_with_fees`` and ``coarse_weights`` are the pool's two time loops,
    which a backend may run as fused kernels (their contracts: :func:`tfmm.core.g3m.reserves_with_fees`,
    :func:`tfmm.core.weights.coarse_weights`).
    """

    name: str
    xp: Any
    affine_scan_method: str

    def asarray(self, x: Any, dtype: str = "float64") -> Any: ...
    def to_numpy(self, x: Any) -> Any: ...
    def scan(self, step: Callable, carry: Any, xs: Any, checkpoint_every: int | None = None) -> tuple[Any, Any]: ...
    def associative_scan(self, fn: Callable, elems: Any, axis: int = 0) -> Any: ...
    def stop_gradient(self, x: Any) -> Any: ...
    def where(self, cond: Any, x: Any, y: Any) -> Any: ...
    def one_hot(self, index: Any, n: int, dtype: Any) -> Any: ...
    def softmax(self, x: Any, axis: int = -1) -> Any: ...
    def sigmoid(self, x: Any) -> Any: ...
    def logsumexp(self, x: Any, axis: int = -1) -> Any: ...
    def cumsum(self, x: Any, axis: int = 0) -> Any: ...
    def cummax(self, x: Any, axis: int = 0) -> Any: ...
    def argmax(self, x: Any, axis: int = -1) -> Any: ...
    def dynamic_slice(self, x: Any, start: Any, size: int, axis: int = 0) -> Any: ...
    def jit(self, fn: Callable, **kwargs: Any) -> Callable: ...
    def vmap(self, fn: Callable, in_axes: Any = 0) -> Callable: ...
    def value_and_grad(self, fn: Callable, has_aux: bool = False) -> Callable: ...
    def reserves_with_fees(self, r0: Any, weights: Any, prices: Any, fee: Any, gas: Any, arb_fee: Any,
                           signatures: Any, *, smooth: bool, smoothing: Any,
                           checkpoint_every: int | None = None) -> tuple[Any, Any, Any]: ...
    def coarse_weights(self, outputs: Any, w_init: Any, *, kind: str, alpha: Any, w_min: float, w_max: float,
                       max_change: float, interpolation_period: int, smooth: bool,
                       temperature: float) -> tuple[Any, Any]: ...


@runtime_checkable
class Executor(Protocol):
    """What the API calls on a backend: run a validated :class:`~tfmm.records.SimulationRequest`.

    ``simulate`` returns a :class:`~tfmm.records.Simulation`; ``simulator_for`` a function of the
    parameters for repeated runs of one scenario; ``value_and_grad_objective`` the objective (mean over the
    request's bouts) and its gradient with respect to the strategy's parameters; ``metrics`` every
    objective of a simulation. Backends that can train also have ``make_trainer(request, config)``.
    """

    name: str

    def simulate(self, request: Any) -> Any: ...
    def simulator_for(self, request: Any) -> Callable[[dict[str, Any]], Any]: ...
    def value_and_grad_objective(self, request: Any, objective: str) -> tuple[Any, dict[str, Any]]: ...
    def metrics(self, sim: Any) -> dict[str, Any]: ...


@runtime_checkable
class Backend(ArrayOps, Executor, Protocol):
    """An array backend (jax, torch): the core's array operations and the executor. The reference backend
    is an :class:`Executor` only: it runs its own independent simulator, not the core."""


@dataclass(frozen=True)
class _Entry:
    module: str  # module with a ``make_backend()`` factory
    requires: tuple[str, ...]  # importable top-level modules
    extra: str  # pip extra that installs them


_REGISTRY: dict[str, _Entry] = {
    "jax": _Entry("tfmm.backends.jax", ("jax", "optax"), "jax"),
    "torch": _Entry("tfmm.backends.torch", ("torch",), "torch"),
    "reference": _Entry("tfmm.reference", ("numba",), "all"),
}
_INSTANCES: dict[tuple, Any] = {}
_DEFAULT_ORDER = ("jax", "reference")
# the current backend: (name, options as a sorted tuple of (key, value)), or None for the default
_current: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("tfmm_backend", default=None)


def register_backend(name: str, module: str, requires: tuple[str, ...] = (), extra: str = "all") -> None:
    """Register a backend by name: ``module`` must define ``make_backend(**options)`` returning an
    :class:`Executor` (and an :class:`ArrayOps` for an array backend)."""
    _REGISTRY[name] = _Entry(module, tuple(requires), extra)
    _drop_instances(name)


def unregister_backend(name: str) -> None:
    """Remove backend ``name`` from the registry (and its instances); unknown names are ignored."""
    _REGISTRY.pop(name, None)
    _drop_instances(name)


def _drop_instances(name: str) -> None:
    for key in [k for k in _INSTANCES if k[0] == name]:
        del _INSTANCES[key]


def _missing_requirements(entry: _Entry) -> list[str]:
    return [m for m in entry.requires if importlib.util.find_spec(m) is None]


def available_backends() -> list[str]:
    """Names of the registered backends whose dependencies are importable."""
    return [name for name, entry in _REGISTRY.items() if not _missing_requirements(entry)]


def _options_key(options: dict[str, Any]) -> tuple:
    return tuple(sorted(options.items()))


def _load(name: str, options: tuple = ()) -> Any:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(sorted(_REGISTRY))}")
    key = (name, options)
    if key not in _INSTANCES:
        entry = _REGISTRY[name]
        missing = _missing_requirements(entry)
        if missing:
            raise ImportError(
                f"backend {name!r} needs {', '.join(missing)}: install it with pip install 'tfmm[{entry.extra}]'"
            )
        _INSTANCES[key] = importlib.import_module(entry.module).make_backend(**dict(options))
    return _INSTANCES[key]


class _UseContext:
    """Returned by :func:`use`; restores the previous backend when used as a context manager."""

    def __init__(self, token: contextvars.Token) -> None:
        self._token = token
        self.backend = _load(*_current.get())

    def __enter__(self) -> Any:
        return self.backend

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self._token)


def use(name: str, **options: Any) -> _UseContext:
    """Make ``name`` the current backend (loading it); usable as a context manager.

    ``options`` are passed to the backend's factory, e.g. ``tfmm.use("jax", fee_path="scan")``; each
    distinct set of options is its own backend instance (with its own cache of compiled functions).
    """
    key = _options_key(options)
    _load(name, key)
    return _UseContext(_current.set((name, key)))


def loaded_backends() -> list[Any]:
    """The backend instances made so far in this process (one per name and set of options)."""
    return list(_INSTANCES.values())


def default_backend_name() -> str:
    """The first of jax, reference whose dependencies are installed."""
    available = available_backends()
    for name in _DEFAULT_ORDER:
        if name in available:
            return name
    raise ImportError("no tfmm backend is installed: pip install 'tfmm[jax]'")


def get_backend(name: str | None = None, **options: Any) -> Any:
    """The backend called ``name`` (with ``options``, as in :func:`use`), or, with no name, the current
    backend (the default one, jax if installed, when none was chosen)."""
    if name is not None:
        return _load(name, _options_key(options))
    current = _current.get()
    return _load(*current) if current is not None else _load(default_backend_name())


__all__ = [
    "ArrayOps", "Executor", "Backend", "register_backend", "unregister_backend", "loaded_backends",
    "available_backends", "use", "get_backend", "default_backend_name",
]
