"""Image encoders (``vis_encode_type``) and the features a network computes from a behavior's
observations when some of them are images.

The three encoders are ML-Agents' (layer shapes from its 0.16 settings and its later torch
trainer, which kept them):

- ``simple``: conv 16 × 8×8 stride 4, conv 32 × 4×4 stride 2; images of at least 20×20.
- ``nature_cnn`` (Mnih et al. 2015): conv 32 × 8×8 stride 4, conv 64 × 4×4 stride 2,
  conv 64 × 3×3 stride 1; at least 36×36.
- ``resnet`` (IMPALA, Espeholt et al. 2018): three stacks of 16, 32, 32 channels, each a 3×3
  convolution, a 3×3 max-pool of stride 2 and two residual blocks (swish, conv, swish, conv,
  plus the input); at least 15×15.

Each ends in a dense layer of ``hidden_units`` features (leaky ReLU for the first two, as
ML-Agents; swish for resnet). Images arrive height × width × channels, as uint8 (the collector's
and buffers' storage: scaled by 1/255 here) or as floats in [0, 1] (what Unity's inference engine
feeds an exported model)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from palaestra.envs.observations import is_image
from palaestra.networks.encoders import image_problem

RESNET_CHANNELS = (16, 32, 32)
RESNET_BLOCKS = 2


class ChannelsFirst(nn.Module):
    """[B, H, W, C] uint8 (0-255) or float in [0, 1] → [B, C, H, W] float, centred in [-1, 1].

    Centred, a dark pixel moves the first layer as much as a bright one: with [0, 1] inputs a
    black image reaches the network only through its biases, which every image shares. On
    ML-Agents' visual 1-D tests (one image black, the other white) policies with [0, 1] inputs
    learned and then flipped between updates (docs/benchmarks.md)."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() * (2.0 / 255.0) - 1.0
        else:
            images = images * 2.0 - 1.0
        return images.permute(0, 3, 1, 2)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        # torch's default initialization: He-initialized residual branches double the signal's
        # variance at every block (six blocks), and resnet policies then learned less reliably
        self.body = nn.Sequential(nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1),
                                  nn.SiLU(), nn.Conv2d(channels, channels, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _conv_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv(inputs: int, outputs: int, kernel: int, stride: int, padding: int = 0) -> nn.Conv2d:
    """A convolution with He initialization: the image's signal keeps its scale through the stack
    (torch's default shrinks it layer by layer; with nature_cnn's three layers the first updates
    barely saw the image: ML-Agents' visual-advanced 1-D test at 500 steps, seeds 1-4)."""
    conv = nn.Conv2d(inputs, outputs, kernel, stride, padding)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="leaky_relu")
    nn.init.zeros_(conv.bias)
    return conv


def _dense(inputs: int, outputs: int) -> nn.Linear:
    linear = nn.Linear(inputs, outputs)
    nn.init.kaiming_normal_(linear.weight, nonlinearity="linear")
    linear.weight.data.mul_(math.sqrt(2))  # ML-Agents' He-normal initialization with gain 1.41
    nn.init.zeros_(linear.bias)
    return linear


def image_encoder(kind: str, shape: tuple[int, ...], features: int) -> nn.Sequential:
    """``kind``'s encoder for images of ``shape`` (H, W, C) → ``[B, features]``."""
    problem = image_problem(shape, kind)
    if problem:
        raise ValueError(problem)
    height, width, channels = shape
    layers: list[nn.Module] = [ChannelsFirst()]
    if kind == "resnet":
        for out in RESNET_CHANNELS:
            layers += [_conv(channels, out, 3, 1, 1), nn.MaxPool2d(3, 2, 1)]
            layers += [ResidualBlock(out) for _ in range(RESNET_BLOCKS)]
            height, width, channels = _conv_size(height, 3, 2, 1), _conv_size(width, 3, 2, 1), out
        layers += [nn.SiLU(), nn.Flatten(), _dense(channels * height * width, features), nn.SiLU()]
        return nn.Sequential(*layers)
    convolutions = {"simple": ((16, 8, 4), (32, 4, 2)),
                    "nature_cnn": ((32, 8, 4), (64, 4, 2), (64, 3, 1))}[kind]
    for out, kernel, stride in convolutions:
        layers += [_conv(channels, out, kernel, stride), nn.LeakyReLU()]
        height, width, channels = _conv_size(height, kernel, stride), _conv_size(width, kernel, stride), out
    layers += [nn.Flatten(), _dense(channels * height * width, features), nn.LeakyReLU()]
    return nn.Sequential(*layers)


class ImageFeatures(nn.Module):
    """One encoder per image observation, for each of ``towers`` networks (PPO's actor and critic,
    SAC's two critics: each learns its own view, as ML-Agents' separate networks do; SAC's actor:
    one tower). ``forward(vectors, observations)`` puts the encodings after the (normalized)
    vector features: ``[B, size]`` for one tower, ``[towers, B, size]`` for several."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], kind: str, features: int, towers: int) -> None:
        super().__init__()
        self.image_indices = [i for i, shape in enumerate(shapes) if is_image(shape)]
        self.towers = nn.ModuleList(
            nn.ModuleList(image_encoder(kind, tuple(shapes[i]), features) for i in self.image_indices)
            for _ in range(towers))
        self.size = features * len(self.image_indices)  # features added to the vector ones

    def forward(self, vectors: torch.Tensor, observations: Sequence[torch.Tensor]) -> torch.Tensor:
        images = [observations[i] for i in self.image_indices]
        per_tower = [torch.cat([vectors, *(encode(x) for encode, x in zip(encoders, images))], -1)
                     for encoders in self.towers]
        return per_tower[0] if len(per_tower) == 1 else torch.stack(per_tower)


def image_features(shapes: Sequence[tuple[int, ...]], kind: str, features: int, towers: int) -> ImageFeatures | None:
    """:class:`ImageFeatures` where a behavior has image observations, else None (a plain MLP
    over vectors, which the CPU accelerator can run)."""
    if not any(is_image(shape) for shape in shapes):
        return None
    return ImageFeatures(shapes, kind, features, towers)


def with_actions(features: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """A critic's input: ``features`` ([B, F] or per tower [T, B, F]) followed by ``actions`` [B, A]."""
    if features.dim() == 3:
        actions = actions.unsqueeze(0).expand(features.shape[0], *actions.shape)
    return torch.cat([features, actions], -1)
