"""Central finite differences of a scalar function of named parameter arrays (a leaf module: numpy only).

One entry at a time: ``g_i = (f(x + h_i e_i) - f(x - h_i e_i)) / (x_i^+ - x_i^-)`` where ``x_i^+- = x_i +- h_i``
as rounded, so the rounding of ``x +- h`` does not bias the quotient. The step rule ``h_i = step(x_i)`` is the
caller's: the reference backend scales it with ``|x_i|``, :func:`tfmm.diagnose` takes a fixed step.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np


def central_differences(f: Callable[[dict[str, np.ndarray]], float], params: Mapping[str, np.ndarray],
                        step: Callable[[float], float]) -> dict[str, np.ndarray]:
    """The gradient of ``f`` at ``params`` (name -> float64 array of the parameter's shape), 2 calls per entry.

    >>> g = central_differences(lambda p: float(np.sum(p["x"] ** 2)), {"x": np.array([1.0, -2.0])},
    ...                         lambda x: 1e-4)
    >>> np.round(g["x"], 8).tolist()
    [2.0, -4.0]
    """
    base = {k: np.array(v, dtype=np.float64, copy=True) for k, v in params.items()}
    grads = {k: np.empty(v.shape) for k, v in base.items()}
    for name, x in base.items():
        for i in np.ndindex(x.shape):
            h = step(float(x[i]))
            up = {**base, name: x.copy()}
            down = {**base, name: x.copy()}
            up[name][i] += h
            down[name][i] -= h
            grads[name][i] = (f(up) - f(down)) / (up[name][i] - down[name][i])
    return grads


__all__ = ["central_differences"]
