"""A plain MLP policy network in numpy (networks/numpy_layers.py), described without torch, also
with an LSTM per tower (recurrent policies over vector observations: acting, and PPO's training
over sequences).

``NetworkSpec`` says how the network's layers connect: an optional observation normalizer, a
trunk of dense layers (one MLP) or twin layers (an actor and a critic tower), and heads: a
Gaussian (state-independent log-std, PPO), a tanh-squashed Gaussian (mean and log-std from one
layer, SAC), masked categoricals, and value heads on the critic tower. networks/accelerator.py
reads it off a torch module's layers; an acting worker (workers/acting.py) receives it
with the published weights (:class:`WeightLayout`). The same :class:`MLPNetwork` then acts in
both, and in the main process also evaluates and backpropagates PPO's loss inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from palaestra.networks.constants import LOG_STD_MAX, LOG_STD_MIN
from palaestra.networks.encoders import concatenate_vectors
from palaestra.networks.numpy_layers import (
    HALF_LOG_2PI,
    NUMPY_KERNELS,
    Categorical,
    Dense,
    Gaussian,
    Kernels,
    LSTMSequences,
    LSTMStep,
    RandomPool,
    Stack,
    Twin,
    normalize,
    squashed_gaussian,
)
from palaestra.networks.numpy_layers import tower as tower_of
from palaestra.networks.two_threads import SecondThread, in_pairs
from palaestra.rollout.collector import ActResult

# Sliced to [n, 0] for a policy without that kind of action: no allocation per step.
NO_CONTINUOUS = np.zeros((1 << 20, 0), dtype=np.float32)
NO_DISCRETE = np.zeros((1 << 20, 0), dtype=np.int64)
MINUS_HALF = np.float32(-0.5)


@dataclass(frozen=True)
class NetworkSpec:
    """The module docstring's network; every integer is a position in its list of arrays."""

    normalizer: tuple[int, int] | None  # running mean, variance
    trunk: tuple[tuple[bool, int, int, str], ...]  # per layer: (twin, weight, bias, activation)
    gaussian: tuple[int, int, int] | None  # mean weight, bias; log-std
    squashed: tuple[int, int] | None  # weight, bias of [mean | log-std]
    logits: tuple[int, int] | None
    branches: tuple[int, ...]
    values: tuple[int, int] | None  # on the critic tower: trained, not used in acting
    # recurrent policies: per tower, its LSTM's (weight_ih, weight_hh, bias_ih, bias_hh), after
    # the trunk or (lstm_first) before it
    lstm: tuple[tuple[int, int, int, int], ...] = ()
    lstm_first: bool = False


@dataclass(frozen=True)
class WeightLayout:
    """What an acting worker needs to build the network: its spec (a plain MLP) or else a copy of
    the torch module itself (networks/acting.py), and the name (``state_dict``'s) and shape of
    each array, in the order they are published."""

    network: NetworkSpec | None
    arrays: tuple[tuple[str, tuple[int, ...]], ...]
    module: Any = None  # a torch module, when network is None


def weight_size(layout: WeightLayout) -> int:
    return sum(math.prod(shape) for _, shape in layout.arrays)


def weight_views(flat: np.ndarray, layout: WeightLayout) -> dict[str, np.ndarray]:
    """Named views into one flat float32 buffer laid out as ``layout``."""
    out, offset = {}, 0
    for name, shape in layout.arrays:
        size = math.prod(shape)
        out[name] = flat[offset : offset + size].reshape(shape)
        offset += size
    return out


def gumbel_noise(g: np.random.Generator, n: int) -> np.ndarray:
    """-log(-log(u)), u strictly inside (0, 1) so that it stays finite."""
    return (-np.log(-np.log(g.random(n) * (1 - 2e-7) + 1e-7))).astype(np.float32)


class MLPNetwork:
    """The network of ``spec`` over ``arrays`` (used in place, never copied); ``grads``: the
    arrays' gradients (None where there are none, e.g. statistics, or for acting only)."""

    def __init__(self, spec: NetworkSpec, arrays: list, rng: np.random.Generator | None = None,
                 grads: list | None = None, kernels: Kernels = NUMPY_KERNELS) -> None:
        grads = grads or [None] * len(arrays)
        self.spec = spec

        def dense(indices: tuple[int, int], activation: str = "", twin: bool = False) -> Dense:
            w, b = indices
            return (Twin if twin else Dense)(kernels, arrays[w], arrays[b], activation, grads[w], grads[b])

        self.norm = tuple(arrays[i] for i in spec.normalizer) if spec.normalizer else None
        self.trunk = Stack([dense((w, b), act, twin) for twin, w, b, act in spec.trunk])
        self.twin = spec.trunk[0][0]
        # acting: the actor's tower of a twin trunk alone, over views of its weights
        self.actor_tower = tower_of(self.trunk, 0) if self.twin else None
        self.mean = dense(spec.gaussian[:2]) if spec.gaussian else None
        self.gaussian = Gaussian(arrays[spec.gaussian[2]], grads[spec.gaussian[2]]) if spec.gaussian else None
        self.squashed = dense(spec.squashed) if spec.squashed else None
        self.logits = dense(spec.logits) if spec.logits else None
        self.categorical = Categorical(spec.branches)
        self.values = dense(spec.values) if spec.values else None
        self.lstm = [LSTMStep(*(arrays[i] for i in cell)) for cell in spec.lstm]
        # training a recurrent actor-critic (PPO): both towers' LSTMs over sequences, with BPTT
        self.sequences = (LSTMSequences([tuple(arrays[i] for i in cell) for cell in spec.lstm],
                                        [tuple(grads[i] for i in cell) for cell in spec.lstm])
                          if spec.lstm and self.twin else None)
        self.lstm_units = arrays[spec.lstm[0][1]].shape[1] if spec.lstm else 0
        self.lstm_first = spec.lstm_first
        self.continuous = (arrays[spec.gaussian[0]].shape[0] if spec.gaussian else
                           arrays[spec.squashed[0]].shape[0] // 2 if spec.squashed else 0)
        if rng is not None:
            self.normal = RandomPool(rng, lambda g, n: g.standard_normal(n, dtype=np.float32))
            self.gumbel = RandomPool(rng, gumbel_noise)
        # training: the actor's and the critic's towers one per thread (towers_on_two_threads)
        self.second: SecondThread | None = None
        self.towers: list[Stack] = []

    def tower_multiply_adds(self) -> int:
        """Multiply-adds per row of one tower's trunk (both towers' where the trunk is not twin)."""
        return sum(layer.w.size // (2 if isinstance(layer, Twin) else 1) for layer in self.trunk.layers)

    def towers_on_two_threads(self) -> None:
        """Train a feed-forward actor-critic's two towers one per thread (networks/two_threads.py),
        each over views of its half of the twin weights: the same products, one BLAS thread each."""
        if self.twin and self.sequences is None:
            self.towers = [tower_of(self.trunk, t) for t in (0, 1)]
            self.second = SecondThread()

    def encode(self, observations):
        """The vector observations side by side (networks/encoders.py), normalized."""
        x = concatenate_vectors(observations).astype(np.float32, copy=False)
        if self.norm is None:
            return x
        return normalize(x, *self.norm)

    def features(self, observations, cache: list | None = None):
        """(actor features, critic features or None) of raw observations (one array per observation)."""
        h = self.trunk.forward(self.encode(observations), cache)
        return (h[0], h[1]) if self.twin else (h, None)

    # -- acting ------------------------------------------------------------------------------
    def step_features(self, observations, memory: np.ndarray | None):
        """(actor features, critic features or None, memory after this step or None): one step
        of acting. A recurrent network's ``memory`` holds each tower's LSTM hidden and cell state
        side by side, in tower order (networks/recurrent.py); None: zeros (new episodes)."""
        if not self.lstm:
            return (*self.features(observations), None)
        x = self.encode(observations)
        units = self.lstm_units
        if memory is None:
            memory = np.zeros((x.shape[0], 2 * units * len(self.lstm)), np.float32)
        body = None if self.lstm_first else self.trunk.forward(x)
        outputs, states = [], []
        for tower, cell in enumerate(self.lstm):
            start = 2 * units * tower
            inputs = x if body is None else body[tower] if self.twin else body
            h, c = cell.step(inputs, memory[:, start:start + units], memory[:, start + units:start + 2 * units])
            outputs.append(h)
            states += [h, c]
        out = np.stack(outputs) if self.twin else outputs[0]
        if self.lstm_first:
            out = self.trunk.forward(out)
        memory = np.concatenate(states, 1)
        return (out[0], out[1], memory) if self.twin else (out, None, memory)

    def act(self, observations: list[np.ndarray], allowed: np.ndarray | None, deterministic: bool = False,
            memory: np.ndarray | None = None) -> ActResult:
        if self.lstm or not self.twin:
            h, _, memory = self.step_features(observations, memory)
        else:  # a feed-forward actor-critic acts with the actor's tower alone: no value estimates
            h = self.actor_tower.forward(self.encode(observations))
        n = observations[0].shape[0]
        if self.continuous == 0:  # discrete actions only: the common case
            disc, log_prob, entropy = self.categorical.sample(self.logits.forward(h), allowed, self.gumbel,
                                                              deterministic)
            return ActResult(NO_CONTINUOUS[:n], disc, log_prob, entropy, memory)
        c = self.continuous
        if self.squashed is not None:
            out = self.squashed.forward(h)
            mean, log_std = out[:, :c], np.minimum(np.maximum(out[:, c:], LOG_STD_MIN), LOG_STD_MAX)
            noise = np.zeros_like(mean) if deterministic else self.normal.take(mean.shape)
            cont, log_prob, _ = squashed_gaussian(mean, log_std, noise)
            log_prob = log_prob.astype(np.float32)
            # of the Gaussian before squashing, per dimension (distributions.py's measure)
            entropy = (0.5 + HALF_LOG_2PI + log_std).mean(axis=1).astype(np.float32)
        else:  # a diagonal Gaussian around the mean, with a state-independent log-std
            mean = self.mean.forward(h)
            log_std = self.gaussian.log_std
            noise = np.zeros_like(mean) if deterministic else self.normal.take(mean.shape)
            # log N(a; mean, std) with a = mean + noise x std; the entropy does not depend on a.
            # (Scalars as float32 and the log-std's sum in Python: numpy's scalar paths cost
            # more than these one-row operations. A diverged log-std gives NaN, as numpy's sum did.)
            log_norm = sum(log_std.tolist()) + HALF_LOG_2PI * c
            log_prob = np.square(noise).sum(axis=1) * MINUS_HALF - np.float32(log_norm)
            entropy = np.empty(n, np.float32)
            entropy.fill((0.5 * c + log_norm) / c)  # per dimension, as distributions.py
            cont = mean + noise * np.exp(log_std)
        if self.logits is None:
            return ActResult(cont, NO_DISCRETE[:n], log_prob, entropy, memory)
        disc, lp, ent = self.categorical.sample(self.logits.forward(h), allowed, self.gumbel, deterministic)
        return ActResult(cont, disc, log_prob + lp, entropy + ent, memory)

    # -- a policy-gradient loss's inputs and their backward pass (PPO) -----------------------
    def sequence_features(self, observations, memory, sequence_length: int, trunk_cache: list):
        """(actor features, critic features, kept for the LSTMs' backward pass) of a recurrent
        actor-critic over rows read as sequences of ``sequence_length``, each from its row of
        ``memory`` (as networks/policy.py's ``hidden``)."""
        x = self.encode(observations)
        if self.lstm_first:
            out, lstm_kept = self.sequences.forward(x, memory, sequence_length)
            features = self.trunk.forward(out, trunk_cache)
        else:
            features, lstm_kept = self.sequences.forward(self.trunk.forward(x, trunk_cache), memory, sequence_length)
        return features[0], features[1], lstm_kept

    def evaluate(self, observations, allowed, continuous, discrete, memory=None, sequence_length: int = 1):
        """(log pi(actions), entropy, values, kept for ``backward``) of an actor-critic with a
        Gaussian and/or categorical head; ``allowed`` None: nothing masked. A recurrent one reads
        the rows as sequences of ``sequence_length``, each from its row of ``memory``."""
        trunk_cache: list = []
        lstm_kept = None
        if self.sequences is not None:
            h, g, lstm_kept = self.sequence_features(observations, memory, sequence_length, trunk_cache)
        elif self.second is not None:
            x = self.encode(observations)
            caches: tuple[list, list] = ([], [])
            h, g = in_pairs(self.second, lambda t: self.towers[t].forward(x, caches[t]))
            trunk_cache = list(caches)
        else:
            h, g = self.features(observations, trunk_cache)
        log_prob = np.zeros(len(h), np.float32)
        entropy = 0.0
        heads: dict = {}
        if self.gaussian is not None:
            mean_cache: list = []
            lp, ent, kept = self.gaussian.evaluate(self.mean.forward(h, mean_cache), continuous)
            log_prob += lp
            entropy += ent
            heads["gaussian"] = (mean_cache[0], kept)
        if self.logits is not None:
            logits_cache: list = []
            lp, ent, kept = self.categorical.evaluate(self.logits.forward(h, logits_cache), allowed, discrete)
            log_prob += lp
            entropy = entropy + ent
            heads["categorical"] = (logits_cache[0], kept)
        values_cache: list = []
        values = self.values.forward(g, values_cache)
        return log_prob, entropy, values, (trunk_cache, heads, values_cache[0], lstm_kept)

    def backward(self, grad_log_prob, grad_entropy, grad_values, kept) -> None:
        """Write every parameter's gradient from d/d(log_prob) [B], d/d(entropy) (one number,
        the same for every row, or one per row) and d/d(values) [B, signals]."""
        trunk_cache, heads, values_entry, lstm_kept = kept
        # the heads' input: the trunk's output, or an LSTM's after it
        heads_in = values_entry[0]
        grad_trunk = np.empty((2, *heads_in.shape), np.float32)  # [2, B, features]
        grad_h = grad_trunk[0]
        first = True
        if "gaussian" in heads:
            entry, dist = heads["gaussian"]
            grad_mean = self.gaussian.backward(grad_log_prob, grad_entropy, dist)
            grad_h[...] = self.mean.backward(grad_mean, entry)
            first = False
        if "categorical" in heads:
            entry, dist = heads["categorical"]
            grad = self.logits.backward(self.categorical.backward(grad_log_prob, grad_entropy, dist), entry)
            if first:
                grad_h[...] = grad
            else:
                grad_h += grad
        grad_trunk[1] = self.values.backward(grad_values, values_entry)
        if self.second is not None and lstm_kept is None:
            in_pairs(self.second, lambda t: self.towers[t].backward(grad_trunk[t], trunk_cache[t]))
        elif lstm_kept is None:
            self.trunk.backward(grad_trunk, trunk_cache)
        elif self.lstm_first:
            self.sequences.backward(self.trunk.backward(grad_trunk, trunk_cache, input_grad=True), lstm_kept,
                                    input_grad=False)
        else:
            self.trunk.backward(self.sequences.backward(grad_trunk, lstm_kept), trunk_cache)
