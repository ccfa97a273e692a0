"""How observations are kept between the environment and the policy: each in its own shape,
vectors as float32 and images (height x width x channels) as uint8, a quarter of the memory
and of the bytes that travel between processes."""

from __future__ import annotations

import numpy as np


def is_image(shape: tuple[int, ...]) -> bool:
    return len(shape) == 3


def channels_first(shape: tuple[int, ...]) -> tuple[int, ...]:
    """An image's shape (height, width, channels) as (channels, height, width): how an exported
    model takes it (ML-Agents' exporter's layout, which Unity's inference engine checks)."""
    return (shape[2], shape[0], shape[1])


def stored_dtype(shape: tuple[int, ...]) -> type:
    return np.uint8 if is_image(shape) else np.float32


def as_stored(obs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One observation's batch ``[n, *shape]`` in its stored dtype: an image given as floats in
    [0, 1] becomes uint8 ``round(x * 255)``; one given as uint8 stays as it is."""
    if not is_image(shape):
        return obs.astype(np.float32, copy=False)
    if obs.dtype == np.uint8:
        return obs
    return np.rint(np.clip(obs, 0.0, 1.0) * 255.0).astype(np.uint8)


def stored_observations(observations: list[np.ndarray], shapes: tuple[tuple[int, ...], ...]) -> list[np.ndarray]:
    return [as_stored(o, shape) for o, shape in zip(observations, shapes, strict=True)]
