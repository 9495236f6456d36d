"""tfmm: a differentiable simulator of Temporal Function Market Maker pools.

Importing tfmm imports neither jax nor torch: backends load when first used (``tfmm.use``).
"""

from tfmm.api import NonFiniteSimulationError, Simulation, metrics, simulate, value_and_grad
from tfmm.backend import available_backends, get_backend, register_backend, use
from tfmm.data import (PriceGapError, Prices, SamplingIntervalError, example_prices, load_prices, summarize,
                       synthetic_prices)
from tfmm.diagnostics import Diagnosis, diagnose
from tfmm.functional import objective_fn, simulate_fn
from tfmm.training import CheckpointError, TrainingDivergedError, TrainingInterrupted, TrainResult, train
from tfmm.specs import (Pool, Smoothing, Strategy, TrainConfig, from_toml, load_config, register_strategy,
                         to_toml)
# tfmm.sweep is the package; binding its function here, after the package is imported, keeps tfmm.sweep the
# function (import it as `from tfmm.sweep import ...`). Ray is imported only when a sweep runs.
from tfmm.sweep import sweep

__version__ = "0.1.0"

__all__ = [
    "Pool", "Prices", "example_prices", "load_prices", "summarize", "synthetic_prices", "Simulation", "Smoothing", "Strategy", "TrainConfig", "available_backends",
    "from_toml", "get_backend", "load_config", "metrics", "register_backend", "register_strategy", "simulate",
    "to_toml",
    "use", "value_and_grad", "objective_fn", "simulate_fn", "train", "diagnose", "Diagnosis", "TrainResult", "TrainingDivergedError", "__version__",
    "NonFiniteSimulationError", "SamplingIntervalError", "PriceGapError", "CheckpointError", "TrainingInterrupted",
    "sweep",
]
