"""Rule outputs -> coarse weights (guardrail, speed limit) -> fine weights per minute (docs/math.md 3.2-3.4).

Exact and smooth maps follow docs/smooth_mode.md; ``temperature`` is ``Smoothing.weight_temperature``.

Coarse recursion (per chunk k, carry ``a`` = the weights reached, starting at ``w_init``):
  1. ``u = a + r_k`` (delta rule) or ``u = alpha a + (1 - alpha) r_k`` (weight rule);
  2. ``u = u / sum(u)``;
  3. target ``= guardrail(u)``: every weight in ``[w_min, w_max]``, summing to 1;
  4. ``delta = speed_limit((target - a) / I)``: ``max|delta| <= max_change`` per minute;
  5. emit ``(a, delta)``; ``a <- a + I delta``.

Fine weights: a virtual first chunk of ``c`` rows of ``w_init``, then one block of ``c`` rows per coarse
step (linear or approximately optimal interpolation over the first ``I`` rows, then held), truncated.

Decisions where docs/math.md is silent:

- ``u`` always sums to 1 before normalisation for the rules tfmm has (delta outputs sum to 0, weight
  outputs to 1), so the sum in step 2 is never 0; it is guarded (a zero sum divides by 1) so that a
  traced computation never produces NaN. Likewise the guardrail's rescaling denominator.
- The exact guardrail counts an entry as "at w_min" when ``x <= w_min`` after the clip (as in
  docs/smooth_mode.md), so an entry exactly at the bound is held there.
- Smooth guardrail membership is carried across passes with a soft OR,
  ``m_i = 1 - (1 - m'_i)(1 - sigmoid((lo - u_i) / tau))`` (docs/smooth_mode.md): recomputing the sigmoid
  afresh gives 1/2 for an entry pinned exactly at ``lo`` by the previous pass, so the smooth map would not
  converge to the exact one (``u = (0, .4, .4, .2)``, ``lo = .1875``: first weight ``.187447`` at every small
  ``tau`` instead of ``.1875``). In exact mode the recomputed indicator and the OR coincide (a pinned entry
  is exactly ``lo``). The core always runs n passes (extra passes are identities up to rounding).
- ``fine_weights`` with more rows than ``(Nc + 1) c`` raises ``ValueError`` (the composer's Nc =
  ceil((B - 1) / c) - 1 always covers B - 1 rows); shapes are static, so this never depends on values.
"""

from __future__ import annotations

from typing import Any

import numpy as np

INTERPOLATIONS = ("linear", "approx_optimal")
KINDS = ("delta", "weight")


def _softplus(z: Any, temperature: float, bk: Any) -> Any:
    """softplus_tau(z) = tau log(1 + exp(z / tau)), computed as tau logaddexp(0, z / tau)."""
    xp = bk.xp
    return temperature * xp.logaddexp(xp.zeros_like(z), z / temperature)


def _safe_divide(num: Any, den: Any, bk: Any) -> Any:
    """num / den with den = 0 replaced by 1 (both branches finite)."""
    xp = bk.xp
    return num / bk.where(den != 0, den, xp.ones_like(den))


def guardrail(u: Any, w_min: float, w_max: float, *, smooth: bool, temperature: float, bk: Any) -> Any:
    """Weights in [w_min, w_max] summing to 1 (docs/math.md 3.2 step 3; docs/smooth_mode.md).

    u: (n,) summing to 1. n passes of {x = clip(u, lo, hi); m_i = 1[x_i <= lo];
    x_i = m_i lo + (1 - m_i) x_i (1 - lo sum m) / sum((1 - m) x); u = x}. Smooth: clip -> soft clip
    lo + sp_tau(u - lo) - sp_tau(u - hi); m_i = 1 - (1 - m'_i)(1 - sigmoid((lo - u_i) / tau)) with u the
    pass's input and m' the previous pass's m (0 before the first pass).
    """
    xp = bk.xp
    n = u.shape[-1]
    pinned = xp.zeros_like(u)
    for _ in range(n):
        if smooth:
            x = w_min + _softplus(u - w_min, temperature, bk) - _softplus(u - w_max, temperature, bk)
            # soft OR with the previous passes' indicator: an entry pinned at w_min stays pinned (see module doc)
            m = 1.0 - (1.0 - pinned) * (1.0 - bk.sigmoid((w_min - u) / temperature))
            pinned = m
        else:
            x = xp.clip(u, w_min, w_max)
            m = xp.astype(x <= w_min, u.dtype)
        free = (1.0 - m) * x
        scale = _safe_divide(1.0 - w_min * xp.sum(m, axis=-1, keepdims=True),
                             xp.sum(free, axis=-1, keepdims=True), bk)
        u = m * w_min + free * scale
    return u


def speed_limit(delta: Any, max_change: float, *, smooth: bool, temperature: float, bk: Any) -> Any:
    """Per-minute weight change with max|delta| <= max_change (docs/math.md 3.2 step 4; docs/smooth_mode.md).

    Exact: delta / max(1, max_i |delta_i| / max_change). Smooth: z_i = sqrt((delta_i / max_change)^2 + tau^2),
    M = tau logsumexp([z / tau, 1 / tau]) >= max(max_i z_i, 1), delta / M.
    """
    xp = bk.xp
    ratio = delta / max_change
    if smooth:
        z = xp.sqrt(ratio * ratio + temperature * temperature)
        stacked = xp.concat([z, xp.ones_like(z[..., :1])], axis=-1) / temperature
        scale = temperature * bk.logsumexp(stacked, axis=-1)[..., None]
    else:
        biggest = xp.max(xp.abs(ratio), axis=-1, keepdims=True)
        scale = xp.maximum(biggest, xp.ones_like(biggest))
    return delta / scale


def coarse_weights(outputs: Any, w_init: Any, *, kind: str, alpha: Any, w_min: float, w_max: float,
                   max_change: float, interpolation_period: int, smooth: bool, temperature: float,
                   bk: Any) -> tuple[Any, Any]:
    """The coarse recursion of docs/math.md 3.2 over rule outputs (Nc, n).

    Returns (a, delta), both (Nc, n): a_k the weights at the start of chunk k (a_0 = w_init) and delta_k the
    per-minute change over its interpolation period I (so a_{k+1} = a_k + I delta_k). kind: "delta"
    (u = a + r) or "weight" (u = alpha a + (1 - alpha) r, alpha (n,)). Nc = 0 gives (0, n) arrays.
    """
    xp = bk.xp
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is invalid: allowed one of {', '.join(map(repr, KINDS))}")
    if kind == "weight" and alpha is None:
        raise ValueError("a weight rule needs alpha (n,): u = alpha a + (1 - alpha) r")
    w_init = xp.asarray(w_init, dtype=outputs.dtype)
    n_steps = outputs.shape[0]
    if n_steps == 0:
        return outputs, outputs
    period = float(interpolation_period)
    if kind == "weight":
        alpha = xp.asarray(alpha, dtype=outputs.dtype)

    def step(a, r):
        u = a + r if kind == "delta" else alpha * a + (1.0 - alpha) * r
        u = _safe_divide(u, xp.sum(u), bk)
        target = guardrail(u, w_min, w_max, smooth=smooth, temperature=temperature, bk=bk)
        delta = speed_limit((target - a) / period, max_change, smooth=smooth, temperature=temperature, bk=bk)
        return a + period * delta, (a, delta)

    _, (a, delta) = bk.scan(step, w_init, outputs)
    return a, delta


def fine_weights(w_init: Any, a: Any, delta: Any, *, chunk_period: int, interpolation_period: int,
                 interpolation: str, n_rows: int, bk: Any) -> Any:
    """Weights per minute (n_rows, n) (docs/math.md 3.3).

    Rows 0..c-1 hold w_init (a virtual first chunk); block k (rows (k+1) c ..) starts at a_k, e = a_k + I delta_k:
    linear rows a_k + min(j, I) delta_k; approx_optimal rows j < I normalise((a + j delta) + a (e/a)^{j/(I+1)})
    (the geometric part as exp(log a + j/(I+1) (log e - log a))), rows j >= I hold e. Truncated to n_rows.
    """
    xp = bk.xp
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation={interpolation!r} is invalid: allowed one of {', '.join(map(repr, INTERPOLATIONS))}"
        )
    c, period = int(chunk_period), int(interpolation_period)
    if not 0 < period <= c:
        raise ValueError(f"interpolation_period={period} is invalid: allowed 0 < I <= chunk_period ({c})")
    n_blocks = a.shape[0] + 1
    if n_rows > n_blocks * c:
        raise ValueError(f"n_rows={n_rows} needs {-(-n_rows // c) - 1} coarse steps; got {n_blocks - 1}")
    w_init = xp.asarray(w_init, dtype=a.dtype)
    used = -(-n_rows // c)  # blocks that reach a row
    starts = xp.concat([w_init[None, :], a], axis=0)[:used, None, :]  # (used, 1, n)
    steps = xp.concat([xp.zeros_like(w_init)[None, :], delta], axis=0)[:used, None, :]
    # rows of a block by broadcasting (used, c, n), then one reshape: no gather, whose gradient (a scatter)
    # dominated the zero-fee bout's backward pass
    jj = xp.asarray(np.minimum(np.arange(c), period), dtype=a.dtype)[None, :, None]  # min(j, I)
    linear = starts + jj * steps
    if interpolation == "linear":
        return _block_rows(linear, n_rows, xp)
    end = starts + period * steps
    log_start = xp.log(starts)
    geometric = xp.exp(log_start + (jj / (period + 1.0)) * (xp.log(end) - log_start))
    mixed = linear + geometric
    mixed = mixed / xp.sum(mixed, axis=-1, keepdims=True)
    return _block_rows(bk.where(jj < period, mixed, end), n_rows, xp)


def _block_rows(x: Any, n_rows: int, xp: Any) -> Any:
    """(blocks, c, n) -> the first ``n_rows`` rows of the (blocks * c, n) concatenation."""
    blocks, c, n = x.shape
    return xp.reshape(x, (blocks * c, n))[:n_rows, ...]


__all__ = ["guardrail", "speed_limit", "coarse_weights", "fine_weights"]
