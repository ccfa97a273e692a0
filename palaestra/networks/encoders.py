"""Encoders: observations → the input of a network's body. The only place observations are
flattened and put side by side; everything before keeps each observation in its own shape and
dtype (envs/observations.py).

Torch modules and the CPU accelerator's numpy networks share :func:`concatenate_vectors` (it
takes numpy arrays or tensors, and imports nothing of torch: acting workers run without it)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from palaestra.envs.observations import is_image


def concatenate_vectors(observations: Sequence[Any]) -> Any:
    """The vector observations ``[n, *shape]`` side by side, ``[n, total]``: one concatenation (none
    for a single vector observation); numpy arrays or torch tensors."""
    first = observations[0]
    if len(observations) == 1 and first.ndim == 2:
        return first
    n = first.shape[0]
    flat = [o.reshape(n, math.prod(o.shape[1:])) for o in observations]  # explicit sizes: n may be 0
    if isinstance(first, np.ndarray):
        return np.concatenate(flat, axis=1)
    import torch

    return torch.cat(flat, 1)


class VectorEncoder:
    """The concatenation of a behavior's vector observations (the normalizer, where there is
    one, applies to it). No parameters: the networks' stored weights are unchanged by it."""

    def __init__(self, shapes: Sequence[tuple[int, ...]]) -> None:
        for shape in shapes:
            if is_image(shape):
                raise ValueError(f"image observation of shape {tuple(shape)}: no image (CNN) encoder yet; "
                                 "only vector observations can be trained so far")
            if len(shape) != 1:
                raise ValueError(f"observation of shape {shape}: only vector observations are supported so far")
        self.size = int(sum(math.prod(shape) for shape in shapes))

    def __call__(self, observations: Sequence[Any]) -> Any:
        return concatenate_vectors(observations)
