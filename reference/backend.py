"""The "reference" backend: numpy arrays, the Numba reference simulator, finite-difference gradients.

``with tfmm.use("reference"): tfmm.simulate(...)`` runs :func:`tfmm.reference.simulate.simulate_bout`
for every (parameter set, start) pair; :meth:`ReferenceBackend.value_and_grad_objective` (what
``tfmm.value_and_grad`` calls) differentiates by central finite differences, one parameter entry at a
time: ``2 * n_params * n`` extra simulations per set, so it is slow and meant for checking gradients.

Finite-difference step. The central difference ``(f(x + h) - f(x - h)) / 2h`` has truncation error
``h^2 |f'''| / 6`` and rounding error about ``e_f / h``, where ``e_f`` is the absolute noise of one
evaluation. A bout accumulates rounding over thousands of minutes: for a 3-day smooth-mode momentum
bout ``e_f`` is about 1e-10 on a daily log Sharpe of about 40 (not the 1e-16 of one operation), and
``|f'''|`` reaches about 2e4 (gate and selection temperatures of ~1 USD against trades of ~100 USD per
unit of parameter make the objective bend on parameter scales of ~1e-2). Minimising
``h^2 |f'''| / 6 + e_f / h`` gives ``h = (3 e_f / |f'''|)^(1/3)``, about 2.5e-5; measured on that bout,
``h = 1e-3`` is off by 3e-3 (truncation), ``1e-6`` by 1e-4 (rounding), and ``1e-5 .. 1e-4`` agree to
about 1e-5. The default is ``h = 3e-5 * max(1, |x|)`` (parameters are of order 1 to 10 in their
unconstrained units). The step actually taken, ``((x + h) - (x - h)) / 2``, is used in the quotient so
that the rounding of ``x +- h`` does not bias it. Exact-mode objectives have hard gates and are only
piecewise smooth; their finite differences mean something only away from gate switches, which is why
gradients are checked in smooth mode.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from tfmm.finite_differences import central_differences
from tfmm.records import Simulation, SimulationRequest, keep_requested_axes

from .objectives import all_objectives, objective as objective_value
from .simulate import rule_outputs_for, simulate_bout

DEFAULT_RELATIVE_STEP = 3e-5


def _param_sets(request: SimulationRequest) -> list[dict[str, np.ndarray]]:
    """The strategy's parameter sets, each name -> (n,) float64 (one set when unbatched)."""
    strategy = request.strategy
    params = {k: np.asarray(v, dtype=np.float64) for k, v in strategy.params.items()}
    if strategy.n_sets is None:
        return [params]
    return [{k: v[i] for k, v in params.items()} for i in range(strategy.n_sets)]


def _simulate_set(request: SimulationRequest, params: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Every bout (one per start) of one parameter set; the rule outputs are computed once."""
    outputs = rule_outputs_for(request, params)
    return [simulate_bout(request, int(s), params, outputs) for s in request.starts]


def _mean_objective(request: SimulationRequest, params: Mapping[str, np.ndarray], objective: str) -> float:
    """The objective averaged over the request's starts, for one parameter set."""
    bouts = _simulate_set(request, params)
    return float(np.mean([
        objective_value(objective, b["values"], b["reserves"][0], b["prices"]) for b in bouts
    ]))


class ReferenceBackend:
    """numpy namespace; simulate / metrics / value_and_grad_objective on the Numba reference."""

    name = "reference"
    xp = np

    def asarray(self, x: Any, dtype: str = "float64") -> np.ndarray:
        return np.asarray(x, dtype=np.dtype(dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def simulate(self, request: SimulationRequest) -> Simulation:
        """All bouts of the request. Leading axes (sets, starts) appear only when the strategy has a
        parameter-set axis / the caller passed an array of starts; arrays are numpy of ``request.dtype``
        (computed in float64)."""
        per_set = [_simulate_set(request, params) for params in _param_sets(request)]
        keep_starts = request.batched_starts
        dtype = np.dtype(request.dtype)

        def stack(key: str) -> np.ndarray:
            arr = np.stack([np.stack([b[key] for b in bouts]) for bouts in per_set])  # (sets, starts, ...)
            return keep_requested_axes(arr, request).astype(dtype, copy=False)

        first = per_set[0]
        prices = np.stack([b["prices"] for b in first]).astype(dtype, copy=False)
        timestamps = np.stack([b["timestamps"] for b in first])
        return Simulation(
            reserves=stack("reserves"), weights=stack("weights"), values=stack("values"),
            trades=stack("trades"), fees=stack("fees"),
            prices=prices if keep_starts else prices[0], timestamps=timestamps if keep_starts else timestamps[0],
            assets=request.assets, backend=self.name, mode=request.mode, request=request,
        )

    def simulator_for(self, request: SimulationRequest) -> Callable[[dict[str, Any]], Simulation]:
        """``params -> Simulation`` of ``request`` with its strategy's parameters replaced by ``params``."""
        return lambda params: self.simulate(dataclasses.replace(request, strategy=request.strategy.with_params(params)))

    def metrics(self, sim: Simulation) -> dict[str, Any]:
        """Every objective of docs/math.md section 6 per bout: name -> float, or an array with the
        simulation's leading axes when batched. ``R_0`` is ``reserves[..., 0, :]``."""
        sim = sim.to_numpy()
        values = np.asarray(sim.values, dtype=np.float64)
        reserves = np.asarray(sim.reserves, dtype=np.float64)
        prices = np.asarray(sim.prices, dtype=np.float64)
        lead = values.shape[:-1]
        batched_starts = prices.ndim == 3
        per_bout: dict[str, np.ndarray] = {}
        for index in np.ndindex(*lead):
            bout_prices = prices[index[-1]] if batched_starts else prices
            result = all_objectives(values[index], reserves[index][0], bout_prices)
            for name, value in result.items():
                per_bout.setdefault(name, np.empty(lead))[index] = value
        return {name: float(arr) if arr.ndim == 0 else arr for name, arr in per_bout.items()}

    def value_and_grad_objective(
        self, request: SimulationRequest, objective: str, relative_step: float = DEFAULT_RELATIVE_STEP,
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """The objective (mean over starts) in the request's mode and its gradient w.r.t. the params by
        central finite differences with step ``h = relative_step * max(1, |x|)`` (see the module
        docstring). Returns (float, dict of (n,)) or, with a parameter-set axis, ((sets,), dict of (sets, n))."""
        sets = _param_sets(request)
        values = np.array([_mean_objective(request, params, objective) for params in sets])
        per_set = [central_differences(lambda p: _mean_objective(request, p, objective), params,
                                       lambda x: relative_step * max(1.0, abs(x))) for params in sets]
        grads = {k: np.stack([g[k] for g in per_set]) for k in sets[0]}
        if request.strategy.n_sets is None:
            return float(values[0]), {k: v[0] for k, v in grads.items()}
        return values, grads

    def __repr__(self) -> str:
        return "ReferenceBackend(numba, float64)"


def make_backend() -> ReferenceBackend:
    return ReferenceBackend()


__all__ = ["ReferenceBackend", "make_backend", "DEFAULT_RELATIVE_STEP"]
