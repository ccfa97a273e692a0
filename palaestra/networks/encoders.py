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
from palaestra.networks.constants import MIN_IMAGE_SIZE


def concatenate_vectors(observations: Sequence[Any]) -> Any:
    """The vector observations ``[n, *shape]`` side by side, ``[n, total]``: one concatenation (none
    for a single vector observation); numpy arrays or torch tensors."""
    first = observations[0]
    if len(observations) == 1 and first.ndim == 2:
        return first
    if isinstance(first, np.ndarray):
        n = first.shape[0]
        return np.concatenate([o.reshape(n, math.prod(o.shape[1:])) for o in observations], axis=1)  # n may be 0
    import torch

    # flatten, not a reshape to the batch size read off the tensor: an exported model then needs
    # no operation on shapes at run time
    return torch.cat([torch.flatten(o, 1) for o in observations], 1)


# The most features an image encoder's convolutions may hand its dense layer: 2^20, times the
# layer's units, is already gigabytes of weights and Adam state per tower (a 1,500 x 1,500 image
# through the simple encoder); an image far larger is a wrong shape, not a camera
MAX_CONV_FEATURES = 1 << 20


# The image encoders' convolutions (networks/visual.py builds them), here torch-free for the
# settings checks: (output channels, kernel, stride) per layer; resnet's blocks each start with a
# 3x3 convolution that keeps the size and an unpadded 3x3 max pool of stride 2 (ML-Agents')
CONVOLUTIONS = {"simple": ((16, 8, 4), (32, 4, 2)), "nature_cnn": ((32, 8, 4), (64, 4, 2), (64, 3, 1))}
RESNET_CHANNELS = (16, 32, 32)


def conv_features(shape: tuple[int, ...], kind: str) -> int:
    """How many features encoder ``kind``'s convolutions leave of an image of ``shape`` (H, W, C):
    the input size of its dense layer."""
    height, width = shape[0], shape[1]
    if kind == "resnet":
        for _ in RESNET_CHANNELS:
            height, width = (height - 3) // 2 + 1, (width - 3) // 2 + 1
        return RESNET_CHANNELS[-1] * height * width
    for _, kernel, stride in CONVOLUTIONS[kind]:
        height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    return CONVOLUTIONS[kind][-1][0] * max(height, 0) * max(width, 0)


def image_problem(shape: tuple[int, ...], kind: str, origin: str = "") -> str | None:
    """Why encoder ``kind`` cannot take an image of ``shape`` (None if it can); ``origin``: where
    ``kind`` was set, for the message."""
    smallest, side = MIN_IMAGE_SIZE[kind], min(shape[0], shape[1])
    if side >= smallest:
        features = conv_features(shape, kind)
        if features <= MAX_CONV_FEATURES:
            return None
        return (f"image observation of shape {tuple(shape)} is far larger than a camera's: vis_encode_type "
                f"{kind!r}{origin} would hand its dense layer {features:,} features (at most {MAX_CONV_FEATURES:,}), "
                "gigabytes of weights; render smaller images in the environment")
    fits = [repr(k) for k, size in MIN_IMAGE_SIZE.items() if side >= size]
    advice = (f"use vis_encode_type {' or '.join(fits)}" if fits else
              "render larger images in the environment (the built-in environments take theirs from --env-args: "
              "VisualGridWorld's image_size, the 1-D environments' vis_obs_size; a Gymnasium or PettingZoo "
              "environment's by a wrapper such as Gymnasium's ResizeObservation), or, if they are not pictures "
              "(MiniGrid's 7x7x3 grid encoding), hand them over as a vector with Gymnasium's FlattenObservation")
    return (f"image observation of shape {tuple(shape)} is smaller than the {smallest}x{smallest} that "
            f"vis_encode_type {kind!r}{origin} needs; {advice}")


class VectorEncoder:
    """The concatenation of a behavior's vector observations (the normalizer, where there is
    one, applies to it); image observations are left to the image encoders (networks/visual.py).
    No parameters: the networks' stored weights are unchanged by it."""

    def __init__(self, shapes: Sequence[tuple[int, ...]]) -> None:
        self.indices = [i for i, shape in enumerate(shapes) if not is_image(shape)]
        self.every_observation = len(self.indices) == len(shapes)
        self.size = int(sum(math.prod(shapes[i]) for i in self.indices))

    def __call__(self, observations: Sequence[Any]) -> Any:
        if self.every_observation:
            return concatenate_vectors(observations)
        if self.indices:
            return concatenate_vectors([observations[i] for i in self.indices])
        first = observations[0]  # images only: no vector features
        if isinstance(first, np.ndarray):
            return np.zeros((first.shape[0], 0), np.float32)
        import torch

        return torch.zeros((first.shape[0], 0), device=first.device)
