"""Price estimators on chunk prices (docs/math.md section 4), written once against the Array API.

All estimators run over the chunk prices ``x`` (shape (M, n), one row per chunk of ``c`` minutes) with a
decay ``lam`` per asset (shape (n,)) per chunk step. Each recurrence is affine in its state,

    h_t = A_t h_{t-1} + B_t,   h_{-1} = 0,

so it can be evaluated either with ``bk.associative_scan`` over the pairs ``(A, B)`` (combine
``(A1, B1), (A2, B2) -> (A1 A2, A2 B1 + B2)``, :func:`affine_scan`) or with one sequential ``bk.scan``
whose carry holds every state of the estimator (fused: the gradient's ``(y, a)``, the variance's ``(e, v)``).
Both agree to about 1e-13 of each series' scale in float64 (docs/math.md allows 1e-12).

``method="auto"`` (the default) takes ``bk.affine_scan_method`` when the backend defines it, else
``"sequential"``. Measured with jax.jit on XLA:CPU (2 cores shared with other work, so noisy; M = 525,600
chunk prices, n = 2, float64, best of 15 in two sessions), sequential vs associative, forward / gradient
w.r.t. lambda: EWMA 4 / 45-111 ms vs 14-18 / 120-132 ms; EWMA gradient 6-11 / 152-156 ms vs 17-18 /
274-387 ms; return variance 11-22 / 43-98 ms vs 19-43 / 336-467 ms. So sequential is the CPU default; on a
GPU, where each scan step costs microseconds, a backend should set ``affine_scan_method = "associative"``
(not measured here: no GPU was available).

The gradient carries the deviation ``y = x - e`` instead of ``e`` (see :func:`ewma_and_gradient`): the same
recurrence without the cancellation in ``x_t - e_t``, so g keeps full relative precision.

Decisions where docs/math.md is silent:

- The gradient state starts at ``a_0 = 0`` and the gradient at ``g_0 = 0``; the first row of every
  estimator is row 0 of the chunk prices (no look-ahead: row t uses x_0..x_t only).
- The return variance is returned for every return ``rho_0..rho_{M-2}``; its first row is 0 (the state
  starts at ``(rho_0, 0)``), which min-variance handles as in docs/smooth_mode.md.
"""

from __future__ import annotations

from typing import Any

# "auto": the backend's bk.affine_scan_method (part of tfmm.backend.ArrayOps; "sequential" unless it sets another).
DEFAULT_METHOD = "auto"
METHODS = ("auto", "associative", "sequential")


def _check_method(method: str, bk: Any) -> str:
    """The concrete method ("associative" or "sequential") for ``method`` on backend ``bk``."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is invalid: allowed one of {', '.join(map(repr, METHODS))}")
    if method == "auto":
        method = bk.affine_scan_method
        if method not in ("associative", "sequential"):
            raise ValueError(f"bk.affine_scan_method={method!r} is invalid: 'associative' or 'sequential'")
    return method


def _combine(left: tuple[Any, Any], right: tuple[Any, Any]) -> tuple[Any, Any]:
    """Composition of the affine maps h -> A1 h + B1, then h -> A2 h + B2."""
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


def affine_scan(decay: Any, drive: Any, bk: Any, *, method: str = DEFAULT_METHOD) -> Any:
    """h_t = decay_t * h_{t-1} + drive_t with h_{-1} = 0 (so h_0 = drive_0), for t = 0..M-1.

    decay: (n,) or (M, n) (broadcast against drive); drive: (M, n). Returns h, (M, n).
    """
    xp = bk.xp
    method = _check_method(method, bk)
    if drive.shape[0] == 0:
        return drive
    decay = xp.broadcast_to(xp.asarray(decay, dtype=drive.dtype), drive.shape)
    if method == "associative":
        return bk.associative_scan(_combine, (decay, drive))[1]

    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return bk.scan(step, xp.zeros_like(drive[0]), (decay, drive))[1]


def ewma(x: Any, lam: Any, bk: Any, *, method: str = DEFAULT_METHOD) -> Any:
    """EWMA of the chunk prices: e_0 = x_0, e_t = lam e_{t-1} + (1 - lam) x_t. x (M, n), lam (n,) -> (M, n)."""
    xp = bk.xp
    if x.shape[0] == 0:
        return x
    drive = xp.concat([x[:1], (1.0 - lam) * x[1:]], axis=0)
    return affine_scan(lam, drive, bk, method=method)


def ewma_and_gradient(x: Any, lam: Any, bk: Any, *, method: str = DEFAULT_METHOD) -> tuple[Any, Any]:
    """(e, g): the EWMA and the relative price slope per chunk (docs/math.md 4).

    e_t = lam e_{t-1} + (1 - lam) x_t, e_0 = x_0; a_t = lam a_{t-1} + (x_t - e_t) / (1 - lam), a_0 = 0
    (the new EWMA e_t in both the state and the denominator); g_t = a_t / (b e_t), b = lam / (1 - lam)^3.
    x (M, n) prices > 0, lam (n,) in (0, 1) -> e (M, n) in price units, g (M, n) in 1 / chunk; g_0 = 0.

    The deviation y_t = x_t - e_t is carried instead of e: y_t = lam (y_{t-1} + x_t - x_{t-1}), y_0 = 0,
    e_t = x_t - y_t, a_t = lam a_{t-1} + y_t / (1 - lam). This is the same recurrence, but it never
    subtracts two nearly equal prices, so g keeps full relative precision (the literal x_t - e_t loses
    about log10(x / |x - e|) digits). "sequential" runs one fused scan with carry (y, a); "associative"
    two associative scans.
    """
    xp = bk.xp
    method = _check_method(method, bk)
    if x.shape[0] == 0:
        return x, x
    scale = (1.0 - lam) ** 3 / lam  # 1 / b
    dx = x[1:] - x[:-1]
    if method == "sequential":
        def step(carry, inputs):
            y, a = carry
            xt, dxt = inputs
            y = lam * (y + dxt)
            a = lam * a + y / (1.0 - lam)
            e = xt - y
            return (y, a), (e, scale * a / e)

        zero = xp.zeros_like(x[0])
        _, (e, g) = bk.scan(step, (zero, zero), (x[1:], dx))
        return xp.concat([x[:1], e], axis=0), xp.concat([xp.zeros_like(x[:1]), g], axis=0)
    zeros = xp.zeros_like(x[:1])
    y = affine_scan(lam, xp.concat([zeros, lam * dx], axis=0), bk, method=method)
    a = affine_scan(lam, y / (1.0 - lam), bk, method=method)
    e = x - y
    return e, scale * a / e


def ewma_gradient(x: Any, lam: Any, bk: Any, *, method: str = DEFAULT_METHOD) -> Any:
    """Relative price slope per chunk g_t = a_t / (b e_t), b = lam / (1 - lam)^3 (docs/math.md 4).

    a_t = lam a_{t-1} + (x_t - e_t) / (1 - lam), a_0 = 0, with the new EWMA e_t in both the state and the
    denominator. x (M, n) prices > 0, lam (n,) in (0, 1) -> g (M, n), units: 1 / chunk.
    """
    return ewma_and_gradient(x, lam, bk, method=method)[1]


def return_variance(x: Any, lam: Any, bk: Any, *, method: str = DEFAULT_METHOD) -> Any:
    """EWMA variance of chunk returns rho_m = x_{m+1} / x_m - 1, m = 0..M-2 (docs/math.md 4).

    State (e, v) from (rho_0, 0); per step d = rho - e; e += (1 - lam) d; v = lam v + d (lam d);
    sigma2 = (1 - lam) v. x (M, n) -> sigma2 (M-1, n), units: (1 / chunk)^2. sigma2_0 = 0.
    "sequential" runs one fused scan with carry (e, v); "associative" two associative scans.
    """
    xp = bk.xp
    method = _check_method(method, bk)
    rho = x[1:] / x[:-1] - 1.0
    if rho.shape[0] == 0:
        return rho
    if method == "sequential":
        def step(carry, r):
            e, v = carry
            d = r - e
            e = e + (1.0 - lam) * d
            v = lam * v + d * (lam * d)
            return (e, v), (1.0 - lam) * v

        zero = xp.zeros_like(rho[0])
        _, sigma2 = bk.scan(step, (rho[0], zero), rho[1:])
        return xp.concat([xp.zeros_like(rho[:1]), sigma2], axis=0)
    e = ewma(rho, lam, bk, method=method)
    d = xp.concat([xp.zeros_like(rho[:1]), rho[1:] - e[:-1]], axis=0)  # d_m = rho_m - e_{m-1}
    v = affine_scan(lam, d * (lam * d), bk, method=method)
    return (1.0 - lam) * v


__all__ = [
    "DEFAULT_METHOD", "affine_scan", "ewma", "ewma_gradient", "ewma_and_gradient", "return_variance",
]
