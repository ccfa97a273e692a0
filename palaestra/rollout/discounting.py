"""Discounted sums over the rows of segments ``[F, H]``, vectorized over segments: GAE's
(algorithms/ppo.py) and the running discounted returns of the extrinsic reward's scale
(rewards/return_scale.py)."""

from __future__ import annotations

import functools

import numpy as np

# Up to this many time steps, the discounted sum is one product with a cached matrix of discount
# powers; longer segments take a loop over time (vectorized over segments).
_MATRIX_MAX_WIDTH = 128


@functools.lru_cache(maxsize=32)
def _discount_matrix(width: int, discount: float) -> np.ndarray:
    lag = np.arange(width)[:, None] - np.arange(width)[None, :]  # [s, t] = s - t
    return np.where(lag >= 0, discount ** np.maximum(lag, 0).astype(np.float64), 0.0)


def discounted_cumsum(x: np.ndarray, discount: float) -> np.ndarray:
    """Reverse discounted cumulative sum along axis 1: y[t] = x[t] + discount * y[t+1]."""
    x = x.astype(np.float64, copy=False)
    width = x.shape[1]
    if width <= _MATRIX_MAX_WIDTH:
        return x @ _discount_matrix(width, float(discount))  # y[:, t] = sum_s x[:, s] discount^(s-t)
    y = np.empty_like(x)
    acc = np.zeros(x.shape[0])
    for t in range(width - 1, -1, -1):
        acc = x[:, t] + discount * acc
        y[:, t] = acc
    return y


def running_discounted_sum(x: np.ndarray, discount: float, start: np.ndarray) -> np.ndarray:
    """Forward discounted cumulative sum along axis 1 from ``start`` ``[F]``:
    y[t] = x[t] + discount * y[t-1], y[-1] = start."""
    width = x.shape[1]
    y = discounted_cumsum(x[:, ::-1], discount)[:, ::-1]
    return y + start[:, None] * discount ** np.arange(1, width + 1, dtype=np.float64)[None, :]
