"""The torch training adapter: ``torch.optim.Adam`` / ``AdamW``, a ``LambdaLR`` schedule, per-set clipping and
plateau reduction, with the semantics of :mod:`tfmm.backends.jax.optim` (optax's
``chain(clip_by_global_norm(c), adam(schedule), reduce_on_plateau(...))`` ``vmap``-ed over parameter sets).

Decisions:

- **The optimizer state is a tree of (sets, ...) tensors**, the only copy of it: ``{"step": (sets,),
  "exp_avg": {name: (sets, ...)}, "exp_avg_sq": {name: (sets, ...)}}`` (``torch.optim.Adam``'s own state
  names) plus ``"plateau"`` when plateau reduction is on. Checkpoints, resume and the training loop's
  per-set reset work on this tree; ``step`` returns a new tree and leaves its inputs untouched.
- **One torch optimizer per parameter set, made for each update.** For set ``i`` the step builds an
  ``Adam`` (``AdamW``) over that set's own leaf tensors, loads row ``i`` of the tree with
  ``load_state_dict``, puts a ``LambdaLR`` at the set's step count, runs ``optimizer.step()`` and stacks the
  state back. Per-set optimizers because the learning rate differs between sets: plateau reduction scales
  each set's rate on its own, and a set whose optimizer state was reset restarts its schedule (optax counts
  the schedule per set too). Adam being element-wise, the update equals optax's to rounding.
- **The learning rate is applied once**: the param group's ``lr`` is ``learning_rate x multiplier(count)``
  (``LambdaLR``, the same curve as optax's schedule: cosine ``alpha = 0.01``; warmup_cosine linear from 0
  to the rate over the warmup steps, then cosine to ``0.01 x rate``) times the set's plateau scale, and
  nothing else scales the update. ``count`` is the set's Adam step count (optax's adam and schedule
  counters advance together, so one counter serves both). The objective is maximised
  (``maximize=True``); AdamW's decay ``p <- p (1 - lr wd)`` uses the same rate, as optax's ``adamw``.
- **Clipping per set**: ``g_i <- g_i min(1, c / ||g_i||)`` with ``||g_i||`` the norm over all of set
  ``i``'s parameters (optax's formula: ``torch.nn.utils.clip_grad_norm_`` divides by ``||g|| + 1e-6``
  instead, a relative difference of ``1e-6 / ||g||`` that is large for small gradients).
- **Plateau reduction** is :func:`plateau_update`, optax's ``contrib.reduce_on_plateau`` (cooldown 0,
  accumulation 1, min scale 0; the trainer passes rtol 0, atol 1e-8, as the JAX trainer does) vectorised
  over sets, fed minus the set's objective;
  the scale after this step's value multiplies this step's update. ``ReduceLROnPlateau`` is not used: it
  reduces after ``patience + 1`` steps without improvement (optax after ``patience``), skips reductions
  smaller than ``eps = 1e-8`` in absolute rate, and rewrites the group's ``lr``, which ``LambdaLR``
  overwrites on its next step.
- **NaN guard**: a set whose objective or gradient is not finite keeps its parameters and gets a fresh
  optimizer state (step 0, zero moments, plateau scale 1); the other sets update normally.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.utils._pytree as pytree

from tfmm.backends.torch.backend import torch_dtype
from tfmm.specs import TrainConfig

PLATEAU_RTOL, PLATEAU_ATOL = 1e-4, 0.0  # optax.contrib.reduce_on_plateau's defaults
# what the trainer passes (the JAX trainer passes the same): an absolute tolerance only, because the value fed
# is minus the objective, of either sign; optax's relative test counts a flat positive objective as improving
TRAIN_PLATEAU_RTOL, TRAIN_PLATEAU_ATOL = 0.0, 1e-8


def schedule_multiplier(config: TrainConfig) -> Callable[[int], float]:
    """count -> learning-rate multiplier m(count), so the rate is ``learning_rate x m(count)`` (optax's curves):

    constant 1; cosine ``a + (1 - a) (1 + cos(pi min(t, T) / T)) / 2`` with ``a = 0.01``, ``T = n_iterations``;
    warmup_cosine ``t / W`` for ``t < W``, then cosine over ``max(T, W + 1) - W`` steps at ``t - W``;
    exponential ``decay_rate^t``.
    """
    steps, alpha = config.n_iterations, 0.01

    def cosine(t: int, decay_steps: int) -> float:
        t = min(t, decay_steps)
        return alpha + (1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * t / decay_steps))

    if config.schedule == "constant":
        return lambda t: 1.0
    if config.schedule == "cosine":
        return lambda t: cosine(t, steps)
    if config.schedule == "warmup_cosine":
        warmup = config.warmup_steps or max(1, steps // 10)
        decay = max(steps, warmup + 1) - warmup
        return lambda t: t / warmup if t < warmup else cosine(t - warmup, decay)
    rate = config.decay_rate
    return lambda t: rate ** t


# --- plateau reduction (optax.contrib.reduce_on_plateau, per set) -------------------------------------

def plateau_init(n_sets: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Fresh plateau state per set: scale 1, best value +inf, counters and running average 0."""
    return {
        "scale": torch.ones(n_sets, dtype=dtype), "best_value": torch.full((n_sets,), math.inf, dtype=dtype),
        "plateau_count": torch.zeros(n_sets, dtype=torch.int32),
        "cooldown_count": torch.zeros(n_sets, dtype=torch.int32),
        "count": torch.zeros(n_sets, dtype=torch.int32), "avg_value": torch.zeros(n_sets, dtype=dtype),
    }


def plateau_update(state: dict[str, torch.Tensor], value: torch.Tensor, *, factor: float, patience: int,
                   rtol: float = PLATEAU_RTOL, atol: float = PLATEAU_ATOL, cooldown: int = 0,
                   accumulation_size: int = 1, min_scale: float = 0.0) -> dict[str, torch.Tensor]:
    """One value per set (lower is better) into the plateau state; element-wise over sets, as optax's.

    avg <- (n avg + value) / (n + 1); when n + 1 reaches ``accumulation_size``: improved iff
    ``avg < (1 - rtol) best - atol``; the plateau count restarts on improvement, else grows; outside a
    cooldown, reaching ``patience`` sets ``scale <- max(scale x factor, min_scale)``, restarts the count and
    starts a cooldown of ``cooldown`` values (during which the count stays 0); then avg and n restart.
    """
    count = state["count"] + 1
    avg = (state["count"] * state["avg_value"] + value.to(state["avg_value"].dtype)) / count
    improved = avg < (1 - rtol) * state["best_value"] - atol
    best = torch.where(improved, avg, state["best_value"])
    plateau = torch.where(improved, 0, state["plateau_count"] + 1).to(torch.int32)
    cooling = state["cooldown_count"] > 0
    hit = ~cooling & (plateau == patience)
    scale = torch.where(hit, torch.clamp(state["scale"] * factor, min=min_scale), state["scale"])
    cooldown_count = torch.where(cooling, state["cooldown_count"] - 1, torch.where(hit, cooldown, 0))
    evaluated = {
        "scale": scale, "best_value": best, "plateau_count": torch.where(cooling | hit, 0, plateau).to(torch.int32),
        "cooldown_count": cooldown_count.to(torch.int32), "count": torch.zeros_like(count),
        "avg_value": torch.zeros_like(avg),
    }
    accumulating = {**state, "count": count, "avg_value": avg}
    due = count == accumulation_size
    return {k: torch.where(due, evaluated[k], accumulating[k]) for k in state}


# --- per-set pieces ----------------------------------------------------------------------------------

def clip_factor(norm: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Global-norm clipping factor per set: ``1`` if ``||g|| < c`` else ``c / ||g||`` (no clipping: 1)."""
    if max_norm is None:
        return torch.ones_like(norm)
    return torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)


class TorchTrainer:
    """Objective, gradient, NaN guard and one optimizer update per parameter set (see module docstring)."""

    def __init__(self, engine: Any, request: Any, config: TrainConfig) -> None:
        from tfmm.engine import bout_config

        self.config = config
        self._dtype = torch_dtype(config.dtype)
        self._inputs = engine.inputs(request)
        self._int_dtype = self._inputs["starts"].dtype
        self.multiplier = schedule_multiplier(config)
        per_set_fn = engine.objective_per_set(bout_config(request), config.objective)
        clip_objective = config.clip_objective

        def objective(params, prices, chunk_prices, fee, gas, arb_fee, w_init, starts):
            per_set = per_set_fn(params, prices, chunk_prices, fee, gas, arb_fee, starts, w_init)
            if clip_objective is not None:
                per_set = torch.clamp(per_set, -clip_objective, clip_objective)
            return torch.sum(per_set), per_set

        self._value_and_grad = engine.bk.jit_value_and_grad(objective, has_aux=True)

    # -- the trainer interface (as JaxTrainer) -----------------------------------------------------------
    def static_inputs(self, request: Any = None) -> tuple:
        """Arrays that stay fixed during training: prices, chunk prices, per-minute rates, w_init."""
        x = self._inputs
        return (x["prices"], x["chunk_prices"], x["fee"], x["gas"], x["arb_fee"], x["w_init"])

    def starts(self, starts: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(starts), dtype=self._int_dtype)

    def init(self, params: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Fresh state for every set: step 0, zero moments (and a fresh plateau state)."""
        n_sets = next(iter(params.values())).shape[0]
        state: dict[str, Any] = {
            "step": torch.zeros(n_sets, dtype=torch.int64),
            "exp_avg": {k: torch.zeros_like(v) for k, v in params.items()},
            "exp_avg_sq": {k: torch.zeros_like(v) for k, v in params.items()},
        }
        if self.config.plateau_patience > 0:
            state["plateau"] = plateau_init(n_sets, self._dtype)
        return state

    def step(self, params: dict[str, torch.Tensor], state: dict[str, Any],
             inputs: tuple) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        """Objective and gradient of all sets, then each finite set's clipped Adam update at its own rate."""
        (_, per_set), grads = self._value_and_grad(params, *inputs)
        finite = torch.isfinite(per_set)
        for g in grads.values():
            finite = finite & torch.isfinite(g).reshape(g.shape[0], -1).all(dim=1)
        group_norms = {k: torch.sqrt(torch.sum(g * g, dim=tuple(range(1, g.ndim)))) for k, g in grads.items()}
        grad_norm = torch.sqrt(sum(n * n for n in group_norms.values()))
        stats = {"objective": per_set, "finite": finite, "grad_norm": grad_norm, "group_norms": group_norms}

        fresh = self.init(params)
        scale = torch.ones_like(per_set)
        new_state: dict[str, Any] = {}
        if "plateau" in state:
            plateau = plateau_update(state["plateau"], -torch.where(finite, per_set, torch.zeros_like(per_set)),
                                     factor=self.config.plateau_factor, patience=self.config.plateau_patience,
                                     rtol=TRAIN_PLATEAU_RTOL, atol=TRAIN_PLATEAU_ATOL)
            new_state["plateau"] = {k: torch.where(finite, v, fresh["plateau"][k]) for k, v in plateau.items()}
            scale = new_state["plateau"]["scale"]
        factor = clip_factor(grad_norm, self.config.clip_norm)
        names = list(params)
        new_params = {k: v.detach().clone() for k, v in params.items()}
        new_state.update({"step": fresh["step"].clone(),
                          "exp_avg": {k: v.clone() for k, v in fresh["exp_avg"].items()},
                          "exp_avg_sq": {k: v.clone() for k, v in fresh["exp_avg_sq"].items()}})
        for i in np.flatnonzero(finite.numpy()):
            row = self._update_one(
                [new_params[k][i] for k in names], [grads[k][i] * factor[i].to(grads[k].dtype) for k in names],
                int(state["step"][i]), [state["exp_avg"][k][i] for k in names],
                [state["exp_avg_sq"][k][i] for k in names], float(scale[i]))
            for j, k in enumerate(names):
                new_params[k][i] = row["params"][j]
                new_state["exp_avg"][k][i] = row["exp_avg"][j]
                new_state["exp_avg_sq"][k][i] = row["exp_avg_sq"][j]
            new_state["step"][i] = row["step"]
        return new_params, new_state, stats

    def objective(self, params: dict[str, torch.Tensor], state: Any, inputs: tuple) -> np.ndarray:
        """Per-set objective (as the step sees it: training mode, ``clip_objective`` applied) of ``params``
        on the bouts of ``inputs``, nothing updated (the step's value-and-gradient function, gradient dropped)."""
        (_, per_set), _ = self._value_and_grad(params, *inputs)
        return per_set.detach().cpu().numpy()

    def learning_rate(self, step: int, state: Any) -> np.ndarray:
        """Effective learning rate per set at ``step``: schedule(step) x plateau scale."""
        lr = self.config.learning_rate * self.multiplier(step)
        if "plateau" not in state:
            return np.full(1, lr)
        return lr * state["plateau"]["scale"].detach().cpu().numpy().astype(np.float64)

    def to_numpy(self, tree: Any) -> Any:
        return pytree.tree_map(lambda x: x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x),
                               tree)

    def from_numpy(self, tree: Any, dtype: str) -> Any:
        dt = torch_dtype(dtype)

        def conv(x: Any) -> torch.Tensor:
            x = np.array(x)  # a copy: later changes to the numpy array do not reach the tensor
            return torch.as_tensor(x, dtype=dt) if np.issubdtype(x.dtype, np.floating) else torch.as_tensor(x)

        return pytree.tree_map(conv, tree)

    # -- one set's update with torch.optim -----------------------------------------------------------------
    def _optimizer(self, leaves: list[torch.Tensor]) -> torch.optim.Optimizer:
        cfg = self.config
        if cfg.optimizer == "adam":
            return torch.optim.Adam(leaves, lr=cfg.learning_rate, maximize=True)
        return torch.optim.AdamW(leaves, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, maximize=True)

    def _update_one(self, leaves: list[torch.Tensor], grads: list[torch.Tensor], count: int,
                    exp_avg: list[torch.Tensor], exp_avg_sq: list[torch.Tensor], scale: float) -> dict[str, Any]:
        """One set's update: its optimizer and schedule rebuilt at ``count`` from its row of the state."""
        leaves = [p.detach().clone() for p in leaves]
        optimizer = self._optimizer(leaves)
        if count > 0:  # at count 0 torch creates the zero moments itself
            saved = optimizer.state_dict()
            saved["state"] = {j: {"step": torch.tensor(float(count)), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}
                              for j, (m, v) in enumerate(zip(exp_avg, exp_avg_sq))}
            optimizer.load_state_dict(saved)
        for group in optimizer.param_groups:
            group["initial_lr"] = self.config.learning_rate
        torch.optim.lr_scheduler.LambdaLR(optimizer, self.multiplier, last_epoch=count - 1)  # lr x m(count)
        for group in optimizer.param_groups:
            group["lr"] *= scale  # the plateau scale: the rate's only other factor
        for p, g in zip(leaves, grads):
            p.grad = g
        optimizer.step()
        states = [optimizer.state[p] for p in leaves]
        return {"params": leaves, "exp_avg": [s["exp_avg"] for s in states],
                "exp_avg_sq": [s["exp_avg_sq"] for s in states], "step": count + 1}


def make_trainer(engine: Any, request: Any, config: TrainConfig) -> TorchTrainer:
    return TorchTrainer(engine, request, config)
