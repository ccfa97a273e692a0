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
feeds an exported model); an exported model takes them channels first (:func:`channels_first_inputs`)."""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from palaestra.envs.observations import is_image
from palaestra.networks.encoders import CONVOLUTIONS, RESNET_CHANNELS, image_problem
from palaestra.networks.image_batches import encode_in_bounded_batches
from palaestra.networks.two_threads import SecondThread, in_pairs

RESNET_BLOCKS = 2


class ChannelsFirst(nn.Module):
    """[B, H, W, C] uint8 (0-255) or float in [0, 1] → [B, C, H, W] float, centred in [-1, 1].
    Within :func:`channels_first_inputs` the images arrive [B, C, H, W] already.

    Centred, a dark pixel moves the first layer as much as a bright one: with [0, 1] inputs a
    black image reaches the network only through its biases, which every image shares. On
    ML-Agents' visual 1-D tests (one image black, the other white) policies with [0, 1] inputs
    learned and then flipped between updates (docs/benchmarks.md)."""

    inputs_channels_first = False

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() * (2.0 / 255.0) - 1.0
        else:
            images = images * 2.0 - 1.0
        return images if self.inputs_channels_first else images.permute(0, 3, 1, 2)


@contextlib.contextmanager
def channels_first_inputs(network: nn.Module) -> Iterator[None]:
    """The network's image encoders take [B, C, H, W] images while this lasts: the layout of an
    exported model's image inputs, which ML-Agents' exporter writes and Unity's inference engine
    reads (it checks channels, height and width against the camera's)."""
    layers = [m for m in network.modules() if isinstance(m, ChannelsFirst)]
    for layer in layers:
        layer.inputs_channels_first = True
    try:
        yield
    finally:
        for layer in layers:
            layer.inputs_channels_first = False


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
            # (ML-Agents' stack: a size-keeping convolution, then an unpadded 3x3 max pool of stride 2)
            layers += [_conv(channels, out, 3, 1, 1), nn.MaxPool2d(3, 2)]
            layers += [ResidualBlock(out) for _ in range(RESNET_BLOCKS)]
            height, width, channels = _conv_size(height, 3, 2), _conv_size(width, 3, 2), out
        layers += [nn.SiLU(), nn.Flatten(), _dense(channels * height * width, features), nn.SiLU()]
        return nn.Sequential(*layers)
    for out, kernel, stride in CONVOLUTIONS[kind]:
        layers += [_conv(channels, out, kernel, stride), nn.LeakyReLU()]
        height, width, channels = _conv_size(height, kernel, stride), _conv_size(width, kernel, stride), out
    layers += [nn.Flatten(), _dense(channels * height * width, features), nn.LeakyReLU()]
    return nn.Sequential(*layers)


class ImageFeatures(nn.Module):
    """One encoder per image observation, for each of ``towers`` networks (PPO's actor and critic,
    SAC's two critics: each learns its own view, as ML-Agents' separate networks do; SAC's actor:
    one tower). ``forward(vectors, observations)`` puts the encodings after the (normalized)
    vector features: ``[B, size]`` for one tower, ``[towers, B, size]`` for several.

    After :meth:`on_two_threads`, two towers encode at once, tower 1 on a second thread, forward
    and backward (:class:`_TowersOnTwoThreads`): the convolutions are most of a visual update, and
    torch's own threads split each small convolution no faster than one (docs/benchmarks.md).
    The arithmetic is the same as on one thread, result for result."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], kind: str, features: int, towers: int) -> None:
        super().__init__()
        self.image_indices = [i for i, shape in enumerate(shapes) if is_image(shape)]
        self.towers = nn.ModuleList(
            nn.ModuleList(image_encoder(kind, tuple(shapes[i]), features) for i in self.image_indices)
            for _ in range(towers))
        self.size = features * len(self.image_indices)  # features added to the vector ones
        self.second: SecondThread | None = None

    def on_two_threads(self, threads: int = 0) -> None:
        """Encode with two towers at once from now on, the second on ``threads`` torch threads of
        its own (0: as many as this thread has)."""
        if len(self.towers) == 2:
            self.second = SecondThread()
            # torch's thread count is also each thread's own OpenMP setting, which a new thread
            # starts without (torch.get_num_threads() reports the count all the same): left
            # alone, oneDNN split the second thread's convolutions in two (another summation
            # order, and two threads on a core the first thread needs)
            threads = threads or torch.get_num_threads()
            self.second.start(lambda: torch.set_num_threads(threads))
            self.second.result()

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        return {**state, "second": None}  # a thread is not copied (SAC's target copy, checkpoints)

    def encode_tower(self, tower: int, images: Sequence[torch.Tensor]) -> torch.Tensor:
        # (each encoder sees few batch sizes: oneDNN keeps megabytes for every size it meets)
        return torch.cat([encode_in_bounded_batches(encode, x) for encode, x in zip(self.towers[tower], images)], -1)

    def one_tower(self, tower: int, vectors: torch.Tensor, observations: Sequence[torch.Tensor]) -> torch.Tensor:
        """One tower's features alone, ``[B, size]`` (PPO's actor: acting, and what an exported
        model runs; its critic: the value estimates)."""
        return _after_vectors(vectors, self.encode_tower(tower, [observations[i] for i in self.image_indices]))

    def forward(self, vectors: torch.Tensor, observations: Sequence[torch.Tensor]) -> torch.Tensor:
        images = [observations[i] for i in self.image_indices]
        if self.second is None or torch.jit.is_tracing():  # (an export traces on this thread only)
            encoded = [self.encode_tower(t, images) for t in range(len(self.towers))]
        elif torch.is_grad_enabled():
            parameters = [list(tower.parameters()) for tower in self.towers]
            encoded = _TowersOnTwoThreads.apply(self, images, len(parameters[0]), *parameters[0], *parameters[1])
        else:  # the caller's mode (no_grad, inference_mode) on the second thread too: it is per thread
            inference = torch.is_inference_mode_enabled()

            def encode(t: int) -> torch.Tensor:
                with torch.inference_mode(inference), torch.no_grad():
                    return self.encode_tower(t, images)

            encoded = in_pairs(self.second, encode)
        per_tower = [_after_vectors(vectors, e) for e in encoded]
        return per_tower[0] if len(per_tower) == 1 else torch.stack(per_tower)


def _after_vectors(vectors: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
    """The image encodings after the vector features. An export with no vector features leaves
    the empty ones out, so the model holds no operation on the batch's size (which making them
    needs); training keeps them in the graph (GAIL's gradient penalty differentiates them)."""
    if vectors.shape[-1] == 0 and torch.jit.is_tracing():
        return encoded
    return torch.cat([vectors, encoded], -1)


class _TowersOnTwoThreads(torch.autograd.Function):
    """Two towers' encoders as one step of the outer graph, each tower's forward and backward
    pass on its own thread (torch's engine runs a CPU backward pass on the thread that asks for
    it, so one ``loss.backward()`` would run both towers' on one). The inputs are the towers'
    parameters (``first`` of them tower 0's), whose gradients backward returns: ``.backward()``,
    ``autograd.grad`` and ``backward(inputs=...)`` see them as from any other layer. Images take
    no gradient (uint8, or the environment's floats)."""

    @staticmethod
    def forward(ctx, features: ImageFeatures, images: Sequence[torch.Tensor], first: int, *parameters: torch.Tensor):
        owned = (parameters[:first], parameters[first:])

        def build(t: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
            with torch.enable_grad():  # (forward runs without a graph; each tower builds its own)
                return features.encode_tower(t, images), [p for p in owned[t] if p.requires_grad]

        ctx.towers = in_pairs(features.second, build)
        ctx.second, ctx.owned = features.second, owned
        ctx.set_materialize_grads(False)  # a tower the loss did not read gets None: nothing to run
        return tuple(encoded.detach() for encoded, _ in ctx.towers)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: torch.Tensor | None):
        if ctx.towers is None:
            raise RuntimeError("the image towers' graph was already used by a backward pass: "
                               "a second one (retain_graph) is not supported on two threads")
        towers, ctx.towers = ctx.towers, None

        def tower_gradients(t: int) -> dict[int, torch.Tensor]:
            (encoded, trained), grad = towers[t], grads[t]
            if grad is None or not trained or not encoded.requires_grad:
                return {}
            found = torch.autograd.grad(encoded, trained, grad, allow_unused=True)
            return {id(p): g for p, g in zip(trained, found)}

        found = in_pairs(ctx.second, tower_gradients)
        return (None, None, None, *(found[t].get(id(p)) for t in (0, 1) for p in ctx.owned[t]))


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
