"""The JAX training adapter: optax optimizer chain and one compiled, vmapped training step.

The learning rate is applied exactly once, by ``optax.adam(schedule)`` (or ``adamw``) inside
``optax.chain(clip_by_global_norm(c), adam(schedule), reduce_on_plateau(...))``; plateau reduction
scales the updates inside the optimizer. Every parameter set has its own optimizer state: the
optimizer is ``vmap``-ed over the leading set axis, so clipping and Adam statistics never mix sets.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tfmm.specs import TrainConfig

# Plateau test of the training loop: the value fed is minus the objective, which has either sign, so the
# tolerance is absolute only (an improvement is a value below the best by more than 1e-8). optax's default
# relative tolerance, ``value < (1 - rtol) best``, counts a flat or slightly worse objective as an
# improvement whenever the objective is positive (best < 0), and then never cuts the rate.
# backends/torch/optim.py passes the same two numbers (docs/decisions.md).
PLATEAU_RTOL, PLATEAU_ATOL = 0.0, 1e-8


def learning_rate_schedule(config: TrainConfig) -> Callable[[Any], Any]:
    """Step -> learning rate for ``config.schedule`` (constant, cosine, warmup_cosine, exponential)."""
    lr, steps = config.learning_rate, config.n_iterations
    if config.schedule == "constant":
        return optax.constant_schedule(lr)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=steps, alpha=0.01)
    if config.schedule == "warmup_cosine":
        warmup = config.warmup_steps or max(1, steps // 10)
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
                                                  end_value=0.01 * lr)
    return optax.exponential_decay(lr, transition_steps=1, decay_rate=config.decay_rate)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformationExtraArgs:
    """clip_by_global_norm (when clip_norm is set) -> adam/adamw(schedule) -> reduce_on_plateau (when
    plateau_patience > 0). AdamW decays every leaf of ``params``: they are all trainable (the initial
    weights are not parameters)."""
    schedule = learning_rate_schedule(config)
    parts = []
    if config.clip_norm is not None:
        parts.append(optax.clip_by_global_norm(config.clip_norm))
    if config.optimizer == "adam":
        parts.append(optax.adam(schedule))
    else:
        parts.append(optax.adamw(schedule, weight_decay=config.weight_decay))
    if config.plateau_patience > 0:
        parts.append(optax.contrib.reduce_on_plateau(factor=config.plateau_factor, patience=config.plateau_patience,
                                                     rtol=PLATEAU_RTOL, atol=PLATEAU_ATOL))
    return optax.chain(*parts)


def plateau_scale(state: Any) -> np.ndarray | None:
    """The per-set learning-rate scale of reduce_on_plateau in an optimizer state (None if absent)."""
    for leaf_state in jax.tree_util.tree_leaves(state, is_leaf=lambda x: hasattr(x, "scale") and hasattr(x, "plateau_count")):
        if hasattr(leaf_state, "scale") and hasattr(leaf_state, "plateau_count"):
            return np.asarray(leaf_state.scale)
    return None


def _set_mask(finite: Any, leaf: Any) -> Any:
    """(sets,) -> broadcastable against ``leaf`` (sets, ...)."""
    return finite.reshape((-1,) + (1,) * (jnp.ndim(leaf) - 1))


def clipped_objective(objective_per_set: Callable, clip_objective: float | None) -> Callable:
    """params, *inputs -> (sum over sets, per-set objective), each set's objective clipped to
    ``[-clip_objective, clip_objective]`` when set (its gradient is then 0 outside)."""

    def objective(params: Any, *inputs: Any) -> tuple[Any, Any]:
        per_set = objective_per_set(params, *inputs)
        if clip_objective is not None:
            per_set = jnp.clip(per_set, -clip_objective, clip_objective)
        return jnp.sum(per_set), per_set

    return objective


def train_step(objective: Callable, optimizer: optax.GradientTransformationExtraArgs, params: Any, state: Any,
               *inputs: Any) -> tuple[Any, Any, dict[str, Any]]:
    """One update of every parameter set, pure: ``(params, state, stats)`` from ``(params, state)``.

    Gradient ascent on ``objective`` (see :func:`clipped_objective`); the optimizer, ``vmap``-ed over sets,
    is fed the descent direction ``-g`` and, for plateau reduction, the value ``-objective``. A set whose
    objective or gradient is not finite keeps its parameters and gets a fresh optimizer state. ``stats``:
    per-set objective, finite flag, global gradient norm ``sqrt(sum_k ||g_k||^2)`` and per-name norms.
    """
    (_, per_set), grads = jax.value_and_grad(objective, has_aux=True)(params, *inputs)
    finite = jnp.isfinite(per_set)
    for g in jax.tree_util.tree_leaves(grads):
        finite = finite & jnp.all(jnp.isfinite(g), axis=tuple(range(1, g.ndim)))
    descent = jax.tree_util.tree_map(lambda g: jnp.where(_set_mask(finite, g), -g, 0.0), grads)
    updates, new_state = jax.vmap(lambda u, s, p, v: optimizer.update(u, s, p, value=v))(
        descent, state, params, -jnp.where(finite, per_set, 0.0))
    keep = lambda new, old: jnp.where(_set_mask(finite, new), new, old)  # noqa: E731
    new_params = jax.tree_util.tree_map(keep, optax.apply_updates(params, updates), params)
    new_state = jax.tree_util.tree_map(keep, new_state, jax.vmap(optimizer.init)(params))
    group_norms = {k: jnp.sqrt(jnp.sum(g * g, axis=tuple(range(1, g.ndim)))) for k, g in grads.items()}
    global_norm = jnp.sqrt(sum(n * n for n in group_norms.values()))
    stats = {"objective": per_set, "finite": finite, "grad_norm": global_norm, "group_norms": group_norms}
    return new_params, new_state, stats


class JaxTrainer:
    """One jitted :func:`train_step` for all parameter sets and bouts, and the conversions around it."""

    def __init__(self, engine: Any, request: Any, config: TrainConfig) -> None:
        from tfmm.engine import bout_config

        self.config = config
        self._inputs = engine.inputs(request)
        self._int_dtype = self._inputs["starts"].dtype
        per_set_fn = engine.objective_per_set(bout_config(request), config.objective)

        def objective_per_set(params, prices, chunk_prices, fee, gas, arb_fee, w_init, starts):
            return per_set_fn(params, prices, chunk_prices, fee, gas, arb_fee, starts, w_init)

        self.optimizer = make_optimizer(config)
        self.schedule = learning_rate_schedule(config)
        self._init = jax.jit(jax.vmap(self.optimizer.init))
        objective = clipped_objective(objective_per_set, config.clip_objective)
        self._step = jax.jit(functools.partial(train_step, objective, self.optimizer))

    def static_inputs(self, request: Any = None) -> tuple:
        """Arrays that stay fixed during training: prices, chunk prices, per-minute rates, w_init."""
        x = self._inputs
        return (x["prices"], x["chunk_prices"], x["fee"], x["gas"], x["arb_fee"], x["w_init"])

    def starts(self, starts: np.ndarray) -> Any:
        return jnp.asarray(starts, dtype=self._int_dtype)

    def init(self, params: dict[str, Any]) -> Any:
        return self._init(params)

    def step(self, params: dict[str, Any], state: Any, inputs: tuple) -> tuple[Any, Any, dict[str, Any]]:
        return self._step(params, state, *inputs)

    def objective(self, params: dict[str, Any], state: Any, inputs: tuple) -> np.ndarray:
        """Per-set objective (as the step sees it: training mode, ``clip_objective`` applied) of ``params``
        on the bouts of ``inputs``, nothing updated. Runs the compiled step and drops its update, so a batch
        of the training batch's size costs no compilation."""
        _, _, stats = self._step(params, state, *inputs)
        return np.asarray(stats["objective"])

    def learning_rate(self, step: int, state: Any) -> np.ndarray:
        """Effective learning rate per set at ``step``: schedule(step) x plateau scale."""
        lr = float(self.schedule(step))
        scale = plateau_scale(state)
        return np.full(1, lr) if scale is None else lr * scale

    def to_numpy(self, tree: Any) -> Any:
        return jax.tree_util.tree_map(np.asarray, tree)

    def from_numpy(self, tree: Any, dtype: str) -> Any:
        def conv(x):
            x = np.asarray(x)
            return jnp.asarray(x, dtype=jnp.dtype(dtype)) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x)
        return jax.tree_util.tree_map(conv, tree)


def make_trainer(engine: Any, request: Any, config: TrainConfig) -> JaxTrainer:
    return JaxTrainer(engine, request, config)
