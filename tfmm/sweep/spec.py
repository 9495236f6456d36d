"""The sweep file: ``[sweep]`` settings and the ``[space]`` of parameters, parsed and validated without Ray.

A sweep file names a base run file (the TOML of ``tfmm train``; without ``base``, the run tables ``[data]``,
``[run]``, ``[pool]``, ``[strategy]``, ``[train]`` of the sweep file itself) and the parameters to vary::

    [sweep]
    base = "run.toml"          # relative to the sweep file
    searcher = "random"        # "grid" | "random" | "tpe" (Optuna's TPE)
    trials = 16

    [space.strategy]
    memory_days = { kind = "log-uniform", low = 1, high = 30 }
    [space.pool]
    chunk_period = { kind = "choice", values = [60, 240, 1440] }

Every error names the file, the table and the field, and the allowed values, before anything runs.
A trial is the base run with the sampled values set (:func:`trial_specs`); ``strategy`` also takes the human
units of :meth:`tfmm.Strategy.from_memory_days` (``memory_days``, ``memory_days_2``, ``k_per_day``,
``exponent``), and a swept ``[pool] chunk_period`` keeps the strategy's memories in days.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from tfmm.core.memory import memory_days_from_lambda
from tfmm.specs import OBJECTIVES, Pool, Smoothing, Strategy, TrainConfig, check_keys

KINDS = ("grid", "choice", "uniform", "log-uniform")
SEARCHERS = ("grid", "random", "tpe")
SCHEDULERS = ("fifo", "asha")
SECTIONS = ("pool", "strategy", "train")
SWEEP_KEYS = ("base", "searcher", "trials", "concurrency", "metric", "scheduler", "grace_period",
              "reduction_factor", "seed", "cpus_per_trial", "gpus_per_trial")
DEFAULT_TRIALS = 8

# human units of Strategy.from_memory_days -> the parameter each one sets
HUMAN_UNITS = {"memory_days": "logit_lambda", "memory_days_2": "logit_lambda_2", "k_per_day": "log_k",
               "exponent": "raw_exponent"}
STRATEGY_FIELDS = ("name", "initial_weights", "beta", "max_memory_days", *HUMAN_UNITS)


def _field_types(cls: type) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls) if f.init}


def _is_integer_type(annotation: str) -> bool:
    return annotation.replace(" ", "") in ("int", "int|None")


# sweepable leaves: "section.field" (and "train.smoothing.field", "strategy.params.NAME") -> integer field?
_POOL_TYPES = _field_types(Pool)
_TRAIN_TYPES = {k: v for k, v in _field_types(TrainConfig).items() if k != "smoothing"}
_SMOOTHING_TYPES = _field_types(Smoothing)


@dataclass(frozen=True)
class Parameter:
    """One swept field: ``name`` is its dotted path (``pool.chunk_period``, ``train.smoothing.gate_temperature``,
    ``strategy.params.log_k``); ``kind`` one of :data:`KINDS`; ``values`` for grid/choice, ``low``/``high``
    for uniform/log-uniform (integer fields: both ends included; real fields: [low, high))."""

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    integer: bool = False

    @property
    def encoded(self) -> bool:
        """True when grid/choice values are not plain scalars (lists): searchers then see their index."""
        return self.kind in ("grid", "choice") and not all(
            isinstance(v, (str, int, float, bool)) for v in self.values)

    def decode(self, value: Any) -> Any:
        """The field's value from what the searcher sampled (an index for encoded choices), as plain Python."""
        if self.encoded:
            return self.values[int(value)]
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            value = value.item()
        if self.integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        return value


@dataclass(frozen=True)
class BaseRun:
    """The base run file, parsed as ``tfmm train`` parses it: prices, specs, backend, and its raw tables."""

    path: Path
    prices: Any
    pool: Pool
    strategy: Strategy
    train: TrainConfig
    backend: str | None
    document: dict[str, Any]


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep file. ``trials`` is the total number of trials (grid: grid size x repeats);
    ``concurrency`` None: as many at once as the CPUs/GPUs allow; ``metric``: the exact-mode validation
    objective that ranks trials (maximised)."""

    path: Path
    base: BaseRun
    parameters: tuple[Parameter, ...]
    searcher: str = "random"
    trials: int = DEFAULT_TRIALS
    concurrency: int | None = None
    metric: str = "daily_log_sharpe"
    scheduler: str = "fifo"
    grace_period: int = 1
    reduction_factor: float = 3.0
    seed: int = 0
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    document: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def grid_size(self) -> int:
        """Product of the grid parameters' sizes (1 without any)."""
        return math.prod(len(p.values) for p in self.parameters if p.kind == "grid")

    @property
    def max_steps(self) -> int:
        """The most training steps a trial can take (the time axis of ASHA)."""
        return _max_steps(self.base, self.parameters)


# --- parsing --------------------------------------------------------------------------------------------

def _fail(where: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{where}={value!r} is invalid: allowed {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_setting(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, value, f"an integer >= {minimum}")
    return value


def _choice_setting(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        close = difflib.get_close_matches(str(value), list(allowed), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _fail(where, value, "one of " + ", ".join(repr(a) for a in allowed) + hint)
    return value


def _parameter(where: str, name: str, spec: Any, integer: bool) -> Parameter:
    """One ``field = { kind = ..., ... }`` entry of ``[space.*]``."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be a table like {{ kind = \"choice\", values = [...] }} or "
                         f"{{ kind = \"uniform\", low = ..., high = ... }}, got {spec!r}")
    kind = _choice_setting(f"{where} kind", spec.get("kind"), KINDS)
    if kind in ("grid", "choice"):
        check_keys(where.strip("[]"), spec, ("kind", "values"))
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise _fail(f"{where} values", values, "a non-empty list of values")
        return Parameter(name, kind, values=tuple(values), integer=integer)
    check_keys(where.strip("[]"), spec, ("kind", "low", "high"))
    low, high = spec.get("low"), spec.get("high")
    for end, value in (("low", low), ("high", high)):
        if not _is_number(value):
            raise _fail(f"{where} {end}", value, "a finite number")
        if integer and not isinstance(value, int):
            raise _fail(f"{where} {end}", value, "an integer (the field is an integer)")
    if low >= high:
        raise _fail(f"{where} low", low, f"low < high (high={high!r})")
    if kind == "log-uniform" and low <= 0:
        raise _fail(f"{where} low", low, "low > 0 for kind 'log-uniform'")
    return Parameter(name, kind, low=low, high=high, integer=integer)


def _section_parameters(source: str, section: str, table: Any, base: BaseRun) -> list[Parameter]:
    """Parameters of ``[space.<section>]``, with the nested ``[space.train.smoothing]`` and
    ``[space.strategy.params]``."""
    where = f"{source}: [space.{section}]"
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of fields, got {table!r}")
    if section == "pool":
        leaves, nested = dict(_POOL_TYPES), {}
    elif section == "train":
        leaves, nested = dict(_TRAIN_TYPES), {"smoothing": _SMOOTHING_TYPES}
    else:
        if "chunk_period" in table:
            raise ValueError(f"{where} chunk_period cannot be swept on its own: sweep [space.pool] chunk_period "
                             f"(the strategy follows the pool, its memories kept in days)")
        leaves = {k: ("float" if k != "name" else "str") for k in STRATEGY_FIELDS}
        nested = {"params": {k: "float" for k in base.strategy.params}}
    check_keys(f"space.{section}", table, list(leaves) + list(nested), source=source)
    out = []
    for key, spec in table.items():
        if key in nested and not (isinstance(spec, dict) and "kind" in spec):
            if not isinstance(spec, dict) or not spec:
                raise ValueError(f"{where} {key} must be a table of its fields, got {spec!r}")
            check_keys(f"space.{section}.{key}", spec, list(nested[key]), source=source)
            for sub, sub_spec in spec.items():
                out.append(_parameter(f"{source}: [space.{section}.{key}] {sub}", f"{section}.{key}.{sub}",
                                      sub_spec, _is_integer_type(nested[key][sub])))
        elif key in nested:
            raise ValueError(f"{where} {key} is a table: sweep its fields ([space.{section}.{key}])")
        else:
            out.append(_parameter(f"{where} {key}", f"{section}.{key}", spec, _is_integer_type(leaves[key])))
    return out


def load_base(path: str | Path, document: dict[str, Any] | None = None) -> BaseRun:
    """The base run file, read and validated exactly as ``tfmm train`` reads it (prices loaded).

    document: the run tables when they are inline in the sweep file ``path`` (no ``base``); they are read
    through a temporary copy, and errors name ``path``.
    """
    from tfmm.cli import load_run  # the run-file grammar of `tfmm train`, one loader for both

    path = Path(path)
    if document is None:
        cfg = load_run(str(path))
        document = tomllib.loads(path.read_text())
    else:
        import tempfile

        import tomli_w

        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_text(tomli_w.dumps(document))
            try:
                cfg = load_run(str(copy))
            except (ValueError, TypeError) as exc:
                raise type(exc)(str(exc).replace(str(copy), str(path))) from None
    return BaseRun(path=path, prices=cfg["prices"], pool=cfg["pool"], strategy=cfg["strategy"],
                   train=cfg.get("train", TrainConfig()), backend=cfg["run"].get("backend"), document=document)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep file and its base run file, before anything runs.

    Args:
      path: the sweep file (TOML): ``[sweep]`` settings, ``[space.pool]``, ``[space.strategy]``,
        ``[space.train]`` (docs/sweep.md); with ``base``, a run file relative to it, else its own run tables.

    Returns:
      A :class:`SweepSpec`. A bad table, field, kind, range or setting raises ValueError naming the file,
      the table, the field and what is allowed; a grid/choice value that makes an invalid pool, strategy or
      TrainConfig on the base run is refused the same way.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such sweep file: {path}")
    source = str(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source}: not valid TOML ({exc})") from None
    settings = doc.get("sweep")
    if not isinstance(settings, dict):
        raise ValueError(f"{source}: the sweep file needs a [sweep] table (with base = \"run.toml\", or the run "
                         f"tables in this file)")
    check_keys("sweep", settings, SWEEP_KEYS, source=source)
    base = _base_run(path, doc, settings)
    parameters = _space(source, doc.get("space"), base)
    spec = SweepSpec(path=path, base=base, parameters=parameters, document=doc,
                     **_search_settings(source, settings, parameters),
                     **_scheduler_settings(source, settings, base, parameters),
                     **_resource_settings(source, settings))
    if base.train.split[1] <= 0 and not any(p.name == "train.split" for p in parameters):
        raise ValueError(f"{base.path}: [train] split={base.train.split} has no validation period; a sweep ranks "
                         f"trials by the validation objective: give split a validation fraction > 0")
    _check_values(source, spec)
    return spec


def _unknown_table(source: str, key: str, allowed: tuple[str, ...], prefix: str = "", note: str = "") -> ValueError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"did you mean [{prefix}{close[0]}]? " if close else ""
    return ValueError(f"{source}: unknown table [{prefix}{key}]{note}; {hint}allowed tables: "
                      + ", ".join(f"{prefix}{a}" for a in allowed))


def _base_run(path: Path, doc: dict[str, Any], settings: dict[str, Any]) -> BaseRun:
    """The base run: the file ``[sweep] base`` names (relative to the sweep file), else the sweep file's own
    run tables; the sweep file's tables are checked here."""
    from tfmm.cli import RUN_TABLES

    source = str(path)
    inline = "base" not in settings
    allowed = ("sweep", "space", *RUN_TABLES) if inline else ("sweep", "space")
    for key in doc:
        if key not in allowed:
            note = " (run tables go in the base run file, or drop base to keep them here)" if key in RUN_TABLES else ""
            raise _unknown_table(source, key, allowed, note=note)
    if inline:
        return load_base(path, {k: v for k, v in doc.items() if k in RUN_TABLES})
    name = settings["base"]
    if not isinstance(name, str) or not name:
        raise _fail(f"{source}: [sweep] base", name, "the path of a run file (relative to the sweep file)")
    base_path = Path(name) if os.path.isabs(name) else path.parent / name
    if not base_path.is_file():
        raise FileNotFoundError(f"{source}: [sweep] base: no such run file: {base_path}")
    return load_base(base_path)


def _space(source: str, space: Any, base: BaseRun) -> tuple[Parameter, ...]:
    """The parameters of ``[space]``, in the order pool, strategy, train."""
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{source}: [space] is missing or empty: give at least one field of [space.pool], "
                         f"[space.strategy] or [space.train]")
    for key in space:
        if key not in SECTIONS:
            raise _unknown_table(source, key, SECTIONS, prefix="space.")
    parameters = tuple(p for section in SECTIONS if section in space
                       for p in _section_parameters(source, section, space[section], base))
    if not parameters:
        raise ValueError(f"{source}: [space] has no fields to sweep")
    return parameters


def _search_settings(source: str, s: dict[str, Any], parameters: tuple[Parameter, ...]) -> dict[str, Any]:
    """searcher, trials (grid: a multiple of the grid size, default the grid size), concurrency, seed."""
    where = f"{source}: [sweep]"
    searcher = _choice_setting(f"{where} searcher", s.get("searcher", "random"), SEARCHERS)
    grids = [p for p in parameters if p.kind == "grid"]
    if grids and searcher != "grid":
        raise _fail(f"{source}: [space] {grids[0].name} kind", "grid",
                    f"'choice', 'uniform' or 'log-uniform' with searcher {searcher!r} (kind 'grid' needs "
                    f"searcher = \"grid\")")
    if searcher == "grid" and not grids:
        raise ValueError(f"{where} searcher='grid' needs at least one [space] field of kind 'grid'")
    grid_size = math.prod(len(p.values) for p in grids)
    trials = _int_setting(f"{where} trials", s.get("trials", grid_size if searcher == "grid" else DEFAULT_TRIALS), 1)
    if searcher == "grid" and trials % grid_size:
        raise _fail(f"{where} trials", trials, f"a multiple of the grid size {grid_size} (each grid point "
                                                f"trials / {grid_size} times)")
    concurrency = s.get("concurrency")
    if concurrency is not None:
        concurrency = _int_setting(f"{where} concurrency", concurrency, 1)
    return {"searcher": searcher, "trials": trials, "concurrency": concurrency,
            "seed": _int_setting(f"{where} seed", s.get("seed", 0), 0)}


def _scheduler_settings(source: str, s: dict[str, Any], base: BaseRun,
                        parameters: tuple[Parameter, ...]) -> dict[str, Any]:
    """metric (default: the training objective), scheduler, and ASHA's grace period (default: an eighth
    of the steps) and reduction factor (default 3)."""
    where = f"{source}: [sweep]"
    objectives = {base.train.objective}
    for p in parameters:
        if p.name == "train.objective":
            objectives |= set(p.values)
    metric = _choice_setting(f"{where} metric", s.get("metric", base.train.objective), OBJECTIVES)
    scheduler = _choice_setting(f"{where} scheduler", s.get("scheduler", "fifo"), SCHEDULERS)
    for key in ("grace_period", "reduction_factor"):
        if key in s and scheduler != "asha":
            raise ValueError(f"{where} {key} applies to scheduler = \"asha\" only (scheduler is {scheduler!r})")
    if scheduler == "asha" and objectives != {metric}:
        raise _fail(f"{where} metric", metric, f"the training objective ({', '.join(sorted(objectives))}) with "
                                               f"scheduler 'asha', which stops trials on the validation objective "
                                               f"reported during training")
    grace = _int_setting(f"{where} grace_period", s.get("grace_period", max(1, _max_steps(base, parameters) // 8)), 1)
    factor = s.get("reduction_factor", 3)
    if not _is_number(factor) or factor < 2:
        raise _fail(f"{where} reduction_factor", factor, "a number >= 2")
    return {"metric": metric, "scheduler": scheduler, "grace_period": grace, "reduction_factor": float(factor)}


def _resource_settings(source: str, s: dict[str, Any]) -> dict[str, float]:
    """CPUs per trial (> 0) and GPUs per trial (a fraction below 1 shares a GPU, or a whole number)."""
    where = f"{source}: [sweep]"
    cpus = s.get("cpus_per_trial", 1)
    if not _is_number(cpus) or cpus <= 0:
        raise _fail(f"{where} cpus_per_trial", cpus, "a number > 0")
    gpus = s.get("gpus_per_trial", 0)
    if not _is_number(gpus) or gpus < 0 or (gpus > 1 and not float(gpus).is_integer()):
        raise _fail(f"{where} gpus_per_trial", gpus, "a number >= 0: a fraction below 1 (trials share a GPU) "
                                                     "or a whole number")
    return {"cpus_per_trial": float(cpus), "gpus_per_trial": float(gpus)}


def _max_steps(base: BaseRun, parameters: tuple[Parameter, ...]) -> int:
    steps = [base.train.n_iterations]
    for p in parameters:
        if p.name == "train.n_iterations":
            steps += [v for v in p.values if isinstance(v, int)] if p.values else [int(p.high)]
    return int(max(steps))


def _check_values(source: str, spec: SweepSpec) -> None:
    """Each grid/choice value, alone on the base run, must make valid specs (a typo fails here, not in
    every trial); ranges are checked at both ends."""
    for p in spec.parameters:
        candidates = p.values if p.values else (p.low, p.high - (0 if p.integer else 1e-12 * abs(p.high)))
        for value in candidates:
            try:
                trial_specs(spec.base, {p.name: value})
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{source}: [space] {p.name} value {value!r} is invalid: {exc}") from None


# --- a trial's specs ------------------------------------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def human_units(strategy: Strategy, chunk_period: int) -> dict[str, float]:
    """The strategy's parameters in the units of :meth:`Strategy.from_memory_days` (mean over assets and sets):
    memory_days (of ``logit_lambda``, capped at max_memory_days), memory_days_2, k_per_day = 2^log_k,
    exponent = sp(raw_exponent). Only the units whose parameter the strategy has."""
    p, cap = strategy.params, strategy.max_memory_days
    units: dict[str, float] = {}
    for unit, key in (("memory_days", "logit_lambda"), ("memory_days_2", "logit_lambda_2")):
        if key in p:
            days = np.minimum(memory_days_from_lambda(_sigmoid(p[key]), chunk_period), cap)
            units[unit] = float(np.mean(days))
    if "log_k" in p:
        units["k_per_day"] = float(2.0 ** np.mean(p["log_k"]))
    if "raw_exponent" in p:
        x = np.asarray(p["raw_exponent"], dtype=np.float64)
        units["exponent"] = float(np.mean((x + np.sqrt(x * x + 4.0)) / 2.0))
    return units


def _convert_decays(strategy: Strategy, c_from: int, c_to: int) -> dict[str, np.ndarray]:
    """The strategy's parameters for chunks of ``c_to`` minutes with the same memories in days as with
    ``c_from`` (lambda -> m(lambda, c_from) -> lambda(m, c_to)); other parameters unchanged."""
    from tfmm.core.memory import logit_lambda_from_memory_days
    from tfmm.specs import EWMA_LOGITS

    params = {k: np.array(v, dtype=np.float64) for k, v in strategy.params.items()}
    if c_from == c_to:
        return params
    for key in EWMA_LOGITS.get(strategy.name, ()):
        days = np.minimum(memory_days_from_lambda(_sigmoid(params[key]), c_from), strategy.max_memory_days)
        params[key] = np.asarray(logit_lambda_from_memory_days(days, c_to), dtype=np.float64).reshape(params[key].shape)
    return params


def trial_strategy(base: Strategy, c_from: int, c_to: int, fields: Mapping[str, Any]) -> Strategy:
    """The base strategy with ``fields`` set (``name``, ``initial_weights``, ``beta``, ``max_memory_days``,
    human units, ``params.NAME``), for a pool of chunk period ``c_to`` (the base was for ``c_from``).

    A human unit sets its parameter for every asset; a new ``name`` starts from the base strategy's human
    units (mean over assets); ``params.NAME`` (a number, or one per asset) sets a parameter directly.
    """
    fields = dict(fields)
    direct = {k.split(".", 1)[1]: fields.pop(k) for k in list(fields) if k.startswith("params.")}
    units = {k: fields.pop(k) for k in list(fields) if k in HUMAN_UNITS}
    name = fields.pop("name", base.name)
    weights = fields.pop("initial_weights", base.initial_weights)
    beta = fields.pop("beta", base.beta)
    cap = fields.pop("max_memory_days", base.max_memory_days)
    if not fields and not direct and not units and name == base.name and c_from == c_to and \
            weights is base.initial_weights and beta == base.beta and cap == base.max_memory_days:
        return base
    known = {**human_units(base, c_from), **units}
    if name != base.name:
        if direct:
            raise ValueError(f"params.{next(iter(direct))} cannot be swept together with the strategy name")
        strategy = Strategy.from_memory_days(name, base.n_assets, chunk_period=c_to, initial_weights=weights,
                                             n_sets=base.n_sets, beta=beta, max_memory_days=cap, **known)
        return strategy
    params = _convert_decays(base, c_from, c_to)
    if units:
        ref = Strategy.from_memory_days(name, base.n_assets, chunk_period=c_to, max_memory_days=cap, **known)
        for unit in units:
            key = HUMAN_UNITS[unit]
            if key not in params:
                raise ValueError(f"{unit} sets {key}, which strategy {name!r} does not have (its parameters: "
                                 f"{', '.join(params) or 'none'})")
            params[key] = np.broadcast_to(ref.params[key], params[key].shape).copy()
    for key, value in direct.items():
        try:
            params[key] = np.broadcast_to(np.asarray(value, dtype=np.float64), params[key].shape).copy()
        except ValueError:
            raise ValueError(f"params.{key}={value!r} is invalid: allowed a number or one per asset "
                             f"(shape {params[key].shape})") from None
    return Strategy(name, params, weights, beta=beta, max_memory_days=cap, chunk_period=c_to)


def trial_specs(base: BaseRun, values: Mapping[str, Any]) -> tuple[Pool, Strategy, TrainConfig]:
    """Pool, strategy and TrainConfig of one trial: the base run with ``values`` (dotted name -> value) set.
    Errors name the table and the field, as a run file's would."""
    groups: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for name, value in values.items():
        section, field = name.split(".", 1)
        groups[section][field] = list(value) if isinstance(value, tuple) else value
    try:
        pool = dataclasses.replace(base.pool, **groups["pool"]) if groups["pool"] else base.pool
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"[pool] {exc}") from None
    train_fields = dict(groups["train"])
    smoothing = {k.split(".", 1)[1]: train_fields.pop(k) for k in list(train_fields) if k.startswith("smoothing.")}
    if "split" in train_fields and isinstance(train_fields["split"], list):
        train_fields["split"] = tuple(train_fields["split"])
    try:
        if smoothing:
            train_fields["smoothing"] = dataclasses.replace(base.train.smoothing, **smoothing)
        train = dataclasses.replace(base.train, **train_fields) if train_fields else base.train
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"[train] {exc}") from None
    c_from = base.strategy.chunk_period or base.pool.chunk_period
    try:
        strategy = trial_strategy(base.strategy, c_from, pool.chunk_period, groups["strategy"])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"[strategy] {exc}") from None
    return pool, strategy, train
