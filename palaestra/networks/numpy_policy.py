"""Acting without torch's per-operation overhead.

Per environment step the policy runs on a small batch (a handful of agents), where torch spends
more time dispatching operations than computing. On the CPU, this mirror computes the same
forward pass with numpy over arrays that *share memory* with the torch parameters and
normalizer buffers, so it is never stale: optimizer steps, normalizer updates and checkpoint
loads all write in place. Training (backward passes over large mini-batches) stays in torch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from palaestra.networks.distributions import MASKED_LOGIT
from palaestra.networks.normalizer import CLIP
from palaestra.networks.policy import ActorCritic
from palaestra.networks.sac_networks import LOG_STD_MAX, LOG_STD_MIN, SquashedActor
from palaestra.rollout.collector import ActResult

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)
# Sliced to [n, 0] for a policy without that kind of action: no allocation per step.
_NO_CONTINUOUS = np.zeros((1 << 20, 0), dtype=np.float32)
_NO_DISCRETE = np.zeros((1 << 20, 0), dtype=np.int64)


def _shared(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()  # a view of the same memory


def _swish(z: np.ndarray) -> np.ndarray:
    """z sigmoid(z), with sigmoid(z) = (1 + tanh(z / 2)) / 2: unlike 1 / (1 + exp(-z)) it cannot
    overflow for very negative z. ``z`` is a fresh array and is overwritten."""
    s = np.tanh(0.5 * z)
    s *= 0.5
    s += 0.5
    z *= s
    return z


def _towers(x: np.ndarray, first: tuple[np.ndarray, np.ndarray],
            deeper: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Actor and critic features (see networks/policy.py: TwinMLP). The first layer of both
    towers reads the same input, so its stacked ``[2, H, in]`` weight is used as one ``[in, 2H]``
    matrix (``first``, a free view); deeper layers take one 2-D product per tower (numpy's
    stacked matmul misses BLAS's fast path for these operands)."""
    w, b = first
    z = x @ w
    z += b
    z = _swish(z)
    hidden = w.shape[1] // 2
    h, g = z[:, :hidden], z[:, hidden:]
    for w, b in deeper:
        h = h @ w[0].T + b[0]
        g = g @ w[1].T + b[1]
        h = _swish(h)
        g = _swish(g)
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


class _NumpyActing:
    """What both numpy mirrors share: seeded noise pools and the observation normalizer."""

    def __init__(self, normalizer, rng: np.random.Generator) -> None:
        self.rng = rng
        self.normal = RandomPool(rng, lambda g, n: g.standard_normal(n, dtype=np.float32))
        # Gumbel noise -log(-log(u)), u strictly inside (0, 1) so it stays finite.
        self.gumbel = RandomPool(rng, lambda g, n: (-np.log(-np.log(g.random(n) * (1 - 2e-7) + 1e-7))).astype(np.float32))
        self.norm = (_shared(normalizer.mean), _shared(normalizer.var)) if normalizer is not None else None

    def _encode(self, obs: np.ndarray) -> np.ndarray:
        obs = obs.astype(np.float32, copy=False)
        if self.norm is None:
            return obs
        mean, var = self.norm
        return np.clip((obs - mean) / np.sqrt(var + 1e-8), -CLIP, CLIP)


class NumpyPolicy(_NumpyActing):
    @staticmethod
    def supports(policy: ActorCritic) -> bool:
        return next(policy.parameters()).device.type == "cpu"

    def __init__(self, policy: ActorCritic, rng: np.random.Generator) -> None:
        super().__init__(policy.normalizer, rng)
        layers = [(_shared(w), _shared(b)) for w, b in zip(policy.towers.weights, policy.towers.biases)]
        w, b = layers[0]
        self.first = (w.reshape(2 * w.shape[1], -1).T, b.reshape(-1))  # views: never stale
        self.deeper = layers[1:]
        self.mu = (_shared(policy.mu.weight), _shared(policy.mu.bias)) if policy.mu is not None else None
        self.log_std = _shared(policy.log_std) if policy.log_std is not None else None
        self.logits = (_shared(policy.logits.weight), _shared(policy.logits.bias)) if policy.logits is not None else None
        self.values = (_shared(policy.values.weight), _shared(policy.values.bias))
        self.branches = list(policy.branches)

    def value(self, obs: np.ndarray) -> np.ndarray:
        _, g = _towers(self._encode(obs), self.first, self.deeper)
        return g @ self.values[0].T + self.values[1]

    def act(self, obs: np.ndarray, allowed: np.ndarray | None, deterministic: bool = False) -> ActResult:
        h, g = _towers(self._encode(obs), self.first, self.deeper)
        n = obs.shape[0]
        values = g @ self.values[0].T + self.values[1]
        if self.mu is None:  # discrete actions only: the common case
            disc, log_prob, entropy = sample_branches(h @ self.logits[0].T + self.logits[1], allowed, self.branches,
                                                      self.gumbel, deterministic)
            return ActResult(_NO_CONTINUOUS[:n], disc, log_prob, entropy, values)
        # A diagonal Gaussian around the mean, with a state-independent log-std.
        mean = h @ self.mu[0].T + self.mu[1]
        noise = np.zeros_like(mean) if deterministic else self.normal.take(mean.shape)
        # log N(a; mean, std) with a = mean + noise x std; the entropy does not depend on a
        log_norm = float(self.log_std.sum()) + _HALF_LOG_2PI * mean.shape[1]
        log_prob = -0.5 * (noise * noise).sum(axis=1) - np.float32(log_norm)
        entropy = np.full(n, 0.5 * mean.shape[1] + log_norm, dtype=np.float32)
        cont = mean + noise * np.exp(self.log_std)
        if self.logits is None:
            return ActResult(cont, _NO_DISCRETE[:n], log_prob, entropy, values)
        disc, lp, ent = sample_branches(h @ self.logits[0].T + self.logits[1], allowed, self.branches,
                                        self.gumbel, deterministic)
        return ActResult(cont, disc, log_prob + lp, entropy + ent, values)


class NumpySquashedActor(_NumpyActing):
    """The SAC actor (networks/sac_networks.py: SquashedActor) for acting, in numpy."""

    def __init__(self, actor: SquashedActor, rng: np.random.Generator, signals: int) -> None:
        super().__init__(actor.normalizer, rng)
        self.layers = [(_shared(m.weight).T, _shared(m.bias)) for m in actor.body if isinstance(m, torch.nn.Linear)]
        self.gaussian = (_shared(actor.gaussian.weight).T, _shared(actor.gaussian.bias)) if actor.gaussian else None
        self.logits = (_shared(actor.logits.weight).T, _shared(actor.logits.bias)) if actor.logits else None
        self.branches = list(actor.branches)
        self.c = actor.continuous_size
        self.signals = signals

    def act(self, obs: np.ndarray, allowed: np.ndarray | None, deterministic: bool = False) -> ActResult:
        h = self._encode(obs)
        for w, b in self.layers:
            h = h @ w + b
            h = _swish(h)
        n = obs.shape[0]
        values = np.zeros((n, self.signals), np.float32)  # SAC's segments need no value estimates
        if self.gaussian is None:
            disc, log_prob, entropy = sample_branches(h @ self.logits[0] + self.logits[1], allowed, self.branches,
                                                      self.gumbel, deterministic)
            return ActResult(_NO_CONTINUOUS[:n], disc, log_prob, entropy, values)
        out = h @ self.gaussian[0] + self.gaussian[1]
        mean = out[:, : self.c]
        log_std = np.minimum(np.maximum(out[:, self.c :], LOG_STD_MIN), LOG_STD_MAX)
        noise = np.zeros_like(mean) if deterministic else self.normal.take(mean.shape)
        u = mean + noise * np.exp(log_std)
        action = np.tanh(u)
        # log pi(a) of the squashed Gaussian (see networks/sac_networks.py: squashed_sample)
        log_det = 2.0 * (_LOG_2 - u - np.logaddexp(0.0, -2.0 * u))
        log_prob = (-0.5 * noise * noise - log_std - log_det).sum(axis=1) - _HALF_LOG_2PI * self.c
        entropy = (0.5 + _HALF_LOG_2PI + log_std).sum(axis=1)  # of the Gaussian before squashing
        return ActResult(action, _NO_DISCRETE[:n], log_prob.astype(np.float32), entropy.astype(np.float32), values)
