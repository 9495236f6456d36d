"""The strategy registry: one frozen :class:`StrategyRecord` per strategy name, built-in or user-defined.

A record says what the core needs to run a strategy (its rule, its kind, its parameter names) and what
the specs need to validate and initialise it (which parameters are EWMA decay logits, which is the
momentum scale ``log_k``, which go through squareplus, defaults for ``Strategy.from_memory_days``).
The built-ins register in :mod:`tfmm.core.strategies`; users register through ``tfmm.register_strategy``.

A rule has the signature ``rule(chunk_prices, params, *, chunk_period, beta, max_memory_days, bk)``:
chunk prices (M, n) and parameters name -> (n,) arrays in, (M - 1, n) outputs out, output ``r_m`` using
chunk prices ``0..m+1`` only; written against ``bk.xp`` (Array API) and ``bk``'s primitives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping as MappingABC, Sequence as SequenceABC
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

KINDS = ("delta", "weight", "constant")
# weight rules mix u = alpha a + (1 - alpha) r with alpha = sigmoid(params[MIXING_PARAMETER])
MIXING_PARAMETER = "logit_lambda_2"


def _names(field_name: str, value: Any) -> tuple[str, ...]:
    """A tuple of distinct identifiers, or ValueError naming ``field_name``."""
    if isinstance(value, str) or not isinstance(value, (SequenceABC, set, frozenset)):
        raise ValueError(f"{field_name}={value!r} is invalid: allowed a sequence of parameter names "
                         f"(e.g. ('log_k', 'logit_lambda')), not {type(value).__name__}")
    names = tuple(value)
    bad = [p for p in names if not isinstance(p, str) or not p.isidentifier()]
    if bad:
        raise ValueError(f"{field_name}={list(names)!r} is invalid: {bad[0]!r} is not a name; allowed "
                         f"identifiers (letters, digits, underscores, not starting with a digit)")
    if len(set(names)) != len(names):
        dup = next(p for p in names if names.count(p) > 1)
        raise ValueError(f"{field_name}={list(names)!r} is invalid: {dup!r} appears twice; allowed distinct names")
    return names


def _subset(field_name: str, names: tuple[str, ...], parameters: tuple[str, ...]) -> None:
    unknown = [p for p in names if p not in parameters]
    if unknown:
        raise ValueError(f"{field_name}={list(names)!r} is invalid: {unknown[0]!r} is not a parameter; "
                         f"allowed names among parameters={list(parameters)!r}")


@dataclass(frozen=True, eq=False)
class StrategyRecord:
    """What is known about one strategy.

    name: the name ``tfmm.Strategy(name, ...)`` and TOML files use; parameters: the trainable per-asset
    parameters, in order; kind: "delta" (zero-sum weight changes), "weight" (target weights, mixed with
    alpha = sigmoid(logit_lambda_2)) or "constant" (no rule: balancer, hodl); rule: the rule (None for
    "constant"); decay_parameters: logits whose sigmoid is an EWMA decay per chunk, capped at
    lambda(max_memory_days) and checked to be in (0, 1); scale_parameter: ``log_k`` of ``k = 2^log_k
    m(lambda)``, checked against the largest scale the specs accept; squareplus_parameters: parameters
    entering as sp(x) = (x + sqrt(x^2 + 4)) / 2, checked finite; defaults: name -> float, initial values
    for ``Strategy.from_memory_days``; builtin: shipped with tfmm (never replaced); doc: one line.
    """

    name: str
    parameters: tuple[str, ...]
    kind: str
    rule: Callable[..., Any] | None
    decay_parameters: tuple[str, ...] = ()
    scale_parameter: str | None = None
    squareplus_parameters: tuple[str, ...] = ()
    defaults: Mapping[str, float] = field(default_factory=dict)
    builtin: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"name={self.name!r} is invalid: allowed a non-empty identifier (letters, digits, "
                             f"underscores, not starting with a digit)")
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is invalid: allowed one of {', '.join(map(repr, KINDS))}")
        parameters = _names("parameters", self.parameters)
        object.__setattr__(self, "parameters", parameters)
        if self.kind == "constant":
            if self.rule is not None:
                raise TypeError(f"rule must be None for a constant strategy, got {type(self.rule).__name__}")
            if parameters:
                raise ValueError(f"parameters={list(parameters)!r} is invalid: a constant strategy has none")
        else:
            if not callable(self.rule):
                raise TypeError(f"rule must be callable (chunk_prices, params, *, chunk_period, beta, "
                                f"max_memory_days, bk) -> outputs, got {type(self.rule).__name__} {self.rule!r}")
            if not parameters:
                raise ValueError(f"parameters=[] is invalid: a {self.kind} rule needs at least one parameter")
        if self.kind == "weight" and MIXING_PARAMETER not in parameters:
            raise ValueError(f"parameters={list(parameters)!r} is invalid for a weight rule: allowed parameters "
                             f"including {MIXING_PARAMETER!r} (the mixing alpha = sigmoid({MIXING_PARAMETER}))")
        decays = _names("decay_parameters", self.decay_parameters)
        _subset("decay_parameters", decays, parameters)
        object.__setattr__(self, "decay_parameters", decays)
        squareplus = _names("squareplus_parameters", self.squareplus_parameters)
        _subset("squareplus_parameters", squareplus, parameters)
        object.__setattr__(self, "squareplus_parameters", squareplus)
        if self.scale_parameter is not None:
            _subset("scale_parameter", (self.scale_parameter,), parameters)
        object.__setattr__(self, "defaults", MappingProxyType(_defaults(self.defaults, parameters)))


def _defaults(values: Any, parameters: tuple[str, ...]) -> dict[str, float]:
    """name -> finite float, names among ``parameters``."""
    if not isinstance(values, MappingABC):
        raise TypeError(f"defaults must be a mapping of parameter name -> number, got {type(values).__name__}")
    _subset("defaults", tuple(values), parameters)
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
            raise TypeError(f"defaults[{key!r}] must be a number, got {type(value).__name__} {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"defaults[{key!r}]={number!r} is invalid: allowed a finite number")
        out[key] = number
    return out


_REGISTRY: dict[str, StrategyRecord] = {}


def register(record: StrategyRecord, *, overwrite: bool = False) -> StrategyRecord:
    """Add ``record`` under ``record.name``. A built-in is never replaced; another registered name is
    replaced only with ``overwrite=True``."""
    if not isinstance(record, StrategyRecord):
        raise TypeError(f"record must be a StrategyRecord, got {type(record).__name__}")
    old = _REGISTRY.get(record.name)
    if old is not None:
        if old.builtin:
            raise ValueError(f"strategy {record.name!r} is built in and cannot be replaced; register the rule "
                             f"under another name")
        if not overwrite:
            raise ValueError(f"strategy {record.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[record.name] = record
    return record


def unregister(name: str) -> StrategyRecord:
    """Remove a user strategy (a built-in cannot be removed); returns its record."""
    record = lookup(name)
    if record.builtin:
        raise ValueError(f"strategy {name!r} is built in and cannot be unregistered")
    return _REGISTRY.pop(name)


def is_registered(name: Any) -> bool:
    return isinstance(name, str) and name in _REGISTRY


def names() -> tuple[str, ...]:
    """Registered names: the built-ins first, then user strategies in registration order."""
    return tuple(_REGISTRY)


def names_of_kind(kind: str) -> tuple[str, ...]:
    return tuple(name for name, record in _REGISTRY.items() if record.kind == kind)


def unknown_strategy(name: Any) -> ValueError:
    """The error for a name nobody registered: the allowed names and how to add one."""
    return ValueError(
        f"name={name!r} is invalid: allowed one of {', '.join(map(repr, _REGISTRY))} (a user strategy must be "
        f"registered with tfmm.register_strategy(name, parameters, rule) in this process before it is used or "
        f"loaded)"
    )


def lookup(name: Any) -> StrategyRecord:
    """The record of ``name``; ValueError naming the registered strategies otherwise."""
    if not is_registered(name):
        raise unknown_strategy(name)
    return _REGISTRY[name]


class LiveMapping(MappingABC):
    """A read-only mapping recomputed from the registry on every access (so it shows user strategies)."""

    def __init__(self, build: Callable[[], Mapping[str, Any]]) -> None:
        self._build = build

    def __getitem__(self, key: str) -> Any:
        return self._build()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._build()))

    def __len__(self) -> int:
        return len(self._build())

    def __repr__(self) -> str:
        return repr(dict(self._build()))


class LiveNames(SequenceABC):
    """A read-only tuple of names recomputed from the registry on every access; compares equal to tuples."""

    def __init__(self, build: Callable[[], tuple[str, ...]]) -> None:
        self._build = build

    def __getitem__(self, index: Any) -> Any:
        return self._build()[index]

    def __len__(self) -> int:
        return len(self._build())

    def __contains__(self, name: object) -> bool:
        return name in self._build()

    def __iter__(self) -> Iterator[str]:
        return iter(self._build())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list, LiveNames)):
            return self._build() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __add__(self, other: Any) -> tuple[str, ...]:
        return self._build() + tuple(other)

    def __radd__(self, other: Any) -> tuple[str, ...]:
        return tuple(other) + self._build()

    def __repr__(self) -> str:
        return repr(self._build())


def parameters_by_name() -> dict[str, tuple[str, ...]]:
    return {name: record.parameters for name, record in _REGISTRY.items()}


def rules_by_name() -> dict[str, Callable[..., Any]]:
    return {name: record.rule for name, record in _REGISTRY.items() if record.rule is not None}


__all__ = [
    "KINDS", "MIXING_PARAMETER", "StrategyRecord", "register", "unregister", "is_registered", "names",
    "names_of_kind", "lookup", "unknown_strategy", "LiveMapping", "LiveNames", "parameters_by_name",
    "rules_by_name",
]
