"""What the benchmark measures: backend paths, the grid of configurations, and the cases it expands to."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Sequence

from tfmm.benchmark.inputs import DAY, bout_label, split_batch

BACKENDS = ("jax", "torch", "reference")
DEVICES = ("cpu", "cuda")
CALLS = ("forward", "gradient")  # tfmm.simulate (exact); tfmm.value_and_grad (smooth)
DTYPES = ("float64", "float32")
FEE_PATHS = ("auto", "kernel", "scan")

# fee paths measured per backend when --backends names only the backend, by (device, quick). On CUDA
# "auto" is whatever the backend picks for device arrays; the reference computes on the CPU whatever the device.
DEFAULT_FEE_PATHS = {
    ("cpu", False): {"jax": ("kernel", "scan"), "torch": ("kernel",), "reference": (None,)},
    ("cpu", True): {"jax": ("kernel",), "torch": ("kernel",), "reference": (None,)},
    ("cuda", False): {"jax": ("auto", "kernel", "scan"), "torch": ("auto", "kernel"), "reference": (None,)},
    ("cuda", True): {"jax": ("auto",), "torch": ("auto",), "reference": (None,)},
}


@dataclass(frozen=True)
class BackendPath:
    """A backend and its fee path (``tfmm.use(backend, fee_path=...)``); the reference has none."""

    backend: str
    fee_path: str | None = None

    @property
    def label(self) -> str:
        """"jax kernel", "torch auto", "reference"."""
        return self.backend if self.fee_path is None else f"{self.backend} {self.fee_path}"

    def options(self) -> dict[str, str]:
        """Keyword options of ``tfmm.use`` for this path."""
        return {} if self.fee_path is None else {"fee_path": self.fee_path}

    @property
    def can_differentiate(self) -> bool:
        """Whether gradients are measured (the reference's are finite differences: not a benchmark)."""
        return self.backend != "reference"


def parse_backends(text: str | Sequence[str], device: str, quick: bool = False) -> list[BackendPath]:
    """Backend paths from ``"jax,torch,reference"``; an entry may name its fee path (``"jax:scan"``).
    A bare name expands to :data:`DEFAULT_FEE_PATHS` of ``device`` (fewer paths when ``quick``)."""
    if device not in DEVICES:
        raise ValueError(f"--device={device!r} is invalid: allowed one of {', '.join(DEVICES)}")
    entries = [e.strip() for e in (text.split(",") if isinstance(text, str) else text)]
    if not entries or not all(entries):
        raise ValueError(f"--backends={text!r} is invalid: allowed a comma-separated list of "
                         f"{', '.join(BACKENDS)} (optionally backend:fee_path, fee_path one of {', '.join(FEE_PATHS)})")
    paths: list[BackendPath] = []
    for entry in entries:
        name, _, fee_path = entry.partition(":")
        if name not in BACKENDS:
            raise ValueError(f"--backends: unknown backend {name!r}; allowed {', '.join(BACKENDS)}")
        if not fee_path:
            paths += [BackendPath(name, f) for f in DEFAULT_FEE_PATHS[device, bool(quick)][name]]
        elif name == "reference":
            raise ValueError(f"--backends: {entry!r} is invalid: the reference backend has no fee path option")
        elif fee_path not in FEE_PATHS:
            raise ValueError(f"--backends: fee path {fee_path!r} of {name!r} is invalid; allowed "
                             f"{', '.join(FEE_PATHS)}")
        else:
            paths.append(BackendPath(name, fee_path))
    return list(dict.fromkeys(paths))


@dataclass(frozen=True)
class Grid:
    """The configurations to measure: every combination of these (bout lengths in minutes, batches as
    parameter sets x bout starts, see :func:`tfmm.benchmark.inputs.split_batch`)."""

    assets: tuple[int, ...] = (2,)
    fees: tuple[float, ...] = (0.003,)
    bout_minutes: tuple[int, ...] = (DAY, 30 * DAY)
    batches: tuple[int, ...] = (1, 16)
    dtypes: tuple[str, ...] = DTYPES
    calls: tuple[str, ...] = CALLS

    def __post_init__(self) -> None:
        _check_values("--assets", self.assets, lambda n: isinstance(n, int) and n >= 2, "integers >= 2")
        _check_values("--fees", self.fees, lambda f: isinstance(f, (int, float)) and 0 <= f < 1, "numbers in [0, 1)")
        _check_values("bout_minutes (--bout-days)", self.bout_minutes, lambda m: isinstance(m, int) and m >= 2,
                      "bout lengths of at least 2 minutes")
        _check_values("--batches", self.batches, lambda b: isinstance(b, int) and b >= 1, "integers >= 1")
        _check_values("--dtypes", self.dtypes, lambda d: d in DTYPES, f"a subset of {', '.join(DTYPES)}")
        _check_values("calls", self.calls, lambda c: c in CALLS, f"a subset of {', '.join(CALLS)}")

    def with_overrides(self, **overrides: Sequence | None) -> "Grid":
        """This grid with the fields given (not None) replaced."""
        return replace(self, **{k: tuple(v) for k, v in overrides.items() if v is not None})


def _check_values(option: str, values: Iterable, ok, allowed: str) -> None:
    values = tuple(values)
    if not values or not all(ok(v) for v in values):
        raise ValueError(f"{option}={list(values)!r} is invalid: allowed a non-empty list of {allowed}")


QUICK_GRID = Grid()
FULL_GRID = Grid(assets=(2, 3, 5), fees=(0.0, 0.003), bout_minutes=(DAY, 7 * DAY, 30 * DAY, 365 * DAY),
                 batches=(1, 16, 256, 4096))


@dataclass(frozen=True)
class Case:
    """One measured configuration: a backend path on one input shape, one call."""

    path: BackendPath
    n_assets: int
    fee: float
    minutes: int  # per bout: a bout of ``minutes + 1`` rows yields ``minutes`` pool-minutes
    sets: int
    bouts: int
    dtype: str
    call: str

    @property
    def batch(self) -> int:
        return self.sets * self.bouts

    @property
    def pool_minutes(self) -> int:
        """sets x bouts x minutes: the pool-minutes one call simulates."""
        return self.sets * self.bouts * self.minutes

    @property
    def series(self) -> tuple:
        """Cases that differ only in bout length and batch (used to extrapolate call times)."""
        return (self.path, self.n_assets, self.fee, self.dtype, self.call)

    @property
    def label(self) -> str:
        return (f"{self.path.label} n={self.n_assets} fee={self.fee:g} {bout_label(self.minutes)} "
                f"{self.sets}x{self.bouts} {self.dtype} {self.call}")


def make_cases(grid: Grid, paths: Sequence[BackendPath]) -> list[Case]:
    """Every case of ``grid`` for ``paths``, cheapest first (pool-minutes, then the grid's order).

    Without a fee the fee path is never used, so only the first path of each backend runs fee 0; the
    reference runs forward calls only."""
    cases = []
    for n in grid.assets:
        for fee in grid.fees:
            for path in _paths_for_fee(paths, fee):
                for minutes in grid.bout_minutes:
                    for batch in grid.batches:
                        sets, bouts = split_batch(batch)
                        for dtype in grid.dtypes:
                            for call in grid.calls:
                                if call == "gradient" and not path.can_differentiate:
                                    continue
                                cases.append(Case(path, n, float(fee), minutes, sets, bouts, dtype, call))
    order = {case: i for i, case in enumerate(cases)}
    return sorted(cases, key=lambda c: (c.pool_minutes, order[c]))


def _paths_for_fee(paths: Sequence[BackendPath], fee: float) -> list[BackendPath]:
    if fee > 0:
        return list(paths)
    first: dict[str, BackendPath] = {}
    for path in paths:
        first.setdefault(path.backend, path)
    return list(first.values())


__all__ = ["BACKENDS", "DEVICES", "CALLS", "DTYPES", "FEE_PATHS", "DEFAULT_FEE_PATHS", "BackendPath", "Grid",
           "Case", "QUICK_GRID", "FULL_GRID", "parse_backends", "make_cases"]
