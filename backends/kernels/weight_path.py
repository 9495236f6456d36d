"""The coarse weight recursion as one compiled loop over chunks, forward and reverse (Numba, CPU).

A second implementation of :func:`tfmm.core.weights.coarse_weights` (math.md 3.2, docs/smooth_mode.md), held
to it by tests (``tests/test_weight_kernel.py``). Weights are dimensionless; ``delta`` is per minute.

Per chunk ``k``, from the carry ``a`` (``a_0 = w_init``) and the rule output ``r_k``:

    u0 = a + r_k  (delta rule)   or   u0 = alpha a + (1 - alpha) r_k  (weight rule)
    u = u0 / sum(u0)                                          (a zero sum divides by 1)
    n passes of the guardrail from v = u, pinned p = 0:
        x = clip(v, lo, hi)              | smooth: lo + sp(v - lo) - sp(v - hi), sp(z) = tau log(1 + e^(z/tau))
        m = 1[x <= lo]                   | smooth: 1 - (1 - p)(1 - sigmoid((lo - v) / tau)), p <- m
        v = m lo + (1 - m) x (1 - lo sum m) / sum((1 - m) x)  (a zero denominator divides by 1)
    d = (v - a) / I,  ratio = d / max_change
    delta = d / max(1, max |ratio|)      | smooth: d / (tau logsumexp([z / tau, 1 / tau])), z = sqrt(ratio^2 + tau^2)
    emit (a, delta);  a <- a + I delta

Reverse (vector-Jacobian product) with respect to ``w_init``, the rule outputs and ``alpha``, by hand, one
chunk at a time from the last: each chunk's forward is recomputed from its stored carry ``a_k`` (an output
already), keeping the guardrail's pass inputs, so the only memory is the outputs themselves. With the
cotangent ``c`` of the next carry, ``delta_bar = g_delta + I c`` and ``a_bar = g_a + c + (terms through d
and u0)``. The exact mode is the pathwise derivative with the indicators ``m`` held fixed, with JAX's autodiff rules
at ties, which are not rare here: with two assets ``|ratio_0| = |ratio_1|`` always (the changes sum to 0),
and an entry pinned at ``lo`` leaves the other exactly at ``hi``. So ``max |ratio|`` splits its cotangent
equally among the entries that attain it, ``max(biggest, 1)`` and ``clip`` give half at a tie, and ``|x|``
has derivative ``sign(x)`` (0 at 0).

Everything is computed in float64; float32 callers are converted at the wrapper.
"""

from __future__ import annotations

import math
import os

import numba as nb
import numpy as np

from tfmm.backends.kernels.fee_path import _flat, sum_to_shape  # one rule for kernel inputs

KINDS = {"delta": 0, "weight": 1}

_CACHE = os.environ.get("TFMM_NUMBA_CACHE", "1") != "0"
_jit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy")
_ijit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy", inline="always")
_pjit = nb.njit(cache=_CACHE, fastmath=False, error_model="numpy", parallel=True)


# ----------------------------------------------------------------------------------------------------------
# scalar helpers


@_ijit
def _softplus(z, tau):
    """tau log(1 + exp(z / tau)) as tau (max(y, 0) + log1p(exp(-|y|))), y = z / tau."""
    y = z / tau
    return tau * (max(y, 0.0) + math.log1p(math.exp(-abs(y))))


@_ijit
def _sigmoid(y):
    if y >= 0.0:
        return 1.0 / (1.0 + math.exp(-y))
    e = math.exp(y)
    return e / (1.0 + e)


@_ijit
def _clip_slope(v, lo, hi):
    """d clip(v, lo, hi) / dv as JAX's autodiff of min(max(v, lo), hi): 1 inside, 1/2 at a bound, 0 outside."""
    if lo < v < hi:
        return 1.0
    return 0.5 if v == lo or v == hi else 0.0


@_ijit
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


# ----------------------------------------------------------------------------------------------------------
# one chunk, forward (keeps what its reverse needs in the scratch arrays)


@_ijit
def _step(a, r, alpha, kind, lo, hi, max_change, period, smooth, tau, u0, V, PIN, delta):
    """One chunk from carry ``a`` (n,) and output ``r`` (n,): writes ``delta`` (n,) and returns nothing.
    Scratch: ``u0`` (n,), ``V`` (n + 1, n) the guardrail's pass inputs and result, ``PIN`` (n + 1, n) the
    pinned indicator entering each pass (smooth) or each pass's indicator (exact)."""
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        u0[i] = a[i] + r[i] if kind == 0 else alpha[i] * a[i] + (1.0 - alpha[i]) * r[i]
        total += u0[i]
    norm = total if total != 0.0 else 1.0
    for i in range(n):
        V[0, i] = u0[i] / norm
        PIN[0, i] = 0.0
    for j in range(n):
        n_pinned = 0.0
        free_sum = 0.0
        for i in range(n):
            v = V[j, i]
            if smooth:
                x = lo + _softplus(v - lo, tau) - _softplus(v - hi, tau)
                m = 1.0 - (1.0 - PIN[j, i]) * (1.0 - _sigmoid((lo - v) / tau))
            else:
                x = min(max(v, lo), hi)
                m = 1.0 if x <= lo else 0.0
            PIN[j + 1, i] = m
            V[j + 1, i] = x  # x for now, the pass's output below
            n_pinned += m
            free_sum += (1.0 - m) * x
        den = free_sum if free_sum != 0.0 else 1.0
        scale = (1.0 - lo * n_pinned) / den
        for i in range(n):
            m = PIN[j + 1, i]
            V[j + 1, i] = m * lo + (1.0 - m) * V[j + 1, i] * scale
    limit = _speed_limit(V[n], a, period, max_change, smooth, tau)[0]
    for i in range(n):
        delta[i] = (V[n, i] - a[i]) / period / limit


@_ijit
def _speed_limit(target, a, period, max_change, smooth, tau):
    """(L, m, acc) with delta = d / L, d = (target - a) / I, ratio = d / max_change. Exact: L = max(1, m),
    m = max |ratio|, acc = 0. Smooth: L = tau (m + log acc), the logsumexp of [z / tau, 1 / tau] with
    z = sqrt(ratio^2 + tau^2), m its largest term and acc = sum exp(term - m)."""
    n = a.shape[0]
    if not smooth:
        biggest = 0.0
        for i in range(n):
            biggest = max(biggest, abs((target[i] - a[i]) / period / max_change))
        return max(biggest, 1.0), biggest, 0.0
    lse_max = 1.0 / tau
    for i in range(n):
        ratio = (target[i] - a[i]) / period / max_change
        lse_max = max(lse_max, math.sqrt(ratio * ratio + tau * tau) / tau)
    acc = math.exp(1.0 / tau - lse_max)
    for i in range(n):
        ratio = (target[i] - a[i]) / period / max_change
        acc += math.exp(math.sqrt(ratio * ratio + tau * tau) / tau - lse_max)
    return tau * (lse_max + math.log(acc)), lse_max, acc


# ----------------------------------------------------------------------------------------------------------
# one chunk, reverse


@_ijit
def _step_adjoint(a, r, alpha, kind, lo, hi, max_change, period, smooth, tau, u0, V, PIN, delta, delta_bar,
                  a_bar, r_bar, alpha_bar, vb, pb, xs):
    """Given ``delta_bar`` (n,), adds the cotangents of ``a`` to ``a_bar``, of ``r`` to ``r_bar`` and of
    ``alpha`` to ``alpha_bar``; the scratch arrays hold :func:`_step`'s forward of this chunk. ``vb``, ``pb``,
    ``xs`` are (n,) work arrays. The forward's stages in reverse: speed limit, guardrail passes, normalise."""
    n = a.shape[0]
    _speed_limit_adjoint(V[n], a, max_change, period, smooth, tau, delta_bar, vb)
    # d = (target - a) / I
    for i in range(n):
        a_bar[i] -= vb[i] / period
        vb[i] = vb[i] / period  # target_bar
        pb[i] = 0.0  # cotangent of the pinned indicator entering the next pass
    for j in range(n - 1, -1, -1):
        _guardrail_pass_adjoint(V[j], PIN[j], PIN[j + 1], lo, hi, smooth, tau, vb, pb, xs)
    _mix_adjoint(a, r, alpha, kind, u0, vb, a_bar, r_bar, alpha_bar)


@_ijit
def _speed_limit_adjoint(target, a, max_change, period, smooth, tau, delta_bar, d_bar):
    """``d_bar`` (n,), the cotangent of ``d = (target - a) / I`` from ``delta_bar`` through ``delta = d / L``
    (:func:`_speed_limit`: at an exact-mode tie the derivative is split as JAX's ``max`` splits it)."""
    n = a.shape[0]
    limit, top, acc = _speed_limit(target, a, period, max_change, smooth, tau)
    limit_bar = 0.0
    for i in range(n):
        limit_bar -= delta_bar[i] * ((target[i] - a[i]) / period) / (limit * limit)
    if smooth:
        for i in range(n):
            ratio = (target[i] - a[i]) / period / max_change
            z = math.sqrt(ratio * ratio + tau * tau)
            weight = math.exp(z / tau - top) / acc  # d limit / d z_i
            d_bar[i] = delta_bar[i] / limit + limit_bar * weight * ratio / z / max_change
        return
    for i in range(n):
        d_bar[i] = delta_bar[i] / limit
    if top < 1.0:
        return
    if top == 1.0:
        limit_bar *= 0.5  # max(biggest, 1) at a tie
    ties = 0.0
    for i in range(n):
        if abs((target[i] - a[i]) / period / max_change) == top:
            ties += 1.0
    for i in range(n):
        if abs((target[i] - a[i]) / period / max_change) == top:
            d_bar[i] += limit_bar / ties * _sign(target[i] - a[i]) / max_change


@_ijit
def _guardrail_pass_adjoint(v_in, pin_in, pin_out, lo, hi, smooth, tau, vb, pb, xs):
    """One guardrail pass in reverse: ``vb`` (the pass output's cotangent) becomes its input's, ``pb`` the
    pinned indicator's cotangent passed on to the previous pass; ``xs`` (n,) scratch."""
    n = v_in.shape[0]
    n_pinned = 0.0
    free_sum = 0.0
    for i in range(n):
        v = v_in[i]
        if smooth:
            xs[i] = lo + _softplus(v - lo, tau) - _softplus(v - hi, tau)
        else:
            xs[i] = min(max(v, lo), hi)
        n_pinned += pin_out[i]
        free_sum += (1.0 - pin_out[i]) * xs[i]
    den = free_sum if free_sum != 0.0 else 1.0
    num = 1.0 - lo * n_pinned
    scale = num / den
    scale_bar = 0.0
    for i in range(n):
        scale_bar += vb[i] * (1.0 - pin_out[i]) * xs[i]
    num_bar = scale_bar / den
    den_bar = -scale_bar * num / (den * den) if free_sum != 0.0 else 0.0
    for i in range(n):
        m = pin_out[i]
        v = v_in[i]
        free_bar = vb[i] * scale + den_bar
        m_bar = vb[i] * lo - lo * num_bar - free_bar * xs[i] + pb[i]
        x_bar = free_bar * (1.0 - m)
        if smooth:
            sig = _sigmoid((lo - v) / tau)
            dx = _sigmoid((v - lo) / tau) - _sigmoid((v - hi) / tau)
            pb[i] = m_bar * (1.0 - sig)  # to the previous pass's indicator
            vb[i] = x_bar * dx - m_bar * (1.0 - pin_in[i]) * sig * (1.0 - sig) / tau
        else:
            pb[i] = 0.0
            vb[i] = x_bar * _clip_slope(v, lo, hi)


@_ijit
def _mix_adjoint(a, r, alpha, kind, u0, vb, a_bar, r_bar, alpha_bar):
    """``u = u0 / sum(u0)`` and ``u0 = a + r`` (delta rules) or ``alpha a + (1 - alpha) r`` (weight rules) in
    reverse, from ``vb`` the cotangent of ``u``."""
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        total += u0[i]
    if total != 0.0:
        dot = 0.0
        for i in range(n):
            dot += vb[i] * u0[i]
        for i in range(n):
            vb[i] = vb[i] / total - dot / (total * total)
    for i in range(n):
        if kind == 0:
            a_bar[i] += vb[i]
            r_bar[i] += vb[i]
        else:
            a_bar[i] += alpha[i] * vb[i]
            r_bar[i] += (1.0 - alpha[i]) * vb[i]
            alpha_bar[i] += vb[i] * (a[i] - r[i])


# ----------------------------------------------------------------------------------------------------------
# trajectories


@_ijit
def _trajectory(w0, R, alpha, cfg, A, D):
    kind, lo, hi, max_change, period, smooth, tau = cfg
    n = w0.shape[0]
    u0 = np.empty(n)
    V = np.empty((n + 1, n))
    PIN = np.empty((n + 1, n))
    a = w0.copy()
    delta = np.empty(n)
    for k in range(R.shape[0]):
        _step(a, R[k], alpha, kind, lo, hi, max_change, period, smooth, tau, u0, V, PIN, delta)
        for i in range(n):
            A[k, i] = a[i]
            D[k, i] = delta[i]
            a[i] = a[i] + period * delta[i]


@_ijit
def _trajectory_adjoint(w0, R, alpha, cfg, A, G_A, G_D, g_w0, G_R, g_alpha):
    kind, lo, hi, max_change, period, smooth, tau = cfg
    n = w0.shape[0]
    u0 = np.empty(n)
    V = np.empty((n + 1, n))
    PIN = np.empty((n + 1, n))
    delta = np.empty(n)
    delta_bar = np.empty(n)
    carry_bar = np.zeros(n)  # cotangent of a_{k+1}
    a_bar = np.empty(n)
    vb = np.empty(n)
    pb = np.empty(n)
    xs = np.empty(n)
    for k in range(R.shape[0] - 1, -1, -1):
        a = A[k]
        _step(a, R[k], alpha, kind, lo, hi, max_change, period, smooth, tau, u0, V, PIN, delta)
        for i in range(n):
            delta_bar[i] = G_D[k, i] + period * carry_bar[i]
            a_bar[i] = G_A[k, i] + carry_bar[i]
        _step_adjoint(a, R[k], alpha, kind, lo, hi, max_change, period, smooth, tau, u0, V, PIN, delta,
                      delta_bar, a_bar, G_R[k], g_alpha, vb, pb, xs)
        for i in range(n):
            carry_bar[i] = a_bar[i]
    for i in range(n):
        g_w0[i] = carry_bar[i]


@_jit
def _forward_batch(w0, R, alpha, cfg, A, D):
    for b in range(w0.shape[0]):
        _trajectory(w0[b], R[b], alpha[b], cfg, A[b], D[b])


@_pjit
def _forward_parallel(w0, R, alpha, cfg, A, D):
    for b in nb.prange(w0.shape[0]):
        _trajectory(w0[b], R[b], alpha[b], cfg, A[b], D[b])


@_jit
def _adjoint_batch(w0, R, alpha, cfg, A, G_A, G_D, g_w0, G_R, g_alpha):
    for b in range(w0.shape[0]):
        _trajectory_adjoint(w0[b], R[b], alpha[b], cfg, A[b], G_A[b], G_D[b], g_w0[b], G_R[b], g_alpha[b])


@_pjit
def _adjoint_parallel(w0, R, alpha, cfg, A, G_A, G_D, g_w0, G_R, g_alpha):
    for b in nb.prange(w0.shape[0]):
        _trajectory_adjoint(w0[b], R[b], alpha[b], cfg, A[b], G_A[b], G_D[b], g_w0[b], G_R[b], g_alpha[b])


# ----------------------------------------------------------------------------------------------------------
# numpy entry points: any leading batch axes, broadcast against each other

PARALLEL_MIN_BATCH = 4  # below this a parallel region costs more than it saves (a spinning idle worker)


class WeightPathSettings:
    """The static part of a weight-path call (hashable). ``kind``: "delta" or "weight"; ``w_min``,
    ``w_max`` the guardrail; ``max_change`` per minute; ``interpolation_period`` I in minutes; ``smooth``
    and ``temperature`` (``Smoothing.weight_temperature``, read only when smooth)."""

    __slots__ = ("kind", "w_min", "w_max", "max_change", "interpolation_period", "smooth", "temperature")

    def __init__(self, kind: str, w_min: float, w_max: float, max_change: float, interpolation_period: int,
                 smooth: bool, temperature: float = 1e-4) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is invalid: allowed one of {', '.join(map(repr, KINDS))}")
        if not 0.0 <= w_min < w_max <= 1.0:
            raise ValueError(f"w_min={w_min}, w_max={w_max} are invalid: allowed 0 <= w_min < w_max <= 1")
        if not max_change > 0 or not interpolation_period >= 1 or not temperature > 0:
            raise ValueError(f"max_change={max_change}, interpolation_period={interpolation_period}, "
                             f"temperature={temperature}: each must be > 0 (the period >= 1)")
        self.kind = kind
        self.w_min, self.w_max, self.max_change = float(w_min), float(w_max), float(max_change)
        self.interpolation_period = int(interpolation_period)
        self.smooth = bool(smooth)
        self.temperature = float(temperature)

    def _key(self) -> tuple:
        return (self.kind, self.w_min, self.w_max, self.max_change, self.interpolation_period, self.smooth,
                self.temperature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WeightPathSettings) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "WeightPathSettings(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"

    def _cfg(self) -> tuple:
        return (KINDS[self.kind], self.w_min, self.w_max, self.max_change, float(self.interpolation_period),
                self.smooth, self.temperature)


def _shapes(w_init, outputs, alpha) -> tuple[tuple[int, ...], int, int]:
    n = w_init.shape[-1]
    if outputs.ndim < 2 or outputs.shape[-1] != n or alpha.shape[-1] != n:
        raise ValueError(f"weight path: w_init (..., n), outputs (..., Nc, n) and alpha (..., n) need the same n; "
                         f"got {w_init.shape}, {outputs.shape}, {alpha.shape}")
    batch = np.broadcast_shapes(w_init.shape[:-1], outputs.shape[:-2], alpha.shape[:-1])
    return batch, outputs.shape[-2], n


def forward(settings: WeightPathSettings, w_init, outputs, alpha) -> tuple[np.ndarray, np.ndarray]:
    """``(a, delta)``, each (B..., Nc, n) float64, for ``w_init`` (..., n), rule outputs (..., Nc, n) and
    ``alpha`` (..., n) (read by the weight rule only); leading axes broadcast."""
    w_init, outputs, alpha = (np.asarray(x) for x in (w_init, outputs, alpha))
    batch, nc, n = _shapes(w_init, outputs, alpha)
    B = int(np.prod(batch, dtype=np.int64))
    A = np.empty((B, nc, n))
    D = np.empty((B, nc, n))
    if B and nc:
        run = _forward_parallel if B >= PARALLEL_MIN_BATCH else _forward_batch
        run(_flat(w_init, batch, (n,)), _flat(outputs, batch, (nc, n)), _flat(alpha, batch, (n,)), settings._cfg(),
            A, D)
    return A.reshape(batch + (nc, n)), D.reshape(batch + (nc, n))


def backward(settings: WeightPathSettings, w_init, outputs, alpha, a, g_a, g_delta,
             reduce: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vector-Jacobian product of :func:`forward` given its carries ``a`` and the cotangents of ``a`` and
    ``delta``: ``(g_w_init, g_outputs, g_alpha)`` in float64, with the inputs' shapes (summed over the axes
    they were broadcast along), or with ``reduce=False`` with the whole batch shape in front."""
    w_init, outputs, alpha = (np.asarray(x) for x in (w_init, outputs, alpha))
    batch, nc, n = _shapes(w_init, outputs, alpha)
    batch = np.broadcast_shapes(batch, np.shape(a)[:-2], np.shape(g_a)[:-2], np.shape(g_delta)[:-2])
    B = int(np.prod(batch, dtype=np.int64))
    g_w0 = np.zeros((B, n))
    g_r = np.zeros((B, nc, n))
    g_alpha = np.zeros((B, n))
    if B and nc:
        run = _adjoint_parallel if B >= PARALLEL_MIN_BATCH else _adjoint_batch
        run(_flat(w_init, batch, (n,)), _flat(outputs, batch, (nc, n)), _flat(alpha, batch, (n,)), settings._cfg(),
            _flat(a, batch, (nc, n)), _flat(g_a, batch, (nc, n)), _flat(g_delta, batch, (nc, n)), g_w0, g_r, g_alpha)
    grads = (g_w0.reshape(batch + (n,)), g_r.reshape(batch + (nc, n)), g_alpha.reshape(batch + (n,)))
    if not reduce:
        return grads
    return tuple(sum_to_shape(g, x.shape) for g, x in zip(grads, (w_init, outputs, alpha)))


__all__ = ["WeightPathSettings", "forward", "backward", "KINDS"]
