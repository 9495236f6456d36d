"""Running the benchmark: one measurement per case, one training step per backend, the whole grid.

Each case is timed through the public API only (``tfmm.use``, ``tfmm.simulate``, ``tfmm.value_and_grad``,
``tfmm.train``): the first call (tracing, compilation, kernels compiled or loaded from their cache) apart
from ``repeats`` warm calls, whose median gives the throughput. A case that would not fit in memory (by an
estimate made first) or that runs out of memory is recorded as "skipped: out of memory"; one that would take
longer than ``max_call_seconds`` per call (extrapolated from the fastest smaller case of its series) or
start after ``time_budget_s`` is recorded as skipped too; any other failure is recorded as "error: ..." and
the run goes on.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from tfmm.benchmark.grid import (BACKENDS, DEVICES, FULL_GRID, QUICK_GRID, BackendPath, Case, Grid, make_cases,
                                 parse_backends)
from tfmm.benchmark.inputs import DAY, bout_label, bout_starts, momentum_inputs, momentum_strategy
from tfmm.benchmark import system

OBJECTIVE = "sharpe"  # valid for any bout length; every objective costs a reduction over the values
MODES = {"forward": "exact", "gradient": "smooth"}  # tfmm.simulate evaluates, tfmm.value_and_grad trains
MEMORY_HEADROOM = 0.8  # a case runs only if its estimated memory is below this share of what is available


# --------------------------------------------------------------------------------------------- records

@dataclass
class Measurement:
    """One case's result. Times in seconds; memory in bytes; throughput in pool-minutes per second.

    host_peak_rss_delta_bytes: peak resident set size during the warm calls minus the resident set size
    before them (see :mod:`tfmm.benchmark.system`). device_peak_bytes: torch on CUDA,
    ``torch.cuda.max_memory_allocated`` over the warm calls; JAX, the device's ``peak_bytes_in_use``
    (the process's high-water mark so far: cases run cheapest first, so it is mostly this case's);
    None on the CPU. estimated_bytes: the estimate the memory check used.
    """

    backend: str
    fee_path: str | None
    n_assets: int
    fee: float
    bout_days: float
    minutes: int
    sets: int
    bouts: int
    dtype: str
    call: str
    mode: str
    status: str = "ok"
    first_call_s: float | None = None
    times_s: list[float] = field(default_factory=list)
    median_s: float | None = None
    pool_minutes: int = 0
    pool_minutes_per_s: float | None = None
    host_peak_rss_delta_bytes: int | None = None
    device_peak_bytes: int | None = None
    estimated_bytes: int | None = None
    array_device: str | None = None
    load_average: list[float] | None = None

    @classmethod
    def of(cls, case: Case) -> "Measurement":
        return cls(case.path.backend, case.path.fee_path, case.n_assets, case.fee, case.minutes / DAY, case.minutes,
                   case.sets, case.bouts, case.dtype, case.call, MODES[case.call], pool_minutes=case.pool_minutes)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def path_label(self) -> str:
        return BackendPath(self.backend, self.fee_path).label

    def record_times(self, first_s: float, times_s: list[float]) -> None:
        """Set the times, their median and the throughput: pool_minutes / median."""
        self.first_call_s, self.times_s = first_s, list(times_s)
        self.median_s = statistics.median(times_s)
        self.pool_minutes_per_s = self.pool_minutes / self.median_s if self.median_s > 0 else None


@dataclass(frozen=True)
class TrainSize:
    """The training run timed per backend: ``n_sets`` parameter sets x ``batch_size`` bouts of
    ``bout_minutes`` minutes per step (float64, 2 assets, fee 0.3%); ``repeats`` warm pairs of runs of
    1 and ``1 + extra_steps`` steps (one step costs their difference / ``extra_steps``)."""

    bout_minutes: int = 3 * DAY
    batch_size: int = 4
    n_sets: int = 2
    extra_steps: int = 8
    repeats: int = 1

    @property
    def pool_minutes(self) -> int:
        return self.bout_minutes * self.batch_size * self.n_sets


QUICK_TRAIN = TrainSize()
FULL_TRAIN = TrainSize(bout_minutes=10 * DAY, batch_size=8, n_sets=4, extra_steps=16, repeats=2)  # TrainConfig's bouts
TRAIN_SIZES = {"quick": QUICK_TRAIN, "full": FULL_TRAIN}
TRAIN_SHARE = 0.25  # of the time budget, kept for the training steps after the grid


@dataclass
class TrainStep:
    """One backend's ``tfmm.train``: first_call_s, a one-step run with compilation; call_s, the median of
    warm one-step runs (validation and test evaluation included); step_s, one more step's cost."""

    backend: str
    bout_days: float
    batch_size: int
    n_sets: int
    extra_steps: int
    status: str = "ok"
    first_call_s: float | None = None
    call_times_s: list[float] = field(default_factory=list)
    longer_call_times_s: list[float] = field(default_factory=list)
    call_s: float | None = None
    step_s: float | None = None
    pool_minutes_per_step: int = 0
    pool_minutes_per_s: float | None = None
    array_device: str | None = None

    @classmethod
    def of(cls, backend: str, size: TrainSize) -> "TrainStep":
        return cls(backend, size.bout_minutes / DAY, size.batch_size, size.n_sets, size.extra_steps,
                   pool_minutes_per_step=size.pool_minutes)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchmarkResult:
    """Everything a run measured, with where and how; ``files`` are the paths written."""

    environment: dict[str, Any]
    settings: dict[str, Any]
    measurements: list[Measurement] = field(default_factory=list)
    train_steps: list[TrainStep] = field(default_factory=list)
    wall_s: float = 0.0
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "settings": self.settings, "wall_s": self.wall_s,
                "measurements": [asdict(m) for m in self.measurements],
                "train_steps": [asdict(t) for t in self.train_steps]}

    @property
    def errors(self) -> list[Measurement | TrainStep]:
        return [r for r in [*self.measurements, *self.train_steps] if r.status.startswith("error")]


# ------------------------------------------------------------------------------------- device handling

@contextlib.contextmanager
def arrays_on(backend: str, device: str) -> Iterator[str]:
    """Make ``backend`` create its arrays on ``device`` (torch: a default-device context; JAX: its default
    device); yields a description of the device. The reference always computes on the CPU."""
    if backend == "torch":
        import torch

        with torch.device(device):
            yield "cuda:0" if device == "cuda" else "cpu"
    elif backend == "jax":
        import jax

        target = system.jax_gpu_device() if device == "cuda" else jax.devices("cpu")[0]
        if target is None:
            raise RuntimeError("jax sees no GPU (is a CUDA build of jaxlib installed?)")
        with _jax_default_device(jax, target):
            yield f"{target.platform}:{target.id}"
    else:
        yield "cpu"


@contextlib.contextmanager
def _jax_default_device(jax: Any, device: Any) -> Iterator[None]:
    """``jax.default_device(device)``, or the ``jax_default_device`` setting where that is missing."""
    scope = getattr(jax, "default_device", None)
    if scope is not None:
        with scope(device):
            yield
        return
    previous = jax.config.jax_default_device
    jax.config.update("jax_default_device", device)
    try:
        yield
    finally:
        jax.config.update("jax_default_device", previous)


class DeviceMemory:
    """Peak and available device memory of one backend on CUDA (no-ops on the CPU)."""

    def __init__(self, backend: str, device: str) -> None:
        self.kind = backend if device == "cuda" and backend in ("torch", "jax") else None
        self._jax_device = system.jax_gpu_device() if self.kind == "jax" else None

    def reset(self) -> None:
        if self.kind == "torch":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int | None:
        if self.kind == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated())
        if self.kind == "jax" and self._jax_device is not None:
            return system.jax_memory_stats(self._jax_device).get("peak_bytes_in_use")
        return None

    def available(self) -> int | None:
        if self.kind == "torch":
            import torch

            free, _ = torch.cuda.mem_get_info()
            return int(free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated())
        if self.kind == "jax" and self._jax_device is not None:
            stats = system.jax_memory_stats(self._jax_device)
            if "bytes_limit" in stats:
                return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
        return None


def release_memory() -> None:
    """Return cached device memory after a failure or between backends."""
    gc.collect()
    import sys

    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def block(out: Any) -> Any:
    """Wait for asynchronous results (JAX dispatch, CUDA streams); returns ``out``."""
    leaves = _leaves(out)
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    if any(getattr(getattr(leaf, "device", None), "type", None) == "cuda" for leaf in leaves):
        import torch

        torch.cuda.synchronize()
    return out


def _leaves(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [leaf for v in x.values() for leaf in _leaves(v)]
    if isinstance(x, (list, tuple)):
        return [leaf for v in x for leaf in _leaves(v)]
    return [x]


# ------------------------------------------------------------------------------------ memory estimates

def estimate_bytes(case: Case) -> int:
    """Peak memory of one call, bytes: about twice the largest peak per pool-minute measured on the CPU
    backends (forward: the outputs, reserves, weights, trades and prices per minute, and their host copies,
    up to 180 bytes for 2 assets in float64; gradient: what reverse mode keeps, up to 340 bytes)."""
    itemsize = 8 if case.dtype == "float64" else 4
    n = case.n_assets
    per_minute = (8 * n + 6) if case.call == "forward" else (12 * n + 12)
    return 2 * case.pool_minutes * per_minute * itemsize


def host_copy_bytes(case: Case) -> int:
    """Host memory a forward call needs whatever the device: the weights, reserves and values that
    ``tfmm.simulate`` checks for finiteness on the host."""
    itemsize = 8 if case.dtype == "float64" else 4
    return case.pool_minutes * (2 * case.n_assets + 1) * itemsize if case.call == "forward" else 0


def memory_verdict(case: Case, device: str, memory: DeviceMemory) -> str | None:
    """"skipped: out of memory (...)" when the case's estimate exceeds what is available, else None."""
    need = estimate_bytes(case)
    on_device = device == "cuda" and case.path.backend != "reference"
    checks = [("host", host_copy_bytes(case) if on_device else need, system.available_host_bytes())]
    if on_device:
        checks.append(("device", need, memory.available()))
    for where, bytes_needed, available in checks:
        if available is not None and bytes_needed > MEMORY_HEADROOM * available:
            return (f"skipped: out of memory (estimated {bytes_needed / 2**30:.1f} GiB of {where} memory, "
                    f"{available / 2**30:.1f} GiB available)")
    return None


# ------------------------------------------------------------------------------------------ one case

def make_call(case: Case, prices: Any, strategy: Any) -> Callable[[], Any]:
    """The timed call of a case, through the public API, waiting for its results."""
    import tfmm

    pool = tfmm.Pool(fee=case.fee)
    starts = bout_starts(case.bouts)
    length = case.minutes + 1  # a bout of B rows simulates B - 1 minutes
    mode = MODES[case.call]
    if case.call == "forward":
        def forward() -> Any:
            sim = tfmm.simulate(prices, strategy, pool, start=starts, length=length, mode=mode, dtype=case.dtype)
            return block((sim.values, sim.reserves, sim.fees))
        return forward

    def gradient() -> Any:
        return block(tfmm.value_and_grad(prices, strategy, pool, start=starts, length=length, objective=OBJECTIVE,
                                         mode=mode, dtype=case.dtype))
    return gradient


def _seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(case: Case, inputs: tuple[Any, Any], device: str, repeats: int,
            max_call_seconds: float | None = None) -> Measurement:
    """Time one case: the first call, then ``repeats`` warm calls (fewer when one takes over twice
    ``max_call_seconds``) with their peak host and device memory. Failures are recorded, not raised."""
    import tfmm

    m = Measurement.of(case)
    memory = DeviceMemory(case.path.backend, device)
    m.estimated_bytes = estimate_bytes(case)
    try:
        with tfmm.use(case.path.backend, **case.path.options()), arrays_on(case.path.backend, device) as where:
            m.array_device = where
            verdict = memory_verdict(case, device, memory)
            if verdict:
                m.status = verdict
                return m
            fn = make_call(case, *inputs)
            first = _seconds(fn)
            rss0 = system.current_rss_bytes()
            system.reset_peak_rss()
            memory.reset()
            times = []
            for _ in range(repeats):
                times.append(_seconds(fn))
                if max_call_seconds is not None and times[-1] > 2 * max_call_seconds:
                    break
            m.record_times(first, times)
            if rss0 is not None:
                m.host_peak_rss_delta_bytes = max(0, system.peak_rss_bytes() - rss0)
            m.device_peak_bytes = memory.peak()
    except Exception as exc:  # one case never stops the run
        m.status = _failure(exc)
        release_memory()
    m.load_average = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return m


def _failure(exc: BaseException) -> str:
    """The status of a failed case: "skipped: out of memory (...)" or "error: Type: message"."""
    text = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
    return f"skipped: out of memory ({text})" if system.is_out_of_memory(exc) else f"error: {text}"


# ------------------------------------------------------------------------------------ training steps

def measure_train_step(backend: str, device: str, size: TrainSize, max_run_seconds: float | None = None,
                       clock: "_Clock | None" = None) -> TrainStep:
    """Time ``tfmm.train`` on the backend with its default options: one step with compilation, then
    ``size.repeats`` pairs of warm runs of 1 and ``1 + extra_steps`` steps (each evaluates once, at its end).
    Warm runs are skipped when the first took longer than ``max_run_seconds`` or when a pair (about twice
    the first run) would pass the ``clock``'s budget. The step time is a difference of two run times: on a
    shared machine its noise is that of the runs'."""
    import tfmm

    record = TrainStep.of(backend, size)
    if backend == "reference":
        record.status = "skipped: the reference backend does not train"
        return record
    rows = DAY + 6 * (size.bout_minutes + 1)  # burn-in, then train / validation / test 0.6 / 0.2 / 0.2
    prices, strategy = momentum_inputs(2, rows, extra_rows=0)
    pool = tfmm.Pool(fee=0.003)

    def run(steps: int) -> float:
        config = tfmm.TrainConfig(objective=OBJECTIVE, bout_length=size.bout_minutes + 1, batch_size=size.batch_size,
                                  n_sets=size.n_sets, n_iterations=steps, eval_every=steps, burn_in=DAY, seed=0)
        return _seconds(lambda: tfmm.train(prices, strategy, pool, config, progress=False))

    try:
        with tfmm.use(backend), arrays_on(backend, device) as where:
            record.array_device = where
            record.first_call_s = run(1)
            for i in range(size.repeats):
                blocked = _warm_runs_blocked(record.first_call_s, max_run_seconds if i == 0 else None, clock)
                if blocked and i == 0:
                    record.status = f"skipped: warm runs ({blocked})"
                    return record
                if blocked:
                    break
                record.call_times_s.append(run(1))
                record.longer_call_times_s.append(run(1 + size.extra_steps))
        record.call_s = statistics.median(record.call_times_s)
        extra = statistics.median(record.longer_call_times_s) - record.call_s
        record.step_s = extra / size.extra_steps
        record.pool_minutes_per_s = size.pool_minutes / record.step_s if record.step_s > 0 else None
    except Exception as exc:
        record.status = _failure(exc)
        release_memory()
    return record


def _warm_runs_blocked(first_s: float, max_run_seconds: float | None, clock: "_Clock | None") -> str | None:
    if max_run_seconds is not None and first_s > max_run_seconds:
        return f"the first took {first_s:.0f} s, over {max_run_seconds:g} s"
    if clock is not None and clock.budget is not None and clock.elapsed + 2 * first_s > clock.budget:
        return f"they would pass the time budget ({clock.budget:g} s)"
    return None


# --------------------------------------------------------------------------------------------- the run

def resolve_device(device: str | None, backends: Sequence[str]) -> str:
    """``device``, checked; None -> "cuda" when torch or JAX sees a GPU, else "cpu"."""
    if device is not None and device not in DEVICES:
        raise ValueError(f"--device={device!r} is invalid: allowed one of {', '.join(DEVICES)}")
    gpu = (("torch" in backends and system.torch_cuda_available())
           or ("jax" in backends and system.jax_gpu_device() is not None))
    if device == "cuda" and not gpu:
        raise ValueError("--device=cuda is invalid here: neither torch nor jax sees a CUDA device "
                         f"(backends: {', '.join(backends)}); allowed: cpu")
    return device or ("cuda" if gpu else "cpu")


def load_backends(text: str | Sequence[str]) -> list[str]:
    """The backend names of ``--backends``, each loaded (the JAX backend sets its XLA flags before any JAX
    computation, so it must come first); an uninstalled backend raises ImportError naming its extra."""
    import tfmm

    names = list(dict.fromkeys(p.backend for p in parse_backends(text, "cpu")))
    for name in names:
        tfmm.get_backend(name)
    return names


@dataclass
class _Series:
    """The fastest throughput seen per series, to extrapolate call times."""

    best: dict[tuple, float] = field(default_factory=dict)

    def update(self, m: Measurement, case: Case) -> None:
        if m.ok and m.pool_minutes_per_s:
            self.best[case.series] = max(self.best.get(case.series, 0.0), m.pool_minutes_per_s)

    def seconds(self, case: Case) -> float | None:
        rate = self.best.get(case.series)
        return case.pool_minutes / rate if rate else None


def _time_verdict(case: Case, series: _Series, clock: _Clock, repeats: int,
                  max_call_seconds: float | None) -> str | None:
    """Why a case is skipped for time (the budget is spent, or its extrapolated call is too long), or None."""
    if clock.spent:
        return f"skipped: {clock.what} ({clock.budget:g} s) spent"
    estimate = series.seconds(case)
    if estimate is None:
        return None
    if max_call_seconds is not None and estimate > max_call_seconds:
        return f"skipped: about {estimate:.0f} s per call (> max_call_seconds {max_call_seconds:g})"
    if clock.budget is not None and clock.elapsed + estimate * (repeats + 1) > clock.budget:
        return f"skipped: about {estimate * (repeats + 1):.0f} s would pass the {clock.what} ({clock.budget:g} s)"
    return None


class _Inputs:
    """Prices and strategies per (assets, bout minutes) and (assets, sets), made once."""

    def __init__(self) -> None:
        self._prices: dict[tuple[int, int], Any] = {}
        self._strategies: dict[tuple[int, int], Any] = {}

    def __call__(self, case: Case) -> tuple[Any, Any]:
        key = (case.n_assets, case.minutes)
        if key not in self._prices:
            self._prices[key] = momentum_inputs(case.n_assets, case.minutes + 1)[0]
        skey = (case.n_assets, case.sets)
        if skey not in self._strategies:
            self._strategies[skey] = momentum_strategy(case.n_assets, n_sets=None if case.sets == 1 else case.sets)
        return self._prices[key], self._strategies[skey]


def _describe(m: Measurement) -> str:
    head = (f"{m.path_label:<13} n={m.n_assets} fee={m.fee:<6g} {bout_label(m.minutes):>7} {m.sets:>3}x{m.bouts:<3} "
            f"{m.dtype:<7} {m.call:<8}")
    if not m.ok:
        return f"{head} {m.status}"
    return (f"{head} {m.pool_minutes_per_s / 1e6:9.3f} M pool-min/s  median {m.median_s * 1e3:9.1f} ms  "
            f"first {m.first_call_s:6.2f} s")


def run_benchmark(*, quick: bool = False, backends: str | Sequence[str] = ",".join(BACKENDS),
                  device: str | None = None, repeats: int = 3, out: str | Path | None = "bench/results",
                  grid: Grid | None = None, max_call_seconds: float | None = None,
                  time_budget_s: float | None = None, train: bool | str | TrainSize = True, progress: bool = True,
                  log: Callable[[str], None] | None = print) -> BenchmarkResult:
    """Measure throughput over the grid (:data:`QUICK_GRID` with ``quick``, else :data:`FULL_GRID`, or
    ``grid``) for the backend paths of ``backends`` on ``device`` and write the results to ``out``.

    Args:
      quick: the small grid (and training size); also names the files ``<device>-quick.*``.
      backends: "jax,torch,reference"; an entry may name a fee path ("jax:scan").
      device: "cpu" or "cuda" (None: cuda when torch or jax sees a GPU).
      repeats: warm calls per case (>= 1); their median gives the throughput.
      out: folder for ``<device>.json`` (rewritten after every case), ``.md`` and two PNGs; None writes nothing.
      max_call_seconds: skip cases extrapolated to take longer per call (default 30 quick, 60 full).
      time_budget_s: skip what would start after this many seconds of the run (the grid stops at 75% of it
        when training steps follow).
      train: time one ``tfmm.train`` step per backend: True (the size that goes with ``quick``), "quick",
        "full", a :class:`TrainSize`, or False / "none".
    Returns:
      the :class:`BenchmarkResult` (``files`` holds the paths written).
    """
    _check_options(repeats, max_call_seconds, time_budget_s)
    t_start = time.perf_counter()
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # JAX and torch share one GPU
    names = load_backends(backends)
    device = resolve_device(device, names)
    paths = parse_backends(backends, device, quick)
    default_grid = QUICK_GRID if quick else FULL_GRID
    grid_name = "quick" if quick else "full"
    if grid is not None and grid != default_grid:
        grid_name = "custom"
    grid = grid or default_grid
    max_call_seconds = max_call_seconds or (30.0 if quick else 60.0)
    size = _train_size(train, quick)
    settings = _settings_record(quick, grid_name, grid, repeats, paths, max_call_seconds, time_budget_s, size)
    result = BenchmarkResult(system.environment(device), settings)
    stem = system.device_slug(device, result.environment["device_model"]) + ("-quick" if quick else "")
    clock = _Clock(t_start, time_budget_s)
    grid_clock = clock if time_budget_s is None or not size else \
        _Clock(t_start, (1 - TRAIN_SHARE) * time_budget_s, "grid's share of the time budget")
    save = _saver(result, None if out is None else Path(out), stem, clock)
    cases = make_cases(grid, paths)
    bar = _progress(cases, progress)
    emit = _writer(bar, log or (lambda line: None))
    _measure_grid(bar, result, device, repeats, max_call_seconds, grid_clock, emit, save)
    for name in names if size else ():
        step = _train_step(name, device, size, 3 * max_call_seconds, clock)
        result.train_steps.append(step)
        emit(f"train step {name:<9} " + (f"{step.step_s:.3f} s per step" if step.ok else step.status))
        save()
    result.environment["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result.environment["flags"] = system.runtime_flags()
    save(final=True)
    return result


def _settings_record(quick: bool, grid_name: str, grid: Grid, repeats: int, paths: Sequence[Any],
                     max_call_seconds: float, time_budget_s: float | None, size: TrainSize | None) -> dict[str, Any]:
    """The run's settings as written to the JSON."""
    return {
        "quick": quick, "grid_name": grid_name, "repeats": repeats, "backend_paths": [p.label for p in paths],
        "grid": {**asdict(grid), "bout_days": [m / DAY for m in grid.bout_minutes]},
        "objective": OBJECTIVE, "modes": MODES, "max_call_seconds": max_call_seconds, "time_budget_s": time_budget_s,
        "train_size": asdict(size) if size else None,
        "pool_minutes": "sets x bouts x minutes per bout; throughput = pool_minutes / median warm seconds",
    }


def _measure_grid(cases: Any, result: BenchmarkResult, device: str, repeats: int, max_call_seconds: float,
                  clock: Any, emit: Callable[[str], None], save: Callable[..., None]) -> None:
    """Measure (or skip, by the time and memory rules) every case, saving the results after each."""
    series, inputs = _Series(), _Inputs()
    for case in cases:
        m = _skipped(case, _time_verdict(case, series, clock, repeats, max_call_seconds)) or \
            measure(case, inputs(case), device, repeats, max_call_seconds)
        series.update(m, case)
        result.measurements.append(m)
        emit(_describe(m))
        save()


def _train_size(train: bool | str | TrainSize, quick: bool) -> TrainSize | None:
    """The training size of the ``train`` argument (None: no training steps)."""
    if isinstance(train, TrainSize):
        return train
    if train is True:
        return QUICK_TRAIN if quick else FULL_TRAIN
    if train is False or train == "none":
        return None
    if train not in TRAIN_SIZES:
        raise ValueError(f"--train={train!r} is invalid: allowed one of quick, full, none")
    return TRAIN_SIZES[train]


def _check_options(repeats: int, max_call_seconds: float | None, time_budget_s: float | None) -> None:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"--repeats={repeats!r} is invalid: allowed an integer >= 1")
    for name, value in (("max_call_seconds (--max-call-seconds)", max_call_seconds),
                        ("time_budget_s (--time-budget)", time_budget_s)):
        if value is not None and not value > 0:
            raise ValueError(f"{name}={value!r} is invalid: allowed a number > 0 or None")


@dataclass(frozen=True)
class _Clock:
    """Seconds since the run started, against its time budget."""

    start: float
    budget: float | None
    what: str = "time budget"

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def spent(self) -> bool:
        return self.budget is not None and self.elapsed >= self.budget


def _saver(result: BenchmarkResult, out: Path | None, stem: str, clock: _Clock) -> Callable[..., None]:
    """save(final=False): the JSON after every case; with ``final`` the markdown and plots too."""
    from tfmm.benchmark.report import write_results

    def save(final: bool = False) -> None:
        result.wall_s = clock.elapsed
        if out is not None:
            result.files = write_results(result, out, stem, final=final)

    return save


def _skipped(case: Case, verdict: str | None) -> Measurement | None:
    if verdict is None:
        return None
    m = Measurement.of(case)
    m.status = verdict
    return m


def _train_step(name: str, device: str, size: TrainSize, max_run_seconds: float, clock: _Clock) -> TrainStep:
    """A training step's timing, or its record as skipped once the time budget is spent."""
    if clock.spent and name != "reference":
        step = TrainStep.of(name, size)
        step.status = f"skipped: time budget ({clock.budget:g} s) spent"
        return step
    return measure_train_step(name, device, size, max_run_seconds, clock)


def _progress(cases: list[Case], enabled: bool) -> Any:
    if not enabled:
        return cases
    from tqdm.auto import tqdm

    return tqdm(cases, desc="tfmm bench", unit="case")


def _writer(bar: Any, say: Callable[[str], None]) -> Callable[[str], None]:
    """Lines printed above a progress bar when there is one."""
    if hasattr(bar, "write") and say is print:
        return bar.write
    return say


__all__ = ["Measurement", "TrainSize", "TrainStep", "BenchmarkResult", "QUICK_TRAIN", "FULL_TRAIN", "TRAIN_SIZES",
           "OBJECTIVE", "MODES", "run_benchmark", "measure", "measure_train_step", "estimate_bytes", "resolve_device",
           "arrays_on", "block"]
