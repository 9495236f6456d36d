"""Backend registry and the current backend (a context variable).

A backend supplies machinery, not math: an array namespace ``xp`` and the primitives that
:mod:`tfmm.core` is written against (``scan``, ``associative_scan``, ``stop_gradient``, ``where``,
``one_hot``, ``softmax``, ``sigmoid``, ``logsumexp``), plus ``jit``, ``vmap``, ``value_and_grad`` and
conversion from/to numpy. Backends are imported lazily: ``import tfmm`` imports neither jax nor torch.

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
class Backend(Protocol):
    """What a backend provides: an Array API namespace, the primitives the core uses, transformations."""

    name: str
    xp: Any  # Array API namespace

    def asarray(self, x: Any, dtype: str = "float64") -> Any: ...
    def to_numpy(self, x: Any) -> Any: ...
    def scan(self, step: Callable, carry: Any, xs: Any) -> tuple[Any, Any]: ...
    def associative_scan(self, fn: Callable, elems: Any, axis: int = 0) -> Any: ...
    def stop_gradient(self, x: Any) -> Any: ...
    def where(self, cond: Any, x: Any, y: Any) -> Any: ...
    def one_hot(self, index: Any, n: int, dtype: Any) -> Any: ...
    def softmax(self, x: Any, axis: int = -1) -> Any: ...
    def sigmoid(self, x: Any) -> Any: ...
    def logsumexp(self, x: Any, axis: int = -1) -> Any: ...
    def cummax(self, x: Any, axis: int = 0) -> Any: ...
    def jit(self, fn: Callable, **kwargs: Any) -> Callable: ...
    def vmap(self, fn: Callable, in_axes: Any = 0) -> Callable: ...
    def value_and_grad(self, fn: Callable, has_aux: bool = False) -> Callable: ...


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
    """Register a backend by name: ``module`` must define ``make_backend() -> Backend``."""
    _REGISTRY[name] = _Entry(module, tuple(requires), extra)
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


__all__ = ["Backend", "register_backend", "available_backends", "use", "get_backend", "default_backend_name"]
