"""Throughput benchmark of the simulator (``tfmm bench``): pool-minutes per second per backend and fee path.

A pool-minute is one pool simulated over one minute; a call over ``sets`` parameter sets and ``bouts`` bout
starts of ``minutes`` minutes each simulates ``sets x bouts x minutes`` of them, and its throughput is that
number over the median wall time of warm calls. The grid spans assets, fees, bout lengths, batches and
dtypes; each configuration is timed forward (``tfmm.simulate``, exact mode) and forward + gradient
(``tfmm.value_and_grad``, smooth mode), with the first call (compilation) apart and peak host and device
memory; one ``tfmm.train`` step is timed per backend. Results go to ``<out>/<device>.json``, ``.md`` and PNGs.

    from tfmm.benchmark import run_benchmark
    result = run_benchmark(quick=True, backends="jax,torch", device="cpu", out="bench/results")

Modules: :mod:`~tfmm.benchmark.inputs` (the pool, strategy and timing rule that ``bench/`` scripts share),
:mod:`~tfmm.benchmark.grid` (backend paths, grids, cases), :mod:`~tfmm.benchmark.runner` (measuring),
:mod:`~tfmm.benchmark.system` (memory probes, the environment record), :mod:`~tfmm.benchmark.report` (files).
Importing this package imports neither jax nor torch.
"""

from tfmm.benchmark.grid import (BACKENDS, DEVICES, FULL_GRID, QUICK_GRID, BackendPath, Case, Grid, make_cases,
                                 parse_backends)
from tfmm.benchmark.inputs import (DAY, YEAR, bout_starts, momentum_inputs, momentum_strategy, split_batch,
                                   time_calls, timed)
from tfmm.benchmark.runner import (FULL_TRAIN, QUICK_TRAIN, BenchmarkResult, Measurement, TrainSize, TrainStep,
                                   run_benchmark)

__all__ = ["run_benchmark", "BenchmarkResult", "Measurement", "TrainStep", "TrainSize", "Grid", "Case",
           "BackendPath", "QUICK_GRID", "FULL_GRID", "QUICK_TRAIN", "FULL_TRAIN", "BACKENDS", "DEVICES",
           "parse_backends", "make_cases", "DAY", "YEAR", "time_calls", "timed", "split_batch", "bout_starts",
           "momentum_strategy", "momentum_inputs"]
