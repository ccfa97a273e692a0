"""The PPO policy's forward pass in numpy, over named arrays, with no torch import.

Two users: the main process, whose mirror (networks/numpy_policy.py) views the torch
parameters' own memory, and environment workers that act themselves (workers/acting.py),
which copy the published weights into a local buffer. Both pass ``arrays``: the float32 entries
of ``ActorCritic.state_dict()`` under their names (see :func:`weight_layout`).
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from palaestra.networks.constants import CLIP, MASKED_LOGIT
from palaestra.rollout.segments import ActResult

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
# Sliced to [n, 0] for a policy without that kind of action: no allocation per step.
NO_CONTINUOUS = np.zeros((1 << 20, 0), dtype=np.float32)
NO_DISCRETE = np.zeros((1 << 20, 0), dtype=np.int64)

WeightLayout = list[tuple[str, tuple[int, ...]]]  # (state_dict name, shape) in publishing order


def weight_layout(arrays: Mapping[str, np.ndarray]) -> WeightLayout:
    return [(name, tuple(a.shape)) for name, a in arrays.items()]


def weight_views(flat: np.ndarray, layout: WeightLayout) -> dict[str, np.ndarray]:
    """Named views into one flat float32 buffer laid out as ``layout``."""
    out, offset = {}, 0
    for name, shape in layout:
        size = math.prod(shape)
        out[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return out


def weight_size(layout: WeightLayout) -> int:
    return sum(math.prod(shape) for _, shape in layout)


def swish(z: np.ndarray) -> np.ndarray:
    """z sigmoid(z), with sigmoid(z) = (1 + tanh(z / 2)) / 2: unlike 1 / (1 + exp(-z)) it cannot
    overflow for very negative z. ``z`` is a fresh array and is overwritten."""
    s = np.tanh(0.5 * z)
    s *= 0.5
    s += 0.5
    z *= s
    return z


def _tanh(z: np.ndarray) -> np.ndarray:
    """tanh, in place: ``z`` is a fresh array and is overwritten."""
    return np.tanh(z, out=z)


ACTIVATE = {"swish": swish, "tanh": _tanh}  # networks/constants.py: ACTIVATIONS


def _towers(x: np.ndarray, first: tuple[np.ndarray, np.ndarray],
            deeper: list[tuple[np.ndarray, np.ndarray]], activate=swish) -> tuple[np.ndarray, np.ndarray]:
    """Actor and critic features (see networks/policy.py: TwinMLP). The first layer of both
    towers reads the same input, so its stacked ``[2, H, in]`` weight is used as one ``[in, 2H]``
    matrix (``first``, a free view); deeper layers take one 2-D product per tower (numpy's
    stacked matmul misses BLAS's fast path for these operands)."""
    w, b = first
    z = x @ w
    z += b
    z = activate(z)
    hidden = w.shape[1] // 2
    h, g = z[:, :hidden], z[:, hidden:]
    for w, b in deeper:
        h = h @ w[0].T + b[0]
        g = g @ w[1].T + b[1]
        h = activate(h)
        g = activate(g)
    return h, g


class RandomPool:
    """Random numbers drawn from a seeded generator in large blocks: one generator call per
    few thousand environment steps instead of one per step (same stream for the same seed)."""

    BLOCK = 1 << 16

    def __init__(self, rng: np.random.Generator, draw) -> None:
        self.rng = rng
        self.draw = draw
        self.pool = np.zeros(0, np.float32)
        self.pos = 0

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        n = math.prod(shape)
        if self.pos + n > len(self.pool):
            self.pool = self.draw(self.rng, max(self.BLOCK, n))
            self.pos = 0
        out = self.pool[self.pos : self.pos + n].reshape(shape)
        self.pos += n
        return out


def sample_branches(logits: np.ndarray, allowed: np.ndarray | None, branches: list[int], gumbel: RandomPool,
                    deterministic: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masked categorical actions per branch by Gumbel-max (as the torch policy and the ONNX
    model sample): (choices [n, branches], log-probability [n], entropy [n]), summed over branches.
    ``logits`` is a fresh array (it is modified in place)."""
    n = logits.shape[0]
    if allowed is not None:
        logits = np.where(allowed, logits, MASKED_LOGIT)
    choices = []
    log_prob = entropy = None
    start = 0
    for size in branches:
        z = logits if len(branches) == 1 else logits[:, start : start + size]
        start += size
        z -= z.max(axis=1, keepdims=True)
        ez = np.exp(z)
        total = ez.sum(axis=1)
        log_total = np.log(total)
        choice = z.argmax(axis=1) if deterministic else (z + gumbel.take(z.shape)).argmax(axis=1)
        choices.append(choice)
        # log p(choice) = z[choice] - log sum exp z;  H = log sum exp z - E_p[z]
        lp = z[np.arange(n), choice] - log_total
        ent = log_total - (ez * z).sum(axis=1) / total
        log_prob = lp if log_prob is None else log_prob + lp
        entropy = ent if entropy is None else entropy + ent
    disc = choices[0][:, None] if len(choices) == 1 else np.stack(choices, axis=1)
    return disc, log_prob, entropy


class NumpyActing:
    """What the numpy mirrors share: seeded noise pools and the observation normalizer
    (``mean`` and ``var`` arrays, or None without normalization)."""

    def __init__(self, norm: tuple[np.ndarray, np.ndarray] | None, rng: np.random.Generator) -> None:
        self.rng = rng
        self.normal = RandomPool(rng, lambda g, n: g.standard_normal(n, dtype=np.float32))
        # Gumbel noise -log(-log(u)), u strictly inside (0, 1) so it stays finite.
        self.gumbel = RandomPool(rng, lambda g, n: (-np.log(-np.log(g.random(n) * (1 - 2e-7) + 1e-7))).astype(np.float32))
        self.norm = norm

    def _encode(self, obs: np.ndarray) -> np.ndarray:
        obs = obs.astype(np.float32, copy=False)
        if self.norm is None:
            return obs
        mean, var = self.norm
        return np.clip((obs - mean) / np.sqrt(var + 1e-8), -CLIP, CLIP)


class NumpyActorCritic(NumpyActing):
    """networks/policy.py's ActorCritic for acting: ``arrays`` as described in the module docstring,
    ``branches`` the discrete branch sizes. The arrays are used in place, never copied."""

    def __init__(self, arrays: Mapping[str, np.ndarray], branches: tuple[int, ...] | list[int],
                 rng: np.random.Generator, activation: str = "swish") -> None:
        norm = (arrays["normalizer.mean"], arrays["normalizer.var"]) if "normalizer.mean" in arrays else None
        super().__init__(norm, rng)
        layers = []
        while f"towers.weights.{len(layers)}" in arrays:
            k = len(layers)
            layers.append((arrays[f"towers.weights.{k}"], arrays[f"towers.biases.{k}"]))
        w, b = layers[0]
        self.first = (w.reshape(2 * w.shape[1], -1).T, b.reshape(-1))  # views: never stale
        self.deeper = layers[1:]
        self.mu = (arrays["mu.weight"], arrays["mu.bias"]) if "mu.weight" in arrays else None
        self.log_std = arrays.get("log_std")
        self.logits = (arrays["logits.weight"], arrays["logits.bias"]) if "logits.weight" in arrays else None
        self.values = (arrays["values.weight"], arrays["values.bias"])
        self.branches = list(branches)
        self.activate = ACTIVATE[activation]

    def value(self, obs: np.ndarray) -> np.ndarray:
        _, g = _towers(self._encode(obs), self.first, self.deeper, self.activate)
        return g @ self.values[0].T + self.values[1]

    def act(self, obs: np.ndarray, allowed: np.ndarray | None, deterministic: bool = False) -> ActResult:
        h, g = _towers(self._encode(obs), self.first, self.deeper, self.activate)
        n = obs.shape[0]
        values = g @ self.values[0].T + self.values[1]
        if self.mu is None:  # discrete actions only: the common case
            disc, log_prob, entropy = sample_branches(h @ self.logits[0].T + self.logits[1], allowed, self.branches,
                                                      self.gumbel, deterministic)
            return ActResult(NO_CONTINUOUS[:n], disc, log_prob, entropy, values)
        # A diagonal Gaussian around the mean, with a state-independent log-std.
        mean = h @ self.mu[0].T + self.mu[1]
        noise = np.zeros_like(mean) if deterministic else self.normal.take(mean.shape)
        # log N(a; mean, std) with a = mean + noise x std; the entropy does not depend on a
        log_norm = float(self.log_std.sum()) + HALF_LOG_2PI * mean.shape[1]
        log_prob = -0.5 * (noise * noise).sum(axis=1) - np.float32(log_norm)
        entropy = np.full(n, 0.5 * mean.shape[1] + log_norm, dtype=np.float32)
        cont = mean + noise * np.exp(self.log_std)
        if self.logits is None:
            return ActResult(cont, NO_DISCRETE[:n], log_prob, entropy, values)
        disc, lp, ent = sample_branches(h @ self.logits[0].T + self.logits[1], allowed, self.branches,
                                        self.gumbel, deterministic)
        return ActResult(cont, disc, log_prob + lp, entropy + ent, values)
